"""``l7ctl tlsd``: the TLS daemon of the HTTPS services (docs/tls.md).

For every TLS service of a rules file (``service NAME listen ADDRESS tls``)
it listens on the service's address, does each client's handshake with
Python's ssl over Debian's OpenSSL (the certificate chosen by SNI), puts
both directions of the connection in kernel TLS and hands the socket to the
module (KTCPVS_CMD_TLS_ADOPT), which switches its requests like a plain
connection's.  The daemon never sees a request.

One process, one thread, non-blocking: a handshake is a small state
machine driven by a selector.  Bounded: handshakes in progress (in all and
per client address), and the time each may take.  Keys: the certificates'
private keys live in OpenSSL's contexts; the TLS 1.3 client traffic secret,
which Debian 12's OpenSSL 3.0 does not install in the kernel itself, comes
from OpenSSL's key log callback, inside the handshake call that makes it,
and is kept only with its handshake (l7ctl/ktls.py derives the kernel's
keys; no file ever holds a secret).

SIGHUP reloads the rules file (a file that does not compile changes
nothing); SIGTERM and SIGINT stop the daemon (connections already handed
over are the module's and stay).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import selectors
import signal
import socket
import ssl
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from l7ctl import compiler, ir, ktls, libssl, tickets, tlscert
from l7ctl.errors import L7ctlError
from l7ctl.protocol import Handover

# The ciphers of TLS 1.2 that the kernel can run (AES-GCM, ChaCha20-Poly1305),
# with forward secrecy only.  TLS 1.3's default suites are all three of
# ktls.TLS13_CIPHERS.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"

# A ClientHello's first bytes: record header (5), handshake header (4),
# legacy_version (2), random (32).  RFC 8446 section 4.1.2.
HELLO_PEEK = 43

RETRY_LISTEN_S = 5.0  # a listener that could not be opened is tried again
REPORT_S = 60.0  # the counters are logged this often, when they changed
IP_FREEBIND = 15  # linux/in.h
IPV6_FREEBIND = 78  # linux/in6.h


@dataclass(frozen=True)
class Limits:
    """The daemon's bounds (``l7ctl tlsd --help``)."""

    handshake_timeout: float = 10.0
    max_handshakes: int = 1024
    max_per_source: int = 32


@dataclass
class _Service:
    """A TLS service as served: its contexts, first the default, and listener."""

    name: str
    endpoint: str  # ADDR:PORT, the module's service key
    family: int
    sockaddr: tuple[Any, ...]
    backlog: int
    contexts: Contexts
    sock: socket.socket | None = None
    retry_at: float = 0.0


@dataclass
class _Handshake:
    """One client connection between accept and handover."""

    svc: _Service
    sock: socket.socket
    peer: str
    deadline: float
    fd: int = -1  # its key in pending, whatever object holds it meanwhile
    tls: ssl.SSLSocket | None = None
    random: bytes = b""  # the ClientHello's, which names its key log lines
    secret: bytes = b""  # TLS 1.3: CLIENT_TRAFFIC_SECRET_0, from the key log
    sni: str | None = None
    names: tuple[str, ...] = ()  # the certificate's, for the module's 421
    resumed: bool = False  # a session resumed from a ticket
    started: float = 0.0  # time.monotonic() at accept


@dataclass
class Counters:
    adopted: int = 0
    resumed: int = 0  # of them, sessions resumed from a ticket
    failed: int = 0  # handshake failures: not TLS, alerts, resets
    timed_out: int = 0
    over_limit: int = 0  # closed at accept: too many handshakes in progress
    refused: int = 0  # the module refused the handover

    def line(self) -> str:
        return (
            f"{self.adopted} handed over ({self.resumed} resumed), "
            f"{self.failed} handshakes failed, "
            f"{self.timed_out} timed out, {self.over_limit} closed over the limits, "
            f"{self.refused} refused by the module"
        )


def endpoint_text(svc: ir.Service) -> str:
    return f"[{svc.addr}]:{svc.port}" if svc.addr.version == 6 else f"{svc.addr}:{svc.port}"


Contexts = list[tuple[tuple[str, ...], ssl.SSLContext]]


