"""A TLS service's certificate and key files, checked as `l7ctl check`,
`l7ctl apply` and `l7ctl tlsd` need them (docs/tls.md): readable, the key
matching the certificate, the key file not readable by other users, the
certificate's names (subjectAltName DNS entries, else the subject's common
name) and its validity period.  Python's ssl over Debian's OpenSSL, the
library the daemon serves them with.
"""

from __future__ import annotations

import errno
import os
import re
import ssl
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A certificate that expires within this many days gets a warning.
EXPIRY_WARNING_DAYS = 30
# The module's bound on a certificate's names, NUL-terminated (KT_TLS_NAMES_MAX).
NAMES_MAX = 4096
# A host name the module can compare with a request's Host (kt_tls_names_valid).
_HOST_NAME = re.compile(r"(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*")


class CertError(Exception):
    """A certificate pair that cannot be served: message and hint."""

    def __init__(self, message: str, hint: str = "", which: str = "certificate") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.which = which  # "certificate" or "key": the file at fault


@dataclass(frozen=True)
class CertInfo:
    names: tuple[str, ...]  # DNS names, lower case, wildcards as written
    not_after: float  # seconds since the epoch
    warnings: tuple[str, ...]


def _decode(path: Path) -> dict[str, Any]:
    # The standard library's decoder of a PEM certificate's first entry (the
    # one ssl's own tests and getpeercert() use); no public name for it.
    decode = ssl._ssl._test_decode_cert  # type: ignore[attr-defined]
    out: dict[str, Any] = decode(str(path))
    return out


def names_of(decoded: dict[str, Any]) -> tuple[str, ...]:
    """The certificate's host names: subjectAltName's DNS entries, or, for a
    certificate without any, its subject's commonName (RFC 6125 6.4.4)."""
    dns = [v.lower() for k, v in decoded.get("subjectAltName", ()) if k == "DNS"]
    if dns:
        return tuple(dict.fromkeys(dns))
    cns = [v.lower() for rdn in decoded.get("subject", ()) for k, v in rdn if k == "commonName"]
    return tuple(dict.fromkeys(cns))


def name_matches(pattern: str, host: str) -> bool:
    """RFC 6125 6.4.3, as browsers apply it: exact, or a leading "*." that
    stands for exactly one label."""
    host = host.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return host == pattern


def host_ok(names: Sequence[str], host: str) -> bool:
    """Whether a request's HOST may be served on a connection whose
    handshake chose a certificate of NAMES: the module's check (a host that
    is not gets 421, RFC 9110 15.5.20)."""
    return any(name_matches(n, host) for n in names)


def pick(certificates: Sequence[Sequence[str]], sni: str | None) -> int:
    """The certificate a handshake chooses by SNI among the names of
    CERTIFICATES (in the order written): the first that has the name
    exactly, else the first that covers it by a wildcard, else (no name, or
    one none covers) the first, the default."""
    if sni:
        name = sni.lower().rstrip(".")
        for i, names in enumerate(certificates):
            if name in names:
                return i
        for i, names in enumerate(certificates):
            if any(name_matches(n, name) for n in names if n.startswith("*.")):
                return i
    return 0


def _host_names(decoded: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The certificate's names that are host names, and a warning for each
    other one."""
    names: list[str] = []
    warnings: list[str] = []
    for n in names_of(decoded):
        if len(n) <= 253 and _HOST_NAME.fullmatch(n):
            names.append(n)
        else:
            warnings.append(f"the certificate's name {n!r} is not a host name: ignored")
    return names, warnings


def cert_names(cert: Path) -> tuple[str, ...]:
    """The names the switch checks a request's host against, read from the
    certificate file alone (no key).  Raises :class:`CertError`."""
    try:
        with open(cert, "rb"):
            pass
    except OSError as e:
        raise CertError(f"cannot read the certificate file {cert}: {e.strerror}") from e
    try:
        decoded = _decode(cert)
    except ssl.SSLError as e:
        raise CertError(f"{cert}: not a PEM certificate: {e.reason or e}") from e
    return tuple(_host_names(decoded)[0])


def inspect(cert: Path, key: Path, now: float | None = None) -> CertInfo:
    """Check a certificate and its key as the daemon will load them.
    Raises :class:`CertError`."""
    for which, path in (("certificate", cert), ("key", key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as e:
            hint = (
                "l7ctl tlsd reads it as root"
                if e.errno == errno.EACCES
                else "relative paths are from the rules file's directory"
            )
            raise CertError(f"cannot read the {which} file: {e.strerror}", hint, which) from e
    mode = os.stat(key).st_mode
    if mode & stat.S_IROTH:
        raise CertError(
            "the key file is readable by every user",
            f"chmod 600 {key} (and keep it owned by root)",
            "key",
        )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cert, key)
    except ssl.SSLError as e:
        reason = e.reason or str(e)
        if "MISMATCH" in reason:
            raise CertError(
                "the key does not match the certificate",
                "a certificate's public key and the private key must be a pair",
                "key",
            ) from e
        raise CertError(
            f"OpenSSL cannot load the pair: {reason}",
            "PEM files: the certificate (then its chain) and an unencrypted private key",
        ) from e
    try:
        decoded = _decode(cert)
    except ssl.SSLError as e:
        raise CertError(f"not a PEM certificate: {e.reason or e}") from e
    names, warnings = _host_names(decoded)
    if not names:
        raise CertError(
            "the certificate names no host",
            "it needs subjectAltName DNS entries (or a subject commonName)",
        )
    size = sum(len(n) + 1 for n in names)
    if size > NAMES_MAX:
        raise CertError(
            f"the certificate's names take {size} bytes, more than the {NAMES_MAX} the "
            "switch keeps per connection",
            "split the names over several certificates",
        )
    if mode & stat.S_IRGRP:
        warnings.append(f"the key file is readable by its group: chmod 600 {key}")
    not_after = ssl.cert_time_to_seconds(decoded["notAfter"])
    not_before = ssl.cert_time_to_seconds(decoded["notBefore"])
    t = time.time() if now is None else now
    if not_after < t:
        raise CertError(
            f"the certificate expired on {decoded['notAfter']}", "renew it and apply again"
        )
    if not_before > t:
        warnings.append(f"the certificate is not valid before {decoded['notBefore']}")
    elif not_after < t + EXPIRY_WARNING_DAYS * 86400:
        warnings.append(f"the certificate expires on {decoded['notAfter']}")
    return CertInfo(tuple(names), not_after, tuple(warnings))
