#!/usr/bin/env python3
"""Ask a running guest's QEMU monitor (tests/vm.py opens one on
OUT/monitor.sock) and print its answer: for a guest that no longer makes
progress, where its CPUs are.

    tests/vm_monitor.py build/vm-bench 'info registers -a'
    tests/vm_monitor.py build/vm-bench 'info cpus'

Kernel addresses read against /boot/System.map-KVER; the module's, against
its .text base, which the bench's guest writes to OUT/ktcpvs.text.
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path


def ask(path: Path, command: str, timeout: float = 10.0) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        out = b""
        s.sendall(command.encode() + b"\n")
        deadline = time.monotonic() + timeout
        # the monitor answers with a banner, the echoed command, the output
        # and its next prompt; read until the answer is followed by a prompt
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            out += chunk
            if out.count(b"(qemu)") >= 2:
                break
    return out.decode(errors="replace")


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    print(ask(Path(sys.argv[1]) / "monitor.sock", sys.argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