def _match_context(contexts: Contexts, name: str) -> tuple[tuple[str, ...], ssl.SSLContext] | None:
    """The certificate whose names cover ``name`` (tlscert.pick: an exact
    name first, then a wildcard): its names and context; None if none does."""
    i = tlscert.pick([names for names, _ in contexts], name)
    names, ctx = contexts[i]
    if i == 0 and not any(tlscert.name_matches(n, name) for n in names):
        return None
    return names, ctx


class Daemon:
    def __init__(
        self,
        rules: Path,
        limits: Limits,
        events: IO[str] | None = None,
        log: Callable[[str], None] | None = None,
        reuseport: bool = False,
        ticket_keys: tickets.TicketKeys | None = None,
    ) -> None:
        self.rules = rules
        self.tickets = ticket_keys  # None: no session resumption
        self.reuseport = reuseport  # one of several workers on each address
        self.limits = limits
        # OpenSSL's key log lines come to _keylog during do_handshake(),
        # for the handshake being stepped (single-threaded: only that one).
        self.keylog = libssl.KeylogCallback(self._keylog)
        self.stepping: _Handshake | None = None
        self.events = events
        self.log = log or (lambda s: print(s, file=sys.stderr, flush=True))
        self.sel = selectors.DefaultSelector()
        self.services: dict[str, _Service] = {}
        # by the socket's descriptor, in the order of accept (so of deadline)
        self.pending: dict[int, _Handshake] = {}
        self.per_source: dict[str, int] = {}
        self.counters = Counters()
        self.client: Handover | None = None  # on first use
        self.reload_asked = False
        self.stop_asked = False
        self.reported = Counters()
        self.report_at = time.monotonic() + REPORT_S
        # Signals wake the selector through this pair (signal.set_wakeup_fd).
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self.sel.register(self.wake_r, selectors.EVENT_READ, None)

    # ---- configuration ------------------------------------------------------------
    def _context(self, cert: ir.Certificate) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert.cert, cert.key)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.maximum_version = ssl.TLSVersion.TLSv1_3
        ctx.set_ciphers(TLS12_CIPHERS)
        ctx.options |= (
            ssl.OP_NO_RENEGOTIATION
            | ssl.OP_NO_COMPRESSION
            | ssl.OP_CIPHER_SERVER_PREFERENCE
            | ktls.SSL_OP_ENABLE_KTLS
        )
        if self.tickets is None:
            ctx.options |= ssl.OP_NO_TICKET
            ctx.num_tickets = 0  # nor TLS 1.3's stateful tickets
        else:
            # Stateless tickets of the shared key; OpenSSL sends TLS 1.3's
            # (two, its default) at the end of the handshake, before kernel
            # TLS is handed over, and numbers the records after them itself.
            tickets.install(ctx, self.tickets)
        ctx.set_alpn_protocols(["http/1.1"])
        self.keylog.set_on(ctx)
        return ctx

    def load(self) -> dict[str, _Service]:
        """The TLS services of the rules file.  Raises L7ctlError."""
        if self.tickets is not None and self.tickets.advance(time.monotonic()):
            self._rotate()  # the running contexts too, should this load fail
        res = compiler.compile_file(self.rules, encode=False)
        if not res.ok or res.ir is None:
            raise L7ctlError(f"{self.rules} does not compile:\n{res.format()}")
        out: dict[str, _Service] = {}
        for svc in res.ir.services:
            if not svc.tls:
                continue
            contexts = []
            for cert in svc.certificates:
                try:
                    contexts.append((cert.names, self._context(cert)))
                except (OSError, ssl.SSLError) as e:
                    raise L7ctlError(f"service {svc.name}: {cert.cert}: {e}") from None
            contexts[0][1].sni_callback = self._sni(contexts)
            ep = endpoint_text(svc)
            family = socket.AF_INET6 if svc.addr.version == 6 else socket.AF_INET
            sockaddr: tuple[Any, ...] = (str(svc.addr), svc.port)
            backlog = svc.limits.get("backlog") or 511
            out[ep] = _Service(svc.name, ep, family, sockaddr, backlog, contexts)
        return out

    def _sni(
        self, contexts: Contexts
    ) -> Callable[[ssl.SSLObject, str | None, ssl.SSLContext], int | None]:
        def pick(obj: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> int | None:
            chosen = _match_context(contexts, name) if name else None
            if chosen is not None and chosen[1] is not obj.context:
                obj.context = chosen[1]
            hs = self.pending.get(obj.fileno() if hasattr(obj, "fileno") else -1)
            if hs is not None:
                hs.sni = name
                if chosen is not None:
                    hs.names = chosen[0]
            return None

        return pick

    def apply(self, new: dict[str, _Service]) -> None:
        """Serve ``new``: listeners kept for addresses that stay."""
        for ep, gone in list(self.services.items()):
            if ep not in new:
                self._close_listener(gone)
                self.log(f"tlsd: service {gone.name} on {ep} removed")
        for ep, svc in new.items():
            old = self.services.get(ep)
            if old is not None and old.sock is not None:
                svc.sock = old.sock
                self.sel.modify(svc.sock, selectors.EVENT_READ, svc)
                if svc.backlog != old.backlog:
                    svc.sock.listen(svc.backlog)
            else:
                self._open_listener(svc)
        self.services = new

    def _open_listener(self, svc: _Service) -> None:
        s = socket.socket(svc.family, socket.SOCK_STREAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.reuseport:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            # A virtual address may arrive later (keepalived), as for the
            # module's own listeners.
            if svc.family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
            else:
                s.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
            s.bind(svc.sockaddr)
            s.listen(svc.backlog)
            s.setblocking(False)
        except OSError as e:
            s.close()
            svc.retry_at = time.monotonic() + RETRY_LISTEN_S
            self.log(f"tlsd: service {svc.name}: cannot listen on {svc.endpoint}: {e.strerror}")
            return
        svc.sock = s
        self.sel.register(s, selectors.EVENT_READ, svc)
        self.log(f"tlsd: service {svc.name} listening on {svc.endpoint}")

    def _close_listener(self, svc: _Service) -> None:
        if svc.sock is not None:
            self.sel.unregister(svc.sock)
            svc.sock.close()
            svc.sock = None

    # ---- connections ----------------------------------------------------------------
    def _accept(self, svc: _Service) -> None:
        assert svc.sock is not None
        for _ in range(64):
            try:
                conn, addr = svc.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.log(f"tlsd: accept on {svc.endpoint}: {e.strerror}")
                    return
                continue  # the client went before its accept
            peer = str(addr[0])
            n = self.per_source.get(peer, 0)
            if len(self.pending) >= self.limits.max_handshakes or n >= self.limits.max_per_source:
                self.counters.over_limit += 1
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()  # a reset: nothing was read, nothing is owed
                self._event("over-limit", svc.name, peer)
                continue
            conn.setblocking(False)
            # Readable once the ClientHello's random is in (or at the end).
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, HELLO_PEEK)
            self.per_source[peer] = n + 1
            now = time.monotonic()
            hs = _Handshake(svc, conn, peer, now + self.limits.handshake_timeout, started=now)
            hs.fd = conn.fileno()
            hs.names = svc.contexts[0][0]  # unless SNI picks another
            self.pending[hs.fd] = hs
            # by descriptor: the socket object changes (wrap_socket), the descriptor does not
            self.sel.register(hs.fd, selectors.EVENT_READ, hs)

    def _step(self, hs: _Handshake) -> None:
        try:
            if hs.tls is None:
                self._hello(hs)
                if hs.tls is None:
                    return
            assert hs.tls is not None
            self.stepping = hs
            try:
                hs.tls.do_handshake()
            except ssl.SSLWantReadError:
                self.sel.modify(hs.fd, selectors.EVENT_READ, hs)
                return
            except ssl.SSLWantWriteError:
                self.sel.modify(hs.fd, selectors.EVENT_WRITE, hs)
                return
            finally:
                self.stepping = None
            self._handover(hs)
        except _Failed as e:
            self._end(hs, "failed", str(e))
        except (ssl.SSLError, OSError) as e:
            self._end(hs, "failed", f"handshake: {e}")

    def _hello(self, hs: _Handshake) -> None:
        """Peek at the ClientHello: a TLS handshake record, and the client's
        random, which names this connection's lines in the key log."""
        head = hs.sock.recv(HELLO_PEEK, socket.MSG_PEEK)
        if len(head) < HELLO_PEEK:
            raise _Failed("not a TLS ClientHello (the client sent too little)")
        if head[0] != ktls.RECORD_HANDSHAKE or head[5] != 1:
            raise _Failed("not a TLS ClientHello")
        hs.random = head[11:43]
        hs.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
        # a new socket object over the same descriptor (the selector's key)
        ctx = hs.svc.contexts[0][1]
        hs.tls = ctx.wrap_socket(hs.sock, server_side=True, do_handshake_on_connect=False)
        hs.sock = hs.tls

    def _keylog(self, line: bytes) -> None:
        """A key log line of the handshake being stepped (NSS key log
        format: label, client random, secret, in hex).  Kept: TLS 1.3's
        client traffic secret, the one key the kernel needs from here, if
        the line names that handshake's ClientHello.  Must not raise."""
        hs = self.stepping
        parts = line.split()
        if hs is None or len(parts) != 3 or parts[0] != b"CLIENT_TRAFFIC_SECRET_0":
            return
        with contextlib.suppress(ValueError):
            if bytes.fromhex(parts[1].decode("ascii")) == hs.random:
                hs.secret = bytes.fromhex(parts[2].decode("ascii"))

    def _handover(self, hs: _Handshake) -> None:
        tls = hs.tls
        assert tls is not None
        cipher = tls.cipher()
        version = tls.version()
        if cipher is None or version is None:
            raise _Failed("no cipher after the handshake")
        if version == "TLSv1.3":
            secret, hs.secret = hs.secret, b""
            if not secret:
                raise _Failed("no client traffic secret in the key log")
            suite = ktls.TLS13_CIPHERS.get(cipher[0])
            if suite is None:
                raise _Failed(f"cipher {cipher[0]} cannot run in kernel TLS")
            ktls.install(tls, ktls.TLS_RX, ktls.tls13_crypto_info(suite, secret))
        try:
            if self.client is None:
                self.client = Handover()
            self.client.tls_adopt(tls.fileno(), hs.svc.endpoint, hs.names)
        except L7ctlError as e:
            self.counters.refused += 1
            if self.client is not None:
                # A new socket next time: the module may have been reloaded
                # (its family's id with it); rare enough to be cheap.
                self.client.close()
                self.client = None
            self._end(hs, "refused", str(e), version, cipher[0])
            return
        self.counters.adopted += 1
        hs.resumed = bool(tls.session_reused)
        self.counters.resumed += hs.resumed
        self._end(hs, "adopted", "", version, cipher[0])

    def _end(
        self, hs: _Handshake, outcome: str, error: str, version: str = "", cipher: str = ""
    ) -> None:
        if self.pending.pop(hs.fd, None) is None:
            return  # ended already
        with contextlib.suppress(KeyError, ValueError):
            self.sel.unregister(hs.fd)
        hs.sock.close()
        if hs.tls is not None:
            hs.tls.close()
        hs.secret = b""
        n = self.per_source.get(hs.peer, 1) - 1
        if n:
            self.per_source[hs.peer] = n
        else:
            self.per_source.pop(hs.peer, None)
        if outcome == "failed":
            self.counters.failed += 1
        elif outcome == "timeout":
            self.counters.timed_out += 1
        ms = (time.monotonic() - hs.started) * 1000
        self._event(outcome, hs.svc.name, hs.peer, hs.sni, version, cipher, error, hs.resumed, ms)

    def _event(
        self,
        outcome: str,
        service: str,
        client: str,
        sni: str | None = None,
        version: str = "",
        cipher: str = "",
        error: str = "",
        resumed: bool = False,
        ms: float = 0.0,
    ) -> None:
        """One line of ``--events``: a connection handed over or ended, MS
        milliseconds after its accept."""
        if self.events is None:
            return
        ev = {
            "outcome": outcome,
            "service": service,
            "client": client,
            "sni": sni,
            "version": version,
            "cipher": cipher,
            "resumed": resumed,
            "error": error,
            "ms": round(ms, 1),
        }
        self.events.write(json.dumps(ev) + "\n")
        self.events.flush()

    def _expire(self, now: float) -> float:
        """End the handshakes past their time, retry listeners, report; the
        next deadline."""
        nxt = now + REPORT_S
        if self.tickets is not None:
            if self.tickets.advance(now):
                self._rotate()
            nxt = min(nxt, self.tickets.rotate_at)
        if now >= self.report_at:
            self.report_at = now + REPORT_S
            if self.counters != self.reported:
                self.log(f"tlsd: {self.counters.line()}")
                self.reported = replace(self.counters)
        # Deadlines are accept time plus one timeout, and pending keeps the
        # order of accepts: the first handshake not yet due ends the look.
        due = []
        for hs in self.pending.values():
            if hs.deadline > now:
                nxt = min(nxt, hs.deadline)
                break
            due.append(hs)
        for hs in due:
            self._end(hs, "timeout", "the handshake took too long")
        for svc in self.services.values():
            if svc.sock is None:
                if svc.retry_at <= now:
                    self._open_listener(svc)
                if svc.sock is None:
                    nxt = min(nxt, svc.retry_at)
        return nxt

    def _rotate(self) -> None:
        """The new period's ticket key on every context."""
        assert self.tickets is not None
        for svc in self.services.values():
            for _names, ctx in svc.contexts:
                tickets.install(ctx, self.tickets)

    # ---- the loop ----------------------------------------------------------------------
    def run(self) -> None:
        self.apply(self.load())
        while not self.stop_asked:
            if self.reload_asked:
                self.reload_asked = False
                try:
                    self.apply(self.load())
                    self.log(f"tlsd: reloaded {self.rules}")
                except L7ctlError as e:
                    self.log(f"tlsd: reload refused, the running services stay: {e}")
            now = time.monotonic()
            nxt = self._expire(now)
            for key, _ in self.sel.select(timeout=max(0.0, nxt - now)):
                if key.data is None:
                    with contextlib.suppress(BlockingIOError):
                        while self.wake_r.recv(64):
                            pass
                elif isinstance(key.data, _Service):
                    self._accept(key.data)
                elif key.fd in self.pending:
                    self._step(key.data)
        for hs in list(self.pending.values()):
            self._end(hs, "failed", "the daemon stopped")
        for svc in self.services.values():
            self._close_listener(svc)
        if self.client is not None:
            self.client.close()
        self.log(f"tlsd: stopped: {self.counters.line()}")


class _Failed(Exception):
    """A handshake that cannot go on (its reason)."""


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _worker(
    rules: Path,
    limits: Limits,
    events: IO[str] | None,
    reuseport: bool,
    children: list[int],
    ticket_keys: tickets.TicketKeys | None,
) -> bool:
    """One worker's daemon until SIGTERM or SIGINT; the first (the main
    process) passes both signals and SIGHUP on to the others (CHILDREN),
    and stops when one of them ends.  False if a worker ended first."""
    daemon = Daemon(rules, limits, events, reuseport=reuseport, ticket_keys=ticket_keys)
    lost: list[int] = []

    def on_hup(sig: int, _frame: object) -> None:
        daemon.reload_asked = True
        for pid in children:
            os.kill(pid, sig)

    def on_stop(sig: int, _frame: object) -> None:
        daemon.stop_asked = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    def on_child(_sig: int, _frame: object) -> None:
        with contextlib.suppress(ChildProcessError):
            while (pid := os.waitpid(-1, os.WNOHANG)[0]) > 0:
                if pid in children:
                    children.remove(pid)
                    if not daemon.stop_asked:
                        lost.append(pid)
        if lost and not daemon.stop_asked:
            daemon.log(f"tlsd: worker {lost[0]} ended: stopping (the service restarts it all)")
            on_stop(signal.SIGTERM, None)

    signal.set_wakeup_fd(daemon.wake_w.fileno(), warn_on_full_buffer=False)
    signal.signal(signal.SIGHUP, on_hup)
    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    if children:
        signal.signal(signal.SIGCHLD, on_child)
    daemon.run()
    return not lost


def serve(
    rules: Path,
    limits: Limits,
    events: IO[str] | None = None,
    workers: int = 1,
    ticket_lifetime: int = tickets.LIFETIME_DEFAULT,
) -> bool:
    """Run the daemon until SIGTERM or SIGINT: WORKERS processes, each with
    its own listener on every address (SO_REUSEPORT: the kernel spreads the
    connections) and its own bounds (Limits are per worker).
    Session tickets (TICKET_LIFETIME seconds, 0: none) open on every
    worker: the seed of their keys is made here, before the fork.
    False if a worker ended on its own."""
    os.umask(0o077)
    keys = None
    if ticket_lifetime:
        keys = tickets.TicketKeys(os.urandom(tickets.SEED_LEN), ticket_lifetime, time.monotonic())
    children: list[int] = []
    for _ in range(1, workers):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                # end with the main process, whatever ends it
                ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
                _worker(rules, limits, events, True, [], keys)
                code = 0
            finally:
                os._exit(code)
        children.append(pid)
    try:
        return _worker(rules, limits, events, workers > 1, children, keys)
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
