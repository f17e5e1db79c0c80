"""``l7ctl tlsd``: the TLS daemon of the HTTPS services (docs/tls.md).

For every TLS service of a rules file (``service NAME listen ADDRESS tls``)
it listens on the service's address, does each client's handshake with
Python's ssl over Debian's OpenSSL (the certificate chosen by SNI), puts
both directions of the connection in kernel TLS and hands the socket to the
module (KTCPVS_CMD_TLS_ADOPT), which switches its requests like a plain
connection's.  The daemon never sees a request.

One process, one thread, non-blocking.  This file sets up what is
configured (the OpenSSL contexts, the listeners, the ticket keys, reloads,
signals, the event lines); each connection, from its accept to its
handover, is stepped in C (l7ctl/ext/tlsloop_ext.c, ``l7ctl._tlsloop``):
no Python runs per connection.  Bounded: handshakes in progress (in all and
per client address), and the time each may take.  Keys: the certificates'
private keys live in OpenSSL's contexts; the TLS 1.3 client traffic secret,
which Debian 12's OpenSSL 3.0 does not install in the kernel itself, comes
from OpenSSL's key log callback, inside the handshake call that makes it,
and is kept only with its handshake until the kernel has the keys derived
from it (as l7ctl/ktls.py derives them; no file ever holds a secret).

SIGHUP reloads the rules file (a file that does not compile changes
nothing); SIGTERM and SIGINT stop the daemon (connections already handed
over are the module's and stay).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from l7ctl import _tlsloop, compiler, ir, ktls, libssl, rawgenl, tickets
from l7ctl.errors import L7ctlError
from l7ctl.protocol import ATTRS, adopt_attributes

# The ciphers of TLS 1.2 that the kernel can run (AES-GCM, ChaCha20-Poly1305),
# with forward secrecy only.  TLS 1.3's default suites are all three of
# ktls.TLS13_CIPHERS.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"

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
    native: _tlsloop.Service  # what the handshakes use (the contexts, the handover)
    sock: socket.socket | None = None
    retry_at: float = 0.0


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


def native_service(name: str, endpoint: str, contexts: Contexts) -> _tlsloop.Service:
    """The service as the C loop serves it: each certificate's context (its
    SNI choice as tlscert.pick makes it) and the handover's attributes, the
    certificate's names with them (the module's 421)."""
    return _tlsloop.Service(
        name,
        [
            (
                ctx,
                libssl.ssl_ctx(ctx),
                names,
                rawgenl.encode_attrs(adopt_attributes(endpoint, names), ATTRS),
            )
            for names, ctx in contexts
        ],
    )


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
        self.events = events
        self.log = log or (lambda s: print(s, file=sys.stderr, flush=True))
        self.services: dict[str, _Service] = {}
        self.reload_asked = False
        self.stop_asked = False
        self.reported = Counters()
        self.report_at = time.monotonic() + REPORT_S
        # Signals wake the loop through this pair (signal.set_wakeup_fd).
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self.loop = _tlsloop.Loop(
            self.wake_r.fileno(),
            limits.handshake_timeout,
            limits.max_handshakes,
            limits.max_per_source,
            events is not None,
            self.log,
        )

    @property
    def counters(self) -> Counters:
        return Counters(*self.loop.counters())

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
            ep = endpoint_text(svc)
            family = socket.AF_INET6 if svc.addr.version == 6 else socket.AF_INET
            sockaddr: tuple[Any, ...] = (str(svc.addr), svc.port)
            backlog = svc.limits.get("backlog") or 511
            native = native_service(svc.name, ep, contexts)
            out[ep] = _Service(svc.name, ep, family, sockaddr, backlog, contexts, native)
        return out

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
                self.loop.listen(svc.sock.fileno(), svc.native)
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
        self.loop.listen(s.fileno(), svc.native)
        self.log(f"tlsd: service {svc.name} listening on {svc.endpoint}")

    def _close_listener(self, svc: _Service) -> None:
        if svc.sock is not None:
            self.loop.unlisten(svc.sock.fileno())
            svc.sock.close()
            svc.sock = None

    # ---- what the loop reports ------------------------------------------------------
    def _write(self, events: list[tuple[Any, ...]]) -> None:
        for ev in events:
            self._event(*ev)

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

    def _timers(self, now: float) -> float:
        """Rotate the ticket key, report, retry listeners; the next deadline
        (the loop keeps the handshakes' own)."""
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
            nxt = self._timers(now)
            # until a signal, the wakeup pair, or the next deadline
            self._write(self.loop.run(max(0.0, nxt - now)))
            with contextlib.suppress(BlockingIOError):
                while self.wake_r.recv(64):
                    pass
        for svc in self.services.values():
            self._close_listener(svc)
        self._write(self.loop.close())  # "the daemon stopped"
        self.log(f"tlsd: stopped: {self.counters.line()}")


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
