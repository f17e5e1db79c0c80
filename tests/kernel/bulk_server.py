"""A backend for the relay tests: large bodies in every framing, a sink, a tunnel.

    GET  /flaky/length/N    200, Content-Length: N, the pattern
    GET  /flaky/chunked/N   200, chunked: the pattern in chunks of CHUNKS sizes
    GET  /flaky/close/N     200, no length: the pattern, then close
    POST /flaky/sink        reads the body (Content-Length or chunked) and
                            answers {"sha256", "length"} of its wire bytes; a
                            request with Expect: 100-continue gets a
                            100 Continue first, and its body is read after it
    GET  /flaky/tunnel      101 Switching Protocols, then echoes every byte

The pattern is pattern(N) below, so a client checks bodies byte for byte.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import socket
import threading

# Chunk sizes, cycled: tiny and large ones, so framing and data interleave.
CHUNKS = (1, 300, 70000, 5, 262144, 17, 1048576)


def pattern(n: int) -> bytes:
    unit = bytes(range(251))  # a prime length: no alignment with any chunk size
    return (unit * (n // len(unit) + 1))[:n]


class Reader:
    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.buf = bytearray()

    def line(self) -> bytes:
        while (i := self.buf.find(b"\r\n")) < 0:
            self._more()
        out = bytes(self.buf[: i + 2])
        del self.buf[: i + 2]
        return out

    def exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._more()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def _more(self) -> None:
        d = self.conn.recv(1 << 20)
        if not d:
            raise ConnectionError("eof")
        self.buf += d


def sink(r: Reader, conn: socket.socket, head: dict[bytes, bytes]) -> None:
    if head.get(b"expect", b"").lower() == b"100-continue":
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    h = hashlib.sha256()
    n = 0
    if head.get(b"transfer-encoding", b"").lower() == b"chunked":
        while True:
            line = r.line()
            size = int(line.split(b";")[0], 16)
            data = r.exact(size + 2) if size else b""
            wire = line + data
            if not size:
                while (t := r.line()) != b"\r\n":
                    wire += t
                wire += b"\r\n"
            h.update(wire)
            n += len(wire)
            if not size:
                break
    else:
        left = int(head.get(b"content-length", b"0"))
        while left:
            d = r.exact(min(left, 1 << 20))
            h.update(d)
            n += len(d)
            left -= len(d)
    body = json.dumps({"sha256": h.hexdigest(), "length": n}).encode()
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


def chunked(conn: socket.socket, data: bytes) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    pos, i = 0, 0
    while pos < len(data):
        size = min(CHUNKS[i % len(CHUNKS)], len(data) - pos)
        conn.sendall(b"%x\r\n" % size + data[pos : pos + size] + b"\r\n")
        pos += size
        i += 1
    conn.sendall(b"0\r\n\r\n")


def serve(conn: socket.socket) -> None:
    r = Reader(conn)
    try:
        while True:
            request = r.line()
            head: dict[bytes, bytes] = {}
            while (line := r.line()) != b"\r\n":
                k, _, v = line.partition(b":")
                head[k.strip().lower()] = v.strip()
            method, target, _ = request.split(b" ", 2)
            parts = target.decode().strip("/").split("/")
            what = parts[1] if len(parts) > 1 else ""
            if method == b"POST" and what == "sink":
                sink(r, conn, head)
            elif what == "length":
                data = pattern(int(parts[2]))
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(data) + data)
            elif what == "chunked":
                chunked(conn, pattern(int(parts[2])))
            elif what == "close":
                conn.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                conn.sendall(pattern(int(parts[2])))
                return
            elif what == "tunnel":
                conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\n"
                             b"Connection: Upgrade\r\n\r\n")  # fmt: skip
                if r.buf:
                    conn.sendall(bytes(r.buf))
                while d := conn.recv(1 << 20):
                    conn.sendall(d)
                return
            else:
                conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    except (ConnectionError, OSError, ValueError):
        return
    finally:
        conn.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True, help="ADDR:PORT")
    a = ap.parse_args()
    host, port = a.listen.rsplit(":", 1)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, int(port)))
    srv.listen(128)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    main()
