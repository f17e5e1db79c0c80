"""What HTTPS through the switch will rest on, checked on each kernel the suite
boots (docs/tls.md): kernel TLS with the handshake done in user space by
Debian's OpenSSL 3.0 (through Python's ssl module, as l7ctl would).

- OpenSSL hands both directions of a TLS 1.2 connection to the kernel
  (SSL_OP_ENABLE_KTLS), but only the sending one of TLS 1.3;
- the receiving direction of TLS 1.3 can be installed by hand from the
  client's traffic secret (l7ctl/ktls.py), and the kernel then decrypts
  what an unmodified client sends;
- a handshake record after that handoff (a KeyUpdate) reaches a reader as a
  record of another type, never as application data, and a reader that
  asks no record type gets an error instead of bytes.

No module of the project is involved: these are facts of the kernels and of
the libraries, which the design depends on and which a kernel or OpenSSL
update could change.  The counters are /proc/net/tls_stat's (per network
namespace; the tests run in a namespace of their own).
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from demo_site import self_signed_cert
from nsutil import in_netns

from l7ctl import ktls

NS = "kt-tls"
PAYLOAD = bytes(range(256)) * 256  # 64 KiB, several records


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    subprocess.run(["modprobe", "tls"], check=True)
    subprocess.run(["ip", "netns", "add", NS], check=True)
    subprocess.run(["ip", "-n", NS, "link", "set", "lo", "up"], check=True)
    yield NS
    subprocess.run(["ip", "netns", "del", NS], check=False)


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_cert(tmp_path_factory.mktemp("tls"), "www.example.test")


@dataclass
class Pair:
    """A handshaken connection: the server's end (kTLS asked of OpenSSL),
    the client's (plain OpenSSL), the server's TLS counters before."""

    server: ssl.SSLSocket
    client: ssl.SSLSocket
    before: dict[str, int]

    def grew(self, name: str) -> int:
        return ktls.tls_stat()[name] - self.before[name]


@contextmanager
def handshake(
    cert: tuple[Path, Path], version: ssl.TLSVersion, keylog: Path | None
) -> Iterator[Pair]:
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(str(cert[0]), str(cert[1]))
    sctx.minimum_version = sctx.maximum_version = version
    sctx.options |= ktls.SSL_OP_ENABLE_KTLS
    if version == ssl.TLSVersion.TLSv1_2:
        sctx.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256")
    if keylog is not None:
        sctx.keylog_filename = str(keylog)
    cctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cctx.check_hostname = False
    cctx.verify_mode = ssl.CERT_NONE
    lsock = socket.create_server(("127.0.0.1", 0))
    before = ktls.tls_stat()
    accepted: list[ssl.SSLSocket] = []

    def serve() -> None:
        conn, _ = lsock.accept()
        accepted.append(sctx.wrap_socket(conn, server_side=True))

    t = threading.Thread(target=serve)
    t.start()
    client = cctx.wrap_socket(socket.create_connection(lsock.getsockname(), timeout=30))
    t.join(30)
    lsock.close()
    assert accepted, "the server's handshake did not end"
    server = accepted[0]
    server.settimeout(30)
    try:
        yield Pair(server, client, before)
    finally:
        client.close()
        server.close()


def read_exact(read: Callable[[int], bytes], n: int) -> bytes:
    out = b""
    while len(out) < n:
        got = read(n - len(out))
        assert got, f"EOF after {len(out)} of {n} bytes"
        out += got
    return out


def test_openssl_hands_both_directions_of_tls12_to_the_kernel(
    netns: str, cert: tuple[Path, Path]
) -> None:
    def run() -> None:
        with handshake(cert, ssl.TLSVersion.TLSv1_2, None) as p:
            assert p.grew("TlsCurrTxSw") == 1
            assert p.grew("TlsCurrRxSw") == 1
            p.client.sendall(PAYLOAD)
            assert read_exact(p.server.recv, len(PAYLOAD)) == PAYLOAD
            p.server.sendall(PAYLOAD)
            assert read_exact(p.client.recv, len(PAYLOAD)) == PAYLOAD
            assert p.grew("TlsDecryptError") == 0

    in_netns(netns, run)


def test_openssl_30_hands_only_the_sending_side_of_tls13_to_the_kernel(
    netns: str, cert: tuple[Path, Path]
) -> None:
    """Debian 12's OpenSSL 3.0 has no TLS 1.3 receive offload (OpenSSL 3.2+
    has): if this fails, the by-hand receive key of docs/tls.md is moot."""

    def run() -> None:
        with handshake(cert, ssl.TLSVersion.TLSv1_3, None) as p:
            assert p.grew("TlsCurrTxSw") == 1
            assert p.grew("TlsCurrRxSw") == 0
            p.server.sendall(PAYLOAD)
            assert read_exact(p.client.recv, len(PAYLOAD)) == PAYLOAD

    in_netns(netns, run)


def install_tls13_rx(p: Pair, keylog: Path) -> socket.socket:
    """The server's receive side handed to the kernel from the client's
    application traffic secret; returns a plain socket on the same TCP
    connection (the SSLSocket is not read again)."""
    name = p.server.cipher()
    assert name is not None
    cipher = ktls.TLS13_CIPHERS[name[0]]
    secrets = ktls.read_keylog(keylog, "CLIENT_TRAFFIC_SECRET_0")
    assert len(secrets) == 1, secrets
    (secret,) = secrets.values()
    raw = socket.socket(fileno=os.dup(p.server.fileno()))
    raw.settimeout(30)  # the descriptor is shared, and non-blocking: Python's timeout polls
    ktls.install(raw, ktls.TLS_RX, ktls.tls13_crypto_info(cipher, secret))
    return raw


def test_tls13_receive_keys_installed_by_hand_decrypt_an_unmodified_client(
    netns: str, cert: tuple[Path, Path], tmp_path: Path
) -> None:
    keylog = tmp_path / "keys"

    def run() -> None:
        with handshake(cert, ssl.TLSVersion.TLSv1_3, keylog) as p:
            raw = install_tls13_rx(p, keylog)
            try:
                assert p.grew("TlsCurrRxSw") == 1
                for _ in range(3):
                    p.client.sendall(PAYLOAD)
                    assert read_exact(raw.recv, len(PAYLOAD)) == PAYLOAD
                    p.server.sendall(b"ok")  # the kernel's TX, OpenSSL's keys
                    assert read_exact(p.client.recv, 2) == b"ok"
                assert p.grew("TlsDecryptError") == 0
            finally:
                raw.close()

    in_netns(netns, run)


def test_a_handshake_record_after_the_handoff_is_never_application_data(
    netns: str, cert: tuple[Path, Path], tmp_path: Path
) -> None:
    """A KeyUpdate from the client (sent here with the client's own key in
    the kernel, TLS_SET_RECORD_TYPE 22): a reader asking the record type
    gets the record as type 22; a plain read of it fails with EIO."""
    keylog = tmp_path / "keys"

    def run() -> None:
        with handshake(cert, ssl.TLSVersion.TLSv1_3, keylog) as p:
            raw = install_tls13_rx(p, keylog)
            name = p.server.cipher()
            assert name is not None
            cipher = ktls.TLS13_CIPHERS[name[0]]
            (secret,) = ktls.read_keylog(keylog, "CLIENT_TRAFFIC_SECRET_0").values()
            craw = socket.socket(fileno=os.dup(p.client.fileno()))
            craw.settimeout(30)
            try:
                ktls.install(craw, ktls.TLS_TX, ktls.tls13_crypto_info(cipher, secret))
                key_update = bytes([24, 0, 0, 1, 0])  # KeyUpdate, update_not_requested
                rtype = [(ktls.SOL_TLS, ktls.TLS_SET_RECORD_TYPE, bytes([ktls.RECORD_HANDSHAKE]))]
                craw.sendall(b"GET / HTTP/1.1\r\n\r\n")
                craw.sendmsg([key_update], rtype)
                craw.sendall(b"after the update")
                data, anc, _, _ = raw.recvmsg(4096, socket.CMSG_SPACE(1))
                assert data == b"GET / HTTP/1.1\r\n\r\n"
                assert anc == [(ktls.SOL_TLS, ktls.TLS_GET_RECORD_TYPE,
                                bytes([ktls.RECORD_APPLICATION_DATA]))]  # fmt: skip
                with pytest.raises(OSError) as e:
                    raw.recv(4096)
                assert e.value.errno == errno.EIO
                data, anc, _, _ = raw.recvmsg(4096, socket.CMSG_SPACE(1))
                assert data == key_update
                assert anc == [(ktls.SOL_TLS, ktls.TLS_GET_RECORD_TYPE,
                                bytes([ktls.RECORD_HANDSHAKE]))]  # fmt: skip
            finally:
                craw.close()
                raw.close()

    in_netns(netns, run)
