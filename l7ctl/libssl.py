"""The few OpenSSL calls Python's ssl module does not offer, for
``l7ctl tlsd``: ticket keys, the session cache's mode and timeout
(l7ctl/tickets.py), and the SSL_CTX pointer the daemon's C loop takes its
contexts by (l7ctl/tlsd.py, l7ctl/ext/tlsloop_ext.c).

They are made with ctypes on libssl.so.3 as loaded by the ssl module, on
the SSL_CTX behind an ``ssl.SSLContext``: CPython's context object holds
its pointer right after the object header, and ``ssl_ctx`` checks it
against OpenSSL before any use.
"""

from __future__ import annotations

import ctypes
import platform
import ssl

from l7ctl.errors import L7ctlError

# openssl/ssl.h
SSL_CTRL_SET_SESS_CACHE_MODE = 44
SSL_CTRL_SET_TLSEXT_TICKET_KEYS = 59
SSL_SESS_CACHE_OFF = 0


class _LibSSL:
    def __init__(self) -> None:
        lib = ctypes.CDLL("libssl.so.3")
        self.ctrl = lib.SSL_CTX_ctrl
        self.ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
        self.ctrl.restype = ctypes.c_long
        self.set_timeout = lib.SSL_CTX_set_timeout
        self.set_timeout.argtypes = [ctypes.c_void_p, ctypes.c_long]
        self.set_timeout.restype = ctypes.c_long
        self.get_options = lib.SSL_CTX_get_options
        self.get_options.argtypes = [ctypes.c_void_p]
        self.get_options.restype = ctypes.c_uint64


_lib: _LibSSL | None = None


def lib() -> _LibSSL:
    """libssl's functions, checked once: CPython, OpenSSL 3."""
    global _lib
    if _lib is None:
        if platform.python_implementation() != "CPython":
            raise L7ctlError("l7ctl tlsd needs CPython's ssl module")
        if not ssl.OPENSSL_VERSION_INFO >= (3, 0):
            raise L7ctlError(f"l7ctl tlsd needs OpenSSL 3, not {ssl.OPENSSL_VERSION}")
        try:
            _lib = _LibSSL()
        except (OSError, AttributeError) as e:
            raise L7ctlError(f"libssl.so.3: {e}") from None
    return _lib


def ssl_ctx(ctx: ssl.SSLContext) -> int:
    """CTX's SSL_CTX pointer.  Checked, once per context (then kept on it:
    the pointer lives as long as the context): OpenSSL must report the
    context's options, and a change of them made through Python, at that
    address."""
    known: int | None = getattr(ctx, "_l7ctl_ssl_ctx", None)
    if known is not None:
        return known
    libssl = lib()
    ptr = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    if not ptr:
        raise L7ctlError("no OpenSSL context behind the ssl.SSLContext")
    before = ctx.options
    try:
        seen = [libssl.get_options(ptr)]
        ctx.options = before ^ ssl.OP_NO_COMPRESSION
        seen.append(libssl.get_options(ptr))
    finally:
        ctx.options = before
    if seen != [int(before), int(before ^ ssl.OP_NO_COMPRESSION)]:
        raise L7ctlError("the ssl module's context is not laid out as expected")
    ctx._l7ctl_ssl_ctx = ptr  # type: ignore[attr-defined]
    return ptr
