"""HTTP/1.x parsing with the switch's own C parser (kmod/core/http.c).

The functions here call the l7ctl._http extension, which is built from the
same source the kernel module compiles, so what they report is exactly how
ktcpvs reads a message: what it refuses (and with which status), the
normalized path and host it routes on, the framing it relays by.

Bytes are kept as bytes in the library API.  In JSON (``l7ctl parse``) every
byte string is decoded as ISO-8859-1 (latin-1): each byte 0x00-0xff becomes
the code point U+0000-U+00FF, so obs-text such as 0xE9 shows as "\\u00e9" and
the original bytes are recovered with ``s.encode("latin-1")``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, TextIO

from l7ctl import _http

Split = int | Sequence[int] | None
Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True)
class Limits:
    """Parser limits; the defaults are the kernel's."""

    request_line: int = 8192  # bytes of the request/status line: 414
    header_line: int = 8192  # bytes of one field line: 431
    fields: int = 100  # header fields: 431
    head: int = 65536  # the whole head: 431
    merge_slashes: bool = True  # merge runs of '/' in the normalized path


@dataclass(frozen=True)
class Request:
    method: bytes
    target: bytes
    form: str  # origin, absolute, authority, asterisk
    path: bytes  # normalized path (what routing sees)
    query: bytes | None
    host: bytes | None  # lower-cased, without port
    version: str  # "HTTP/1.0" or "HTTP/1.1"
    headers: Headers
    framing: str  # none, length, chunked
    content_length: int | None
    body_length: int  # decoded body bytes
    keep_alive: bool
    upgrade: bool
    head_length: int
    consumed: int  # bytes of the whole message, body included
    offset: int  # where the message starts in the input

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": True,
            "method": _s(self.method),
            "target": _s(self.target),
            "path": _s(self.path),
            "query": None if self.query is None else _s(self.query),
            "host": None if self.host is None else _s(self.host),
            "version": self.version,
            "headers": [[_s(n), _s(v)] for n, v in self.headers],
            "framing": self.framing,
            "body_length": self.body_length,
            "keep_alive": self.keep_alive,
            "consumed": self.consumed,
        }


@dataclass(frozen=True)
class Response:
    status: int
    reason: bytes
    version: str
    headers: Headers
    framing: str  # none, length, chunked, close, tunnel
    content_length: int | None
    body_length: int
    keep_alive: bool
    upgrade: bool
    head_length: int
    consumed: int
    offset: int

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": True,
            "status": self.status,
            "reason": _s(self.reason),
            "version": self.version,
            "headers": [[_s(n), _s(v)] for n, v in self.headers],
            "framing": self.framing,
            "body_length": self.body_length,
            "keep_alive": self.keep_alive,
            "consumed": self.consumed,
        }


@dataclass(frozen=True)
class Refusal:
    """A refused message: the status the switch answers with, why, where."""

    status: int
    error: str
    offset: int  # offset of the offending byte in the input

    def to_json(self) -> dict[str, Any]:
        return {"ok": False, "status": self.status, "error": self.error, "offset": self.offset}


Message = Request | Response | Refusal


def _s(b: bytes) -> str:
    return b.decode("latin-1")


def _version(v: int) -> str:
    return f"HTTP/{v // 10}.{v % 10}"


def _kwargs(limits: Limits | None) -> dict[str, Any]:
    lim = limits or Limits()
    return {
        "request_line": lim.request_line,
        "header_line": lim.header_line,
        "fields": lim.fields,
        "head": lim.head,
        "merge_slashes": lim.merge_slashes,
    }


def _messages(
    cls: type[Request] | type[Response], dicts: list[dict[str, Any]]
) -> list[Request | Response | Refusal]:
    """The extension's dicts as Request or Response (and Refusal) objects."""
    names = [f.name for f in fields(cls)]
    out: list[Request | Response | Refusal] = []
    for d in dicts:
        if not d["ok"]:
            out.append(Refusal(d["status"], d["error"], d["offset"]))
            continue
        kw = {n: d[n] for n in names}
        kw["version"] = _version(d["version"])
        out.append(cls(**kw))
    return out


def parse_requests(
    data: bytes,
    *,
    limits: Limits | None = None,
    split: Split = None,
    skip_opaque: bool = False,
) -> list[Request | Refusal]:
    """Parse pipelined requests; a refusal, if any, is the last item.

    `split` feeds the parser as the network would: None (all at once), an
    int n (n bytes at a time) or sorted offsets where the input is cut.
    `skip_opaque` passes the body bytes the framing does not need to see
    without showing them to the parser, as the kernel's zero-copy relay
    does; the result must not change.
    """
    dicts = _http.parse(data, split=split, skip_opaque=skip_opaque, **_kwargs(limits))
    return _messages(Request, dicts)  # type: ignore[return-value]


def parse_responses(
    data: bytes,
    *,
    request_method: bytes = b"GET",
    limits: Limits | None = None,
    split: Split = None,
    skip_opaque: bool = False,
) -> list[Response | Refusal]:
    """Parse pipelined responses to requests with `request_method`.

    Interim (1xx) responses are items of their own.  Parsing stops after a
    close-delimited body or a 101 / 2xx-to-CONNECT (framing "tunnel").
    """
    dicts = _http.parse(
        data,
        response=True,
        request_method=request_method,
        split=split,
        skip_opaque=skip_opaque,
        **_kwargs(limits),
    )
    return _messages(Response, dicts)  # type: ignore[return-value]


def header_values(data: bytes, name: bytes) -> list[bytes]:
    """Values of every field `name` (case-insensitive) of the first request."""
    values: list[bytes] = _http.lookup(data, name)
    return values


def cookie(data: bytes, name: bytes) -> bytes | None:
    """Value of cookie `name` (case-sensitive) in the first request."""
    value: bytes | None = _http.lookup(data, name, cookie=True)
    return value


def run(data: bytes, out: TextIO, response: bool = False) -> int:
    """`l7ctl parse`: one JSON object per message; 0 if all were accepted."""
    msgs: Sequence[Message] = parse_responses(data) if response else parse_requests(data)
    for m in msgs:
        out.write(json.dumps(m.to_json()) + "\n")
    return 1 if any(isinstance(m, Refusal) for m in msgs) else 0
