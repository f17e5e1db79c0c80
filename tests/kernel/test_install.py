"""KTCPVS as installed on a machine: the DKMS-built module and ktcpvs.service.

make test runs make install on the host before the guests boot (the DKMS
build for every kernel, l7ctl's virtual environment, the unit, site.rules;
nothing loaded on the host) and make uninstall after them; the guest sees
that installation through its read-only view of the host's filesystem.  The
unit's start, reload and stop commands are read from the installed unit
file and run here as systemd would run them (the guest has no systemd).

Without an installation the tests skip, unless KTCPVS_INSTALL_TEST=1 (make
test) says there must be one.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from l7ctl.netlink import Client

ROOT = Path(__file__).resolve().parents[2]
KO = os.environ.get("KTCPVS_KO") or ""
UNITS = [Path("/etc/systemd/system/ktcpvs.service"), Path("/lib/systemd/system/ktcpvs.service")]
RULES = Path("/etc/ktcpvs/site.rules")
REQUIRED = os.environ.get("KTCPVS_INSTALL_TEST") == "1"

SITE = """
pool local { server 127.0.0.1:8081; }
service installed listen 127.0.0.1:8080 {
    route local;
}
"""


def installed_unit() -> Path:
    for unit in UNITS:
        if unit.exists():
            return unit
    if REQUIRED:
        pytest.fail("KTCPVS_INSTALL_TEST=1 but no ktcpvs.service is installed on the host")
    pytest.skip("KTCPVS is not installed on this host (make test installs it for these tests)")


def exec_lines(unit: Path, key: str) -> list[list[str]]:
    """The command lines of Key= in the unit's [Service] section, in order."""
    cmds = []
    section = ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line
        elif section == "[Service]" and line.startswith(f"{key}="):
            argv = shlex.split(line.split("=", 1)[1])
            assert argv[0][0] not in "-@:+!", f"{line}: prefixes are not run here"
            cmds.append(argv)
    assert cmds, f"{unit} has no {key}="
    return cmds


def run_all(cmds: list[list[str]]) -> None:
    for argv in cmds:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
        assert r.returncode == 0, f"{shlex.join(argv)} exited {r.returncode}: {r.stderr}"


def loaded() -> bool:
    return Path("/sys/module/ktcpvs").exists()


