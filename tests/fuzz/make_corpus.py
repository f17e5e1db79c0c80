"""Write the libFuzzer seed corpus (tests/fuzz/corpus/<harness>/).

Each seed is one config byte (see fuzz_common.h: bit 4 small limits, bit 5
no slash merging, bits 6-7 request method for responses, bit 7 response mode
for the chunked harness) followed by the byte stream.  Run from the
repository root: python3 tests/fuzz/make_corpus.py
"""

from __future__ import annotations

import hashlib
from pathlib import Path

ROOT = Path(__file__).parent / "corpus"

BROWSER_GET = (
    b"GET /images/logo.png?v=3&lang=en HTTP/1.1\r\n"
    b"Host: www.example.com\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    b"Accept: image/avif,image/webp,image/png,image/svg+xml,image/*;q=0.8,*/*;q=0.5\r\n"
    b"Accept-Language: en-US,en;q=0.5\r\n"
    b"Accept-Encoding: gzip, deflate, br, zstd\r\n"
    b"Referer: https://www.example.com/products/index.html\r\n"
    b"Connection: keep-alive\r\n"
    b"Cookie: session=38afes7a8; theme=dark; _ga=GA1.2.1234567890.1234567890\r\n"
    b"Sec-Fetch-Dest: image\r\n"
    b"Sec-Fetch-Mode: no-cors\r\n\r\n"
)

REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    BROWSER_GET,
    b"GET /a/./b/../%7Ec%2f%2e%2E/d//e?x=%20&y HTTP/1.1\r\nHost: Ex.COM:8080\r\n\r\n",
    b"POST /form HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
    b'5;a=b;c="d \\" e"\r\nhello\r\n0\r\nX-T: 1\r\n\r\n',
    b"GET http://[2001:db8::1]:80/x?q HTTP/1.1\r\nHost: other\r\n\r\n",
    b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    # refused: CONNECT has no content
    b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nContent-Length: 5\r\n\r\nhello",
    b"CONNECT [::1]:443 HTTP/1.1\r\nHost: [::1]:443\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"\r\nGET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\n\r\n",
    b"PROPFIND /dav HTTP/1.1\r\nHost: a\r\nX-N:\t caf\xe9 \t\r\nContent-Length: 003, 3\r\n\r\nabc",
    b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
]

RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nbody until close",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81",
    b"HTTP/1.1 200\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
]

CHUNKED = [
    b"5\r\nhello\r\n0\r\n\r\n",
    b'a;x=1;y="q\\"z" ;z\r\n0123456789\r\n0000\r\nA: b\r\nC:\td\r\n\r\n',
    b"0\r\n\r\n0\r\n\r\n",
    b"1\r\nx\r\nFF\r\n" + b"y" * 255 + b"\r\n0\r\n\r\n",
]


def write(harness: str, seeds: list[bytes]) -> None:
    d = ROOT / harness
    d.mkdir(parents=True, exist_ok=True)
    for s in seeds:
        (d / hashlib.sha1(s).hexdigest()).write_bytes(s)


def main() -> None:
    write("request", [bytes([cfg]) + r for r in REQUESTS for cfg in (0x00, 0x10, 0x20)])
    write(
        "response",
        [bytes([cfg]) + r for r in RESPONSES for cfg in (0x00, 0x40, 0x80, 0x10)],
    )
    write("chunked", [bytes([cfg]) + c for c in CHUNKED for cfg in (0x00, 0x80, 0x10)])


if __name__ == "__main__":
    main()
