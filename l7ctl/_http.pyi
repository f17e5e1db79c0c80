"""Type stub for the l7ctl._http extension (l7ctl/ext/http_ext.c)."""

from collections.abc import Sequence
from typing import Any

DEF_REQUEST_LINE: int
DEF_HEADER_LINE: int
DEF_FIELDS: int
DEF_HEAD: int

def parse(
    data: bytes,
    *,
    response: bool = ...,
    split: int | Sequence[int] | None = ...,
    request_method: bytes | None = ...,
    request_line: int | None = ...,
    header_line: int | None = ...,
    fields: int | None = ...,
    head: int | None = ...,
    merge_slashes: bool = ...,
    skip_opaque: bool = ...,
) -> list[dict[str, Any]]: ...
def lookup(data: bytes, name: bytes, cookie: bool = ...) -> Any: ...
def auth_per_connection(value: bytes) -> bool: ...
