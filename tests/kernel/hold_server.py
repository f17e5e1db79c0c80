"""A backend for scheduler tests that holds requests in flight until released.

Like echo_server.py it logs every request on arrival ({"server", "peer",
"raw"} JSON lines in --log) and answers 200 with an X-Backend header.  A
request carrying `X-Hold: TOKEN` is answered only once the file
--release-dir/TOKEN exists: until then it counts as an active connection of
this server for the switch's schedulers, for as long as the test needs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import threading
import time

from echo_server import Reader, read_request

HOLD = re.compile(rb"\r\nx-hold: *([A-Za-z0-9_-]+)\r\n", re.IGNORECASE)


def serve(conn: socket.socket, peer: str, a: argparse.Namespace, lock: threading.Lock) -> None:
    r = Reader(conn.makefile("rb", buffering=0))
    try:
        while True:
            req = read_request(r)
            if req is None:
                return
            head = req.split(b"\r\n\r\n", 1)[0] + b"\r\n"
            with lock, open(a.log, "a") as lf:
                raw = req.decode("latin-1")
                lf.write(json.dumps({"server": a.name, "peer": peer, "raw": raw}) + "\n")
            if m := HOLD.search(head):
                release = os.path.join(a.release_dir, m.group(1).decode())
                while not os.path.exists(release):
                    time.sleep(0.05)
            body = a.name.encode()
            close = b"\r\nconnection: close" in head.lower()
            conn.sendall(
                b"HTTP/1.1 200 OK\r\n"
                + f"X-Backend: {a.name}\r\nContent-Length: {len(body)}\r\n".encode()
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
    ap.add_argument("--release-dir", required=True)
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
            target=serve, args=(conn, f"{addr[0]}:{addr[1]}", a, lock), daemon=True
        ).start()


if __name__ == "__main__":
    main()
