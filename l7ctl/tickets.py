"""Session resumption for ``l7ctl tlsd``: one ticket key for every worker,
rotated (docs/tls.md, "Session resumption").

A client that kept a session ticket from an earlier connection resumes: no
certificate is sent or signed, which is most of a handshake's cost on both
sides.  Tickets are stateless (the session is sealed in the ticket with the
ticket key): the daemon keeps nothing per client, and OpenSSL's server-side
session cache is turned off.

OpenSSL makes a random ticket key per context.  The daemon's workers are
separate processes whose listeners share an address (SO_REUSEPORT): a
client's next connection lands on any of them, and each must open the
tickets of all.  So the key is derived, by every worker on its own, from a
seed made by the first process before it forks and from the time since
then: period N's key is HMAC-SHA256 of period N-1's, and a worker keeps
only the current one (a past key cannot be computed from it: tickets of
past periods stay sealed).  A period lasts the ticket lifetime; a ticket
opens until its key is rotated, so at most the lifetime, and a client whose
ticket no longer opens gets a full handshake.

Python's ssl has no call for ticket keys, session timeouts or the cache
mode: they are set with OpenSSL's own calls (l7ctl/libssl.py).
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import math
import ssl

from l7ctl import libssl
from l7ctl.errors import L7ctlError
from l7ctl.libssl import (
    SSL_CTRL_SET_SESS_CACHE_MODE,
    SSL_CTRL_SET_TLSEXT_TICKET_KEYS,
    SSL_SESS_CACHE_OFF,
)

# The ticket keys' blob: key name (16), HMAC key (32), AES-256 key (32).
KEYS_LEN = 80

LIFETIME_DEFAULT = 300  # seconds: HAProxy's and nginx's session lifetime
LIFETIME_MAX = 7 * 24 * 3600  # RFC 8446 section 4.6.1
SEED_LEN = 32
_LABEL = b"ktcpvs-tlsd ticket key"


class TicketKeys:
    """The current ticket key of a chain every worker computes alike: the
    same SEED and START (a time.monotonic() of the first process, the clock
    is the system's) give the same key at the same time."""

    def __init__(self, seed: bytes, lifetime: int, start: float) -> None:
        if len(seed) != SEED_LEN:
            raise ValueError("a ticket seed is 32 bytes")
        if not 0 < lifetime <= LIFETIME_MAX:
            raise ValueError(f"ticket lifetime out of 1..{LIFETIME_MAX} s")
        self.lifetime = lifetime
        self.start = start
        self.period = 0
        self._key = seed

    @property
    def rotate_at(self) -> float:
        """When the current key is replaced (time.monotonic())."""
        return self.start + (self.period + 1) * self.lifetime

    def advance(self, now: float) -> bool:
        """Move to NOW's period (dropping the keys before it); True if the
        key changed."""
        period = max(self.period, math.floor((now - self.start) / self.lifetime))
        changed = period != self.period
        while self.period < period:
            self._key = hmac.digest(self._key, _LABEL, hashlib.sha256)
            self.period += 1
        return changed

    def blob(self) -> bytes:
        """The current key as OpenSSL takes it (KEYS_LEN bytes)."""
        name = hmac.digest(self._key, b"name", hashlib.sha256)[:16]
        mac = hmac.digest(self._key, b"hmac", hashlib.sha256)
        aes = hmac.digest(self._key, b"aes", hashlib.sha256)
        return name + mac + aes


def install(ctx: ssl.SSLContext, keys: TicketKeys) -> None:
    """Stateless tickets on CTX, sealed with KEYS' current key, announced
    with their lifetime; no server-side session cache."""
    lib = libssl.lib()
    ptr = libssl.ssl_ctx(ctx)
    blob = ctypes.create_string_buffer(keys.blob(), KEYS_LEN)
    if lib.ctrl(ptr, SSL_CTRL_SET_TLSEXT_TICKET_KEYS, KEYS_LEN, blob) != 1:
        raise L7ctlError("session tickets: OpenSSL refused the ticket key")
    ctypes.memset(blob, 0, KEYS_LEN)
    lib.set_timeout(ptr, keys.lifetime)
    lib.ctrl(ptr, SSL_CTRL_SET_SESS_CACHE_MODE, SSL_SESS_CACHE_OFF, None)