def modinfo(field: str) -> str:
    return subprocess.run(
        ["modinfo", "-F", field, "ktcpvs"], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture
def installed() -> Iterator[Path]:
    """The installed unit, with the suite's module out of the way meanwhile."""
    unit = installed_unit()
    if loaded():
        subprocess.run(["rmmod", "ktcpvs"], check=True)
    saved = RULES.read_bytes()
    try:
        yield unit
    finally:
        RULES.write_bytes(saved)
        if loaded():
            subprocess.run(["rmmod", "ktcpvs"], check=False)
        subprocess.run(["insmod", KO], check=True)


class Backend(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = b"answered by the backend behind the installed module\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def get(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: installed\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def test_modprobe_finds_the_dkms_module(installed: Path) -> None:
    kver = os.uname().release
    path = subprocess.run(
        ["modinfo", "-n", "ktcpvs"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert path.startswith(f"/lib/modules/{kver}/updates/dkms/ktcpvs.ko"), path
    assert modinfo("vermagic").split()[0] == kver
    plan = subprocess.run(
        ["modprobe", "-n", "-v", "ktcpvs"], capture_output=True, text=True, check=True
    ).stdout
    assert f"insmod {path}" in plan
    (src,) = Path("/usr/src").glob("ktcpvs-*/dkms.conf")
    assert f'PACKAGE_VERSION="{modinfo("version")}"' in src.read_text()


def test_service_start_reload_stop(installed: Path) -> None:
    start = exec_lines(installed, "ExecStart")
    reload = exec_lines(installed, "ExecReload")
    stop = exec_lines(installed, "ExecStop")

    # Start: the DKMS module, and the installed site.rules, which applies nothing.
    run_all(start)
    assert loaded()
    want = modinfo("srcversion")
    assert Path("/sys/module/ktcpvs/srcversion").read_text().strip() == want
    assert Client().info().service_count == 0

    # Reload after the site changed: the new rules run, traffic passes.
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    server = ThreadingHTTPServer(("127.0.0.1", 8081), Backend)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        RULES.write_text(SITE)
        run_all(reload)
        assert Client().info().service_count == 1
        answer = get(8080)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert b"answered by the backend behind the installed module" in answer
        run_all(reload)  # re-applying what runs changes nothing
        assert Client().info().service_count == 1
    finally:
        server.shutdown()
        server.server_close()

    # Stop: configuration flushed, module unloaded.
    run_all(stop)
    assert not loaded()


def test_installed_site_rules_apply_nothing(installed: Path) -> None:
    (l7ctl,) = {argv[0] for argv in exec_lines(installed, "ExecReload")}
    r = subprocess.run([l7ctl, "check", str(RULES)], capture_output=True, text=True, check=True)
    assert ": ok: 0 service(s), 0 rule(s), 0 pool(s), 0 virtual service(s)" in r.stdout
    assert all(line.startswith("#") or not line.strip() for line in RULES.read_text().splitlines())


def test_tls_daemon_unit_serves_https_and_stops(installed: Path, tmp_path: Path) -> None:
    """ktcpvs-tlsd.service as installed beside ktcpvs.service: its ExecStart,
    with the installed l7ctl, serves a TLS service of site.rules (the
    handshake, kernel TLS, the handover to the installed module), its
    ExecReload reloads it, and SIGTERM (systemd's stop) ends it cleanly."""
    tlsd_unit = installed.parent / "ktcpvs-tlsd.service"
    assert tlsd_unit.exists(), f"no {tlsd_unit} beside {installed}"
    (start,) = exec_lines(tlsd_unit, "ExecStart")
    (reload,) = exec_lines(tlsd_unit, "ExecReload")
    crt, key = tmp_path / "installed.crt", tmp_path / "installed.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-subj", "/CN=installed.example", "-days", "2",
         "-keyout", str(key), "-out", str(crt)],
        check=True, capture_output=True,
    )  # fmt: skip
    key.chmod(0o600)
    run_all(exec_lines(installed, "ExecStart"))
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    server = ThreadingHTTPServer(("127.0.0.1", 8081), Backend)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    daemon = None
    try:
        RULES.write_text(
            SITE + f"service secure listen 127.0.0.1:8443 tls {{\n"
            f'    certificate "{crt}" key "{key}";\n    route local;\n}}\n'
        )
        run_all(exec_lines(installed, "ExecReload"))
        daemon = subprocess.Popen(start, stderr=subprocess.PIPE, text=True)

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(crt)
        resumed: list[bool] = []
        session: list[ssl.SSLSession] = []  # the last connection's

        def https_get() -> bytes:
            raw = socket.create_connection(("127.0.0.1", 8443), timeout=30)
            last = session[-1] if session else None
            with ctx.wrap_socket(raw, server_hostname="installed.example", session=last) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: installed.example\r\nConnection: close\r\n\r\n")
                data = b""
                with contextlib.suppress(ssl.SSLError):
                    while chunk := s.recv(65536):
                        data += chunk
                resumed.append(s.session_reused)
                if s.session is not None:
                    session.append(s.session)
            return data

        deadline = time.monotonic() + 60
        while True:
            try:
                answer = https_get()
                break
            except (ConnectionRefusedError, ssl.SSLError):
                assert time.monotonic() < deadline and daemon.poll() is None
                time.sleep(0.5)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert b"answered by the backend behind the installed module" in answer
        # The unit runs a worker per CPU; a session resumes on any of them.
        resumed.clear()
        assert all(https_get().startswith(b"HTTP/1.1 200") for _ in range(8))
        assert resumed == [True] * 8
        run_all([[a.replace("$MAINPID", str(daemon.pid)) for a in reload]])
        time.sleep(2)
        assert https_get().startswith(b"HTTP/1.1 200")
        assert resumed[-1], "the reload kept the ticket key"
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=30)
        assert daemon.returncode == 0, err
        assert "tlsd: reloaded /etc/ktcpvs/site.rules" in err
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        server.shutdown()
        server.server_close()
    run_all(exec_lines(installed, "ExecStop"))
    assert not loaded()
