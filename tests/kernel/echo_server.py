"""A backend for kernel tests that answers with exactly what it received.

Each connection is read as HTTP/1.1 requests (head, then a Content-Length or
chunked body).  For every request the server appends one JSON line to --log
({"server", "peer", "raw"} with raw as latin-1 text) and answers 200 with a
JSON body {"server", "raw"}, so a test sees byte for byte what reached the
backend -- and, from the log, what never did.  Keep-alive is honoured.
Deliberately lenient: it must show what the switch forwards, not judge it.

With --release-dir, a request carrying `X-Hold: TOKEN` is answered only once
the file RELEASE_DIR/TOKEN exists: until then it counts as an active request
of this server for the switch's schedulers (the scheduler tests hold
requests in flight that way).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import threading
import time

HOLD = re.compile(rb"\r\nx-hold: *([A-Za-z0-9_-]+)\r\n", re.IGNORECASE)


class Reader:
    """Buffered reads from a socket file: whole lines and exact byte counts."""

    def __init__(self, f: socket.SocketIO) -> None:
        self.f = f
        self.buf = bytearray()

    def _more(self) -> bool:
        chunk = self.f.read(65536)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def until(self, pos: int, sep: bytes) -> int | None:
        """Index just past the first sep at or after pos, reading as needed."""
        while (i := self.buf.find(sep, pos)) < 0:
            if not self._more():
                return None
        return i + len(sep)

    def have(self, n: int) -> bool:
        while len(self.buf) < n:
            if not self._more():
                return False
        return True


def read_request(r: Reader) -> bytes | None:
    """Read one request, head and body (Content-Length or chunked), verbatim."""
    end = r.until(0, b"\r\n\r\n")
    if end is None:
        return None
    head = bytes(r.buf[:end]).lower()
    fields = [line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line]
    te = b",".join(v.strip() for k, v in fields if k.strip() == b"transfer-encoding")
    cl = [int(v.strip() or b"0") for k, v in fields if k.strip() == b"content-length"]
    if te.endswith(b"chunked"):
        while True:
            line_end = r.until(end, b"\r\n")
            if line_end is None:
                return None
            size = int(bytes(r.buf[end:line_end]).split(b";")[0].strip() or b"0", 16)
            end = line_end
            if size == 0:
                while True:  # trailer fields, then the empty line
                    line_end = r.until(end, b"\r\n")
                    if line_end is None:
                        return None
                    empty = line_end == end + 2
                    end = line_end
                    if empty:
                        break
                break
            end += size + 2
            if not r.have(end):
                return None
    elif cl:
        end += cl[0]
        if not r.have(end):
            return None
    req = bytes(r.buf[:end])
    del r.buf[:end]
    return req


def serve(
    conn: socket.socket,
    peer: str,
    name: str,
    log: str,
    lock: threading.Lock,
    release_dir: str | None = None,
) -> None:
    r = Reader(conn.makefile("rb", buffering=0))  # type: ignore[arg-type]
    try:
        while True:
            req = read_request(r)
            if req is None:
                return
            raw = req.decode("latin-1")
            with lock, open(log, "a") as lf:
                lf.write(json.dumps({"server": name, "peer": peer, "raw": raw}) + "\n")
            head = req.split(b"\r\n\r\n", 1)[0] + b"\r\n"
            if release_dir and (m := HOLD.search(head)):
                release = os.path.join(release_dir, m.group(1).decode())
                while not os.path.exists(release):
                    time.sleep(0.05)
            body = json.dumps({"server": name, "raw": raw}).encode()
            close = b"\r\nconnection: close" in head.lower()
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"X-Backend: {name}\r\nContent-Length: {len(body)}\r\n".encode()
                + (b"Connection: close\r\n" if close else b"")
                + b"\r\n"
                + body
            )
            if close:
                return
    except (ConnectionError, OSError):
        return
    finally:
        conn.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name", required=True)
    ap.add_argument("--listen", required=True, help="ADDR:PORT")
    ap.add_argument("--log", required=True)
    ap.add_argument("--release-dir", help="hold requests with X-Hold until released")
    a = ap.parse_args()
    host, port = a.listen.rsplit(":", 1)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host.strip("[]"), int(port)))
    srv.listen(1024)
    lock = threading.Lock()
    while True:
        conn, addr = srv.accept()
        threading.Thread(
            target=serve,
            args=(conn, f"{addr[0]}:{addr[1]}", a.name, a.log, lock, a.release_dir),
            daemon=True,
        ).start()


if __name__ == "__main__":
    main()
