"""Kernel TLS (kTLS) on a socket whose handshake was done in user space.

The kernel's record layer is configured with setsockopt(SOL_TLS, TLS_TX or
TLS_RX) and a ``tls12_crypto_info_*`` blob (include/uapi/linux/tls.h;
Documentation/networking/tls.rst).  OpenSSL does this itself where it can
(SSL_OP_ENABLE_KTLS); Debian 12's OpenSSL 3.0 does not for the receive side
of TLS 1.3, so the keys of that direction are derived from the
connection's traffic secret (RFC 8446 section 7.1/7.3) and installed by hand
(docs/tls.md says why and what was measured).  The daemon does that in C
(l7ctl/ext/tlsloop_ext.c); this module is the reference its derivation is
tested against, and the platform tests' way to install keys themselves.
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

SOL_TLS = 282
TCP_ULP = 31
TLS_TX = 1
TLS_RX = 2
TLS_SET_RECORD_TYPE = 1  # cmsg type on send
TLS_GET_RECORD_TYPE = 2  # cmsg type on receive

TLS_1_2_VERSION = 0x0303
TLS_1_3_VERSION = 0x0304

# Record content types (RFC 8446 section 5.1).
RECORD_ALERT = 21
RECORD_HANDSHAKE = 22
RECORD_APPLICATION_DATA = 23

# OpenSSL's SSL_OP_ENABLE_KTLS (include/openssl/ssl.h.in: SSL_OP_BIT(3)),
# which Python's ssl module does not name before 3.12.
SSL_OP_ENABLE_KTLS = 1 << 3

TLS_STAT = Path("/proc/thread-self/net/tls_stat")


@dataclass(frozen=True)
class Cipher:
    """A kernel cipher and how its crypto_info lays out the key material."""

    kernel_id: int
    hash_name: str
    key_size: int
    salt_size: int  # the implicit part of the nonce
    iv_size: int  # the explicit (per-record) part, TLS 1.2's on the wire


# TLS 1.3 cipher suites (IANA names, as ssl.SSLSocket.cipher() gives them)
# that the kernel can run.
TLS13_CIPHERS: dict[str, Cipher] = {
    "TLS_AES_128_GCM_SHA256": Cipher(51, "sha256", 16, 4, 8),
    "TLS_AES_256_GCM_SHA384": Cipher(52, "sha384", 32, 4, 8),
    "TLS_CHACHA20_POLY1305_SHA256": Cipher(54, "sha256", 32, 0, 12),
}


def hkdf_expand_label(
    secret: bytes, label: str, context: bytes, length: int, hash_name: str
) -> bytes:
    """HKDF-Expand-Label of RFC 8446 section 7.1."""
    full = b"tls13 " + label.encode("ascii")
    info = struct.pack("!HB", length, len(full)) + full + struct.pack("!B", len(context)) + context
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(secret, block + info + bytes([i]), hash_name).digest()
        out += block
        i += 1
    return out[:length]


def tls13_crypto_info(cipher: Cipher, traffic_secret: bytes, seq: int = 0) -> bytes:
    """The crypto_info blob for one direction of a TLS 1.3 connection:
    write_key and write_iv derived from the direction's traffic secret
    (RFC 8446 section 7.3), the record sequence number to start from."""
    if len(traffic_secret) != hashlib.new(cipher.hash_name).digest_size:
        raise ValueError("the traffic secret's length does not match the cipher's hash")
    key = hkdf_expand_label(traffic_secret, "key", b"", cipher.key_size, cipher.hash_name)
    iv = hkdf_expand_label(traffic_secret, "iv", b"", 12, cipher.hash_name)
    # The kernel rebuilds the 12-byte nonce from salt || iv; for TLS 1.3 it
    # XORs the sequence number in (net/tls/tls.h tls_xor_iv_with_seq).
    salt, explicit = iv[: cipher.salt_size], iv[cipher.salt_size :]
    assert len(explicit) == cipher.iv_size
    head = struct.pack("=HH", TLS_1_3_VERSION, cipher.kernel_id)
    return head + explicit + key + salt + struct.pack("!Q", seq)


def attach_ulp(sock: socket.socket) -> None:
    """The tls upper layer on an established TCP socket (once per socket)."""
    try:
        have = sock.getsockopt(socket.IPPROTO_TCP, TCP_ULP, 16).rstrip(b"\0")
    except OSError:
        have = b""
    if have != b"tls":
        sock.setsockopt(socket.IPPROTO_TCP, TCP_ULP, b"tls")


def install(sock: socket.socket, direction: int, crypto_info: bytes) -> None:
    """Hand one direction (TLS_TX or TLS_RX) of sock's records to the kernel."""
    attach_ulp(sock)
    sock.setsockopt(SOL_TLS, direction, crypto_info)


def read_keylog(path: Path, label: str) -> dict[bytes, bytes]:
    """Secrets of one label from an NSS key log file (what OpenSSL writes
    for SSLContext.keylog_filename), by client random."""
    out: dict[bytes, bytes] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == label:
            out[bytes.fromhex(parts[1])] = bytes.fromhex(parts[2])
    return out


def tls_stat() -> dict[str, int]:
    """The kernel's TLS counters of the caller's network namespace."""
    out: dict[str, int] = {}
    for line in TLS_STAT.read_text().splitlines():
        name, _, value = line.partition(" ")
        if value.strip():
            out[name] = int(value)
    return out
