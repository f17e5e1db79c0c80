"""A TLS acceptor for kernel tests: accepts on --listen, does the handshake
with Python's ssl (Debian's OpenSSL), puts both directions in kernel TLS and
hands the socket to the module (KTCPVS_CMD_TLS_ADOPT) for --service, as the
project's acceptor will (docs/tls.md).

TLS 1.2: OpenSSL installs both directions itself (SSL_OP_ENABLE_KTLS).
TLS 1.3: OpenSSL 3.0 installs the sending direction; the receiving one is
installed here from the client's traffic secret (l7ctl/ktls.py), read from a
key log file of this connection's own context.

One JSON line per connection on --log: {"ok": true, "version", "cipher"} or
{"ok": false, "error"}.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this tree's l7ctl

from l7ctl import ktls
from l7ctl.errors import L7ctlError
from l7ctl.netlink import Client


def context(args: argparse.Namespace, keylog: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    version = ssl.TLSVersion.TLSv1_3 if args.version == "1.3" else ssl.TLSVersion.TLSv1_2
    ctx.minimum_version = ctx.maximum_version = version
    ctx.options |= ktls.SSL_OP_ENABLE_KTLS
    if args.version == "1.2":
        ctx.set_ciphers("ECDHE+AESGCM")
    ctx.num_tickets = 0  # the server's first record under kernel TLS is number 0
    ctx.keylog_filename = str(keylog)
    return ctx


def serve_one(args: argparse.Namespace, lsock: socket.socket, client: Client) -> dict[str, object]:
    conn, _ = lsock.accept()
    with tempfile.TemporaryDirectory() as d:
        keylog = Path(d) / "keys"
        try:
            tls = context(args, keylog).wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError) as e:
            conn.close()
            return {"ok": False, "error": f"handshake: {e}"}
        try:
            name = tls.cipher()
            assert name is not None
            if tls.version() == "TLSv1.3":
                cipher = ktls.TLS13_CIPHERS[name[0]]
                (secret,) = ktls.read_keylog(keylog, "CLIENT_TRAFFIC_SECRET_0").values()
                with socket.socket(fileno=os.dup(tls.fileno())) as raw:
                    ktls.install(raw, ktls.TLS_RX, ktls.tls13_crypto_info(cipher, secret))
            client.tls_adopt(tls.fileno(), args.service)
            return {"ok": True, "version": tls.version(), "cipher": name[0]}
        except (L7ctlError, OSError, KeyError, ValueError) as e:
            return {"ok": False, "error": str(e)}
        finally:
            tls.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True)
    ap.add_argument("--service", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--version", choices=("1.2", "1.3"), default="1.3")
    ap.add_argument("--log", required=True)
    args = ap.parse_args()
    host, port = args.listen.rsplit(":", 1)
    lsock = socket.create_server((host, int(port)), backlog=64)
    with Client() as client, open(args.log, "a", buffering=1) as log:
        while True:
            log.write(json.dumps(serve_one(args, lsock, client)) + "\n")


if __name__ == "__main__":
    main()
