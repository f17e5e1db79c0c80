#!/usr/bin/env python3
"""Open N connections, make one checked request on each, and hold them open.

    hold.py HOST PORT N PATH POOL

Run in the client's namespace by bench/macro/guest.py.  Every connection
sends one keep-alive GET for PATH and reads the whole answer; the answer must
be 200 with X-Pool: POOL (or any pool when POOL is "any").  Then it prints
`READY {"ok": .., "bad": .., "seconds": ..}` and holds every connection open
until its standard input closes; then it resets them all (SO_LINGER 0: no
TIME_WAIT sockets left to blur the next measurement) and exits.
"""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import struct
import sys
import time

BATCH = 256  # connections in flight at once while opening


class Conn:
    def __init__(self, host: str, port: int, request: bytes) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.sock.connect_ex((host, port))
        self.request = request
        self.sent = False
        self.buf = b""
        self.done = False
        self.ok = False

    def on_event(self) -> None:
        if not self.sent:
            err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.done = True
                return
            self.sock.send(self.request)
            self.sent = True
            return
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            self.done = True
            return
        if not data:
            self.done = True
            return
        self.buf += data
        head, sep, body = self.buf.partition(b"\r\n\r\n")
        if not sep:
            return
        lines = head.decode("latin-1").split("\r\n")
        fields = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            fields[k.strip().lower()] = v.strip()
        if len(body) < int(fields.get("content-length", "0")):
            return
        self.done = True
        self.ok = lines[0].split()[1:2] == ["200"] and (
            POOL == "any" or fields.get("x-pool") == POOL
        )


POOL = "any"


def main() -> int:
    global POOL
    host, port, n, path, POOL = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:6]
    request = f"GET {path} HTTP/1.1\r\nHost: bench.example.com\r\n\r\n".encode()
    sel = selectors.DefaultSelector()
    conns: list[Conn] = []
    pending: set[Conn] = set()
    start = time.monotonic()
    deadline = start + 600
    while (len(conns) < n or pending) and time.monotonic() < deadline:
        while len(conns) < n and len(pending) < BATCH:
            c = Conn(host, port, request)
            conns.append(c)
            pending.add(c)
            sel.register(c.sock, selectors.EVENT_WRITE, c)
        for key, _ in sel.select(timeout=1.0):
            c = key.data
            was_sent = c.sent
            c.on_event()
            if c.done:
                sel.unregister(c.sock)
                pending.discard(c)
            elif c.sent and not was_sent:
                sel.modify(c.sock, selectors.EVENT_READ, c)
    ok = sum(c.ok for c in conns)
    report = {"ok": ok, "bad": len(conns) - ok, "seconds": round(time.monotonic() - start, 2)}
    print("READY " + json.dumps(report), flush=True)
    sys.stdin.readline()
    linger = struct.pack("ii", 1, 0)
    for c in conns:
        with contextlib.suppress(OSError):
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        c.sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
