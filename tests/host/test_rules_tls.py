"""HTTPS services (docs/tls.md): `listen ADDRESS tls`, `certificate ... key
...;`, `x-forwarded-proto`; the certificate checks of `l7ctl check`
(l7ctl/tlscert.py); the flags in the tables and the C validator; the TLS
daemon's choice of certificate and its bounds on handshakes (l7ctl/tlsd.py),
as far as they go without kernel TLS (a whole handshake would attach the
kernel's tls module: that is the guest's, tests/kernel/test_tls.py)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rules_helpers import POOLS, _match, needs_match
from test_rules_raw import W_FLAGS, _svc_word

from l7ctl import _tlsloop, compiler, ir, ktls, tables, tlscert, tlsd
from l7ctl.apply import ir_diff


def make_cert(d: Path, name: str, *alt: str, days: int = 365) -> tuple[Path, Path]:
    crt, key = d / f"{name}.crt", d / f"{name}.key"
    san = ",".join(f"DNS:{n}" for n in (name, *alt))
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-subj", f"/CN={name}", "-addext", f"subjectAltName={san}",
         "-days", str(days), "-keyout", str(key), "-out", str(crt)],
        check=True, capture_output=True,
    )  # fmt: skip
    key.chmod(0o600)
    return crt, key


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    d = tmp_path_factory.mktemp("certs")
    return {
        "www": make_cert(d, "www.example.com", "example.com"),
        "api": make_cert(d, "api.example.com", "*.api.example.com"),
        "soon": make_cert(d, "soon.example.com", days=5),
    }


def tls_service(certs: dict[str, tuple[Path, Path]], body: str = "", names: str = "www api") -> str:
    lines = [f'    certificate "{certs[n][0]}" key "{certs[n][1]}";' for n in names.split()]
    return (
        POOLS
        + "service secure listen 10.0.0.1:443 tls {\n"
        + "\n".join(lines)
        + "\n"
        + body
        + "    route a;\n}\n"
    )


def compile_at(tmp: Path, text: str, tls_files: bool = True) -> compiler.Result:
    p = tmp / "site.rules"
    p.write_text(text)
    return compiler.compile_file(p, tls_files=tls_files)


def where(res: compiler.Result) -> list[tuple[int, int, str]]:
    return [(d.pos.line, d.pos.col, d.message) for d in res.errors]


def test_a_tls_service_compiles_with_its_certificates_names_and_flags(
    tmp_path: Path, certs: dict[str, tuple[Path, Path]]
) -> None:
    res = compile_at(tmp_path, tls_service(certs, "    x-forwarded-proto on;\n"))
    assert res.ok, res.format()
    assert res.ir is not None and res.tables is not None
    (s,) = res.ir.services
    assert s.tls and s.xfp and s.port == 443
    assert [c.names for c in s.certificates] == [
        ("www.example.com", "example.com"),
        ("api.example.com", "*.api.example.com"),
    ]
    assert s.certificates[0].cert == str(certs["www"][0])
    assert _svc_word(res.tables, 0, W_FLAGS) == tables.SVC_TLS | tables.SVC_XFP == 24


def test_relative_certificate_paths_are_from_the_rules_file(
    tmp_path: Path, certs: dict[str, tuple[Path, Path]]
) -> None:
    crt, key = certs["www"]
    sub = tmp_path / "conf"
    sub.mkdir()
    (sub / "w.crt").write_bytes(crt.read_bytes())
    (sub / "w.key").write_bytes(key.read_bytes())
    (sub / "w.key").chmod(0o600)
    text = POOLS + 'service s listen 10.0.0.1:443 tls { certificate "w.crt" key "w.key"; route a; }'
    res = compile_at(sub, text)
    assert res.ok, res.format()
    assert res.ir is not None
    assert res.ir.services[0].certificates[0].cert == str(sub / "w.crt")


def test_without_reading_the_files_the_names_are_unknown(tmp_path: Path) -> None:
    text = POOLS + 'service s listen 10.0.0.1:443 tls { certificate "no" key "no"; route a; }'
    res = compile_at(tmp_path, text, tls_files=False)
    assert res.ok and res.ir is not None
    assert res.ir.services[0].certificates[0].names == ()
    assert not compile_at(tmp_path, text).ok


def test_errors_name_file_line_and_column(
    tmp_path: Path, certs: dict[str, tuple[Path, Path]]
) -> None:
    www_crt, www_key = certs["www"]
    api_key = certs["api"][1]
    text = POOLS + (
        "service plain listen 10.0.0.1:80 {\n"
        "    x-forwarded-proto on;\n"
        f'    certificate "{www_crt}" key "{www_key}";\n'
        "    route a;\n"
        "}\n"
        "service bare listen 10.0.0.1:443 tls { route a; }\n"
        "service bad listen 10.0.0.1:444 tls {\n"
        f'    certificate "{www_crt}" key "{api_key}";\n'
        f'    certificate "{tmp_path}/missing.crt" key "{www_key}";\n'
        "    x-forwarded-proto maybe;\n"
        "    relay raw;\n"
        "    route a;\n"
        "}\n"
    )
    res = compile_at(tmp_path, text)
    base = POOLS.count("\n")
    got = where(res)
    assert (base + 2, 5, "x-forwarded-proto in a service that is not HTTPS") in got
    assert (base + 3, 5, "certificate in a service that is not HTTPS") in got
    assert (base + 6, 34, "TLS service without a certificate") in got
    key_col = 5 + len(f'certificate "{www_crt}" key ')
    assert (base + 8, key_col, "the key does not match the certificate") in got
    assert (base + 9, 17, "cannot read the certificate file: No such file or directory") in got
    assert (base + 10, 23, "expected 'on' or 'off'") in got
    assert (base + 11, 5, "relay raw in a TLS service") in got
    assert all(d.pos.file.endswith("site.rules") for d in res.errors)


def test_a_key_others_can_read_is_refused_and_one_its_group_can_warned(
    tmp_path: Path, certs: dict[str, tuple[Path, Path]]
) -> None:
    crt, key = certs["www"]
    mine = tmp_path / "k.key"
    mine.write_bytes(key.read_bytes())
    text = POOLS + (
        f'service s listen 10.0.0.1:443 tls {{ certificate "{crt}" key "k.key"; route a; }}'
    )
    mine.chmod(0o644)
    res = compile_at(tmp_path, text)
    assert [d.message for d in res.errors] == ["the key file is readable by every user"]
    assert "chmod 600" in res.errors[0].hint
    mine.chmod(0o640)
    res = compile_at(tmp_path, text)
    assert res.ok
    assert any("readable by its group" in w.message for w in res.warnings)


def test_expiry_is_an_error_and_near_expiry_a_warning(
    tmp_path: Path, certs: dict[str, tuple[Path, Path]]
) -> None:
    crt, key = certs["soon"]
    info = tlscert.inspect(crt, key)
    assert any("expires on" in w for w in info.warnings)
    with pytest.raises(tlscert.CertError, match="expired on"):
        tlscert.inspect(crt, key, now=time.time() + 10 * 86400)
    assert tlscert.inspect(*certs["www"]).warnings == ()


def test_a_name_on_two_certificates_is_a_warning(
    tmp_path: Path, certs: dict[str, tuple[Path, Path]]
) -> None:
    dup = make_cert(tmp_path, "example.com")
    text = tls_service(certs).replace(
        "    route a;", f'    certificate "{dup[0]}" key "{dup[1]}";\n    route a;'
    )
    res = compile_at(tmp_path, text)
    assert res.ok
    assert [(w.message, w.text) for w in res.warnings if "two" in w.message] == [
        ("a name of two certificates", "example.com")
    ]


def test_name_matching_follows_rfc_6125() -> None:
    m = tlscert.name_matches
    assert m("www.example.com", "WWW.Example.com.")
    assert m("*.example.com", "a.example.com")
    assert not m("*.example.com", "example.com")
    assert not m("*.example.com", "a.b.example.com")
    assert not m("www.example.com", "example.com")
    assert tlscert.names_of({"subject": ((("commonName", "Only.CN"),),)}) == ("only.cn",)
    assert tlscert.names_of(
        {"subjectAltName": (("DNS", "a"), ("IP Address", "1.2.3.4"), ("DNS", "A"))}
    ) == ("a",)


def test_the_diff_names_tls(tmp_path: Path, certs: dict[str, tuple[Path, Path]]) -> None:
    plain = compiler.compile_text(POOLS + "service secure listen 10.0.0.1:443 { route a; }")
    tls = compile_at(tmp_path, tls_service(certs, "    x-forwarded-proto on;\n"))
    assert plain.ir is not None and tls.ir is not None
    lines = ir_diff(plain.ir, tls.ir)
    assert "+ service secure: tls" in lines
    assert "+ service secure: x-forwarded-proto on" in lines
    empty = ir.Config((), (), ())
    new = ir_diff(empty, tls.ir)
    assert any(ln.startswith("+ service secure listen 10.0.0.1:443 tls, 1 rule") for ln in new)


@needs_match
def test_validator_takes_tls_and_refuses_forwarded_proto_without_it(
    tmp_path: Path, certs: dict[str, tuple[Path, Path]]
) -> None:
    assert _match is not None
    res = compile_at(tmp_path, tls_service(certs, "    x-forwarded-proto on;\n"))
    assert res.tables is not None
    assert _match.Table(res.tables).service(0)["flags"] == 24  # type: ignore[attr-defined]
    k = tables.SECTIONS.index("service")
    off, _ = struct.unpack_from("<2I", res.tables, (tables.HDR_WORDS + 2 * k) * 4)
    for flags, why in (
        (16, "X-Forwarded-Proto on a service that is not HTTPS"),
        (16 | 8 | 4, "X-Forwarded-Proto on a service that is not HTTPS"),
        (32, "unknown service flags"),
    ):
        b = bytearray(res.tables)
        struct.pack_into("<I", b, (off + W_FLAGS) * 4, flags)
        with pytest.raises(ValueError, match=why):
            _match.Table(bytes(b))


# ---- the daemon, short of kernel TLS -------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def daemon_rules(tmp_path: Path, certs: dict[str, tuple[Path, Path]]) -> Path:
    """A TLS service on a free port of 127.0.0.1."""
    rules = tmp_path / "site.rules"
    rules.write_text(tls_service(certs).replace("10.0.0.1:443", f"127.0.0.1:{free_port()}"))
    return rules


def port_of(rules: Path) -> int:
    """The port of daemon_rules's TLS service."""
    return int(rules.read_text().split("127.0.0.1:")[1].split()[0])


@pytest.fixture
def daemon(tmp_path: Path, daemon_rules: Path) -> Iterator[tuple[tlsd.Daemon, int, Path]]:
    rules = daemon_rules
    port = port_of(rules)
    events = tmp_path / "events.jsonl"
    with open(events, "a", encoding="utf-8") as ev:
        d = tlsd.Daemon(rules, tlsd.Limits(1.0, 16, 3), ev, log=lambda _: None)
        t = threading.Thread(target=d.run)
        t.start()
        deadline = time.monotonic() + 10
        while not d.services or next(iter(d.services.values())).sock is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        try:
            yield d, port, events
        finally:
            d.stop_asked = True
            d.wake_w.send(b"x")
            t.join(10)
            assert not t.is_alive()


def outcomes(events: Path) -> list[str]:
    return [json.loads(ln)["outcome"] for ln in events.read_text().splitlines()]


def test_the_daemon_picks_the_certificate_by_sni(
    tmp_path: Path, certs: dict[str, tuple[Path, Path]]
) -> None:
    rules = tmp_path / "site.rules"
    rules.write_text(tls_service(certs))
    d = tlsd.Daemon(rules, tlsd.Limits(), log=lambda _: None)
    (svc,) = d.load().values()
    assert svc.endpoint == "10.0.0.1:443"

    def pick(name: str | None) -> int:
        """The certificate the daemon's handshakes use (l7ctl._tlsloop)."""
        return _tlsloop.pick([names for names, _ in svc.contexts], name)

    assert pick("WWW.example.com") == 0
    assert pick("example.com.") == 0
    assert pick("api.example.com") == 1
    assert pick("v1.api.example.com") == 1
    assert pick("x.v1.api.example.com") == 0  # none covers it: the default
    assert pick("other.net") == 0
    assert pick(None) == pick("") == 0
    assert svc.contexts[1][0] == ("api.example.com", "*.api.example.com")


_LABEL = st.sampled_from(["a", "b", "c", "example", "*"])
_NAME = st.lists(_LABEL, min_size=1, max_size=4).map(".".join)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.lists(_NAME, min_size=1, max_size=3).map(tuple), min_size=1, max_size=4),
    st.one_of(st.none(), _NAME, _NAME.map(lambda n: n.upper() + ".")),
)
def test_the_daemons_sni_choice_is_tlscerts(
    certificates: list[tuple[str, ...]], sni: str | None
) -> None:
    """The C loop's choice of certificate (l7ctl/ext/tlsloop_ext.c) is
    tlscert.pick's, which `l7ctl route` and the docs describe."""
    assert _tlsloop.pick(certificates, sni) == tlscert.pick(certificates, sni)


@settings(max_examples=50, deadline=None)
@given(st.sampled_from(sorted(ktls.TLS13_CIPHERS)), st.randoms(use_true_random=False))
def test_the_daemons_tls13_receive_keys_are_ktls(cipher: str, rnd: random.Random) -> None:
    """The kernel's blob for a TLS 1.3 client's records, as the C loop
    derives it from the client traffic secret, is l7ctl/ktls.py's (the
    reference the platform tests check against the kernel)."""
    c = ktls.TLS13_CIPHERS[cipher]
    secret = rnd.randbytes(hashlib.new(c.hash_name).digest_size)
    assert _tlsloop.tls13_rx_info(cipher, secret) == ktls.tls13_crypto_info(c, secret)
    with pytest.raises(ValueError):
        _tlsloop.tls13_rx_info(cipher, secret + b"x")  # not the cipher's hash length
    with pytest.raises(ValueError):
        _tlsloop.tls13_rx_info("TLS_AES_128_CCM_SHA256", secret)  # no kernel cipher


def test_a_file_that_does_not_compile_is_refused_by_the_daemon(tmp_path: Path) -> None:
    rules = tmp_path / "site.rules"
    rules.write_text(POOLS + 'service s listen 10.0.0.1:443 tls { certificate "x" key "y"; }')
    d = tlsd.Daemon(rules, tlsd.Limits(), log=lambda _: None)
    with pytest.raises(tlsd.L7ctlError, match="does not compile"):
        d.load()


def test_the_daemon_drops_garbage_stalls_and_a_source_over_its_share(
    daemon: tuple[tlsd.Daemon, int, Path],
) -> None:
    d, port, events = daemon
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"x" * 64)
        with contextlib.suppress(ConnectionResetError):
            assert s.recv(100) == b""
    t0 = time.monotonic()
    held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
    held[0].sendall(b"\x16\x03\x01")  # less than a ClientHello's head
    time.sleep(0.3)
    # reset at accept: connect() itself fails if the reset comes before the
    # client is back from it (a loaded host), else the first read does
    with (
        pytest.raises(ConnectionResetError),
        socket.create_connection(("127.0.0.1", port), timeout=5) as extra,
    ):
        extra.recv(100)
    for s in held:
        with contextlib.suppress(ConnectionResetError):
            assert s.recv(100) == b""
        s.close()
    assert 0.9 <= time.monotonic() - t0 <= 4
    time.sleep(0.1)
    assert outcomes(events) == ["failed", "over-limit", "timeout", "timeout", "timeout"]
    # each event says how long after its accept it came: the timeouts at the 1 s bound
    ms = [json.loads(ln)["ms"] for ln in events.read_text().splitlines()]
    assert ms[1] == 0.0 and all(900 <= t <= 3000 for t in ms[2:]), ms
    assert d.loop.pending() == (0, 0)
    assert d.counters.line().startswith(
        "0 handed over (0 resumed), 1 handshakes failed, 3 timed out, 1 "
    )


def listening(port: int) -> str:
    """ss's lines for the TCP listeners on port, with their processes."""
    ss = ["ss", "-Hltnp", f"sport = :{port}"]
    return subprocess.run(ss, capture_output=True, text=True, check=True).stdout


def test_workers_share_the_address_and_stop_together(tmp_path: Path, daemon_rules: Path) -> None:
    """--workers 2: two processes listen on the address (SO_REUSEPORT); a
    SIGHUP reaches both, SIGTERM stops both (exit 0); a worker that ends on
    its own stops the whole daemon with exit 1, for the service to restart."""
    port = port_of(daemon_rules)

    def start() -> tuple[subprocess.Popen[str], list[int]]:
        p = subprocess.Popen(
            [sys.executable, "-m", "l7ctl", "tlsd", str(daemon_rules), "--workers", "2"],
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 20
        while True:
            kids = Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
            if len(kids) == 1 and listening(port).count("pid=") == 2:
                return p, [int(k) for k in kids]
            assert time.monotonic() < deadline and p.poll() is None
            time.sleep(0.1)

    p, (child,) = start()
    p.send_signal(signal.SIGHUP)
    time.sleep(2)  # each worker's loop reloads before it is asked to stop
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    assert err.count("tlsd: reloaded") == 2 and err.count("tlsd: stopped") == 2
    assert not Path(f"/proc/{child}").exists()

    p, (child,) = start()
    os.kill(child, signal.SIGKILL)
    _, err = p.communicate(timeout=20)
    assert p.returncode == 1
    assert f"worker {child} ended" in err


def test_a_handshake_that_fails_in_openssl_is_forgotten_once(
    daemon: tuple[tlsd.Daemon, int, Path],
) -> None:
    """A ClientHello's head (so OpenSSL takes the connection) followed by
    bytes that are no ClientHello: one event with OpenSSL's reason, nothing
    left pending, the source's count back to zero, nothing ended twice at
    the handshake timeout."""
    d, port, events = daemon
    hello = b"\x16\x03\x01\x00\x40\x01" + b"\0" * 64
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(hello)
        with contextlib.suppress(ConnectionResetError):
            assert s.recv(100)[:1] in (b"", b"\x15")  # nothing, or an alert
    time.sleep(1.5)  # past the handshake timeout (1 s): nothing to end twice
    assert outcomes(events) == ["failed"]
    (ev,) = [json.loads(ln) for ln in events.read_text().splitlines()]
    assert ev["error"].startswith("handshake: ") and ev["client"] == "127.0.0.1", ev
    assert d.loop.pending() == (0, 0)
    assert d.counters.failed == 1


def cpu_seconds(pid: int) -> float:
    """User and system time of process pid so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_out_of_descriptors_the_daemon_rests_and_loses_no_client(
    tmp_path: Path, daemon_rules: Path
) -> None:
    """A daemon at its descriptor limit (EMFILE at accept) takes its
    listener out of the epoll set for 100 ms at a time instead of waking to
    fail again: it spends next to no CPU while the limit holds, says so on
    stderr once, and every client that waited in the backlog is served (here:
    dropped at the handshake timeout, each with its event) once descriptors
    come free."""
    port = port_of(daemon_rules)
    events = tmp_path / "events.jsonl"
    n, slots, timeout = 8, 4, 2.0
    p = subprocess.Popen(
        [sys.executable, "-m", "l7ctl", "tlsd", str(daemon_rules), "--events", str(events),
         "--handshake-timeout", str(timeout), "--max-handshakes-per-source", "100"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    clients: list[socket.socket] = []
    try:
        deadline = time.monotonic() + 20
        while "pid=" not in listening(port):
            assert time.monotonic() < deadline and p.poll() is None
            time.sleep(0.1)
        hard = resource.prlimit(p.pid, resource.RLIMIT_NOFILE)[1]
        in_use = len(os.listdir(f"/proc/{p.pid}/fd"))
        resource.prlimit(p.pid, resource.RLIMIT_NOFILE, (in_use + slots, hard))
        t0 = time.monotonic()
        for _ in range(n):  # less than a ClientHello's head: each waits for its timeout
            s = socket.create_connection(("127.0.0.1", port), timeout=4 * timeout * n / slots)
            s.sendall(b"\x16\x03\x01")
            clients.append(s)
        time.sleep(0.5)  # the first ones accepted, the rest in the backlog
        assert len(os.listdir(f"/proc/{p.pid}/fd")) == in_use + slots
        cpu = cpu_seconds(p.pid)
        time.sleep(1.0)  # all descriptors in use: accept fails with EMFILE
        assert cpu_seconds(p.pid) - cpu < 0.25  # not a loop waking to fail again
        for s in clients:
            with contextlib.suppress(ConnectionResetError):
                assert s.recv(100) == b""
        elapsed = time.monotonic() - t0
    finally:
        for s in clients:
            s.close()
        p.terminate()
        _, err = p.communicate(timeout=20)
    assert p.returncode == 0, err
    assert outcomes(events) == ["timeout"] * n
    # the clients came in waves of `slots`, each at its handshake timeout
    assert elapsed >= timeout * (n // slots) - 0.5
    paused = [ln for ln in err.splitlines() if "(paused for 100 ms)" in ln]
    assert paused and "Too many open files" in paused[0], err
    assert len(paused) <= 1 + elapsed / 10  # once per 10 s at most


# The module's 421 cases (tests/kernel/test_tls.py), as l7ctl route sees them:
# (SNI, Host, answered by the rules).
MISDIRECTION = [
    ("www.example.com", "www.example.com", True),
    ("www.example.com", "example.com", True),  # the same certificate
    ("www.example.com", "WWW.Example.COM.:443", True),
    ("www.example.com", "api.example.com", False),
    ("www.example.com", "v1.api.example.com", False),
    ("api.example.com", "v1.api.example.com", True),  # *.api.example.com
    ("api.example.com", "x.v1.api.example.com", False),
    ("api.example.com", "www.example.com", False),
    ("", "www.example.com", True),  # no SNI: the first certificate
    ("", "api.example.com", False),
    ("other.example.org", "example.com", True),  # a name none has: the first
]


@needs_match
def test_route_answers_421_where_the_module_would(
    tmp_path: Path, certs: dict[str, tuple[Path, Path]], capsys: pytest.CaptureFixture[str]
) -> None:
    from l7ctl import cli

    rules = tmp_path / "site.rules"
    rules.write_text(tls_service(certs))
    for sni, host, served in MISDIRECTION:
        argv = ["route", str(rules), "/index.html", "-H", f"Host: {host}", "--sni", sni, "--json"]
        assert cli.main(argv) == 0
        got = json.loads(capsys.readouterr().out)
        want_cert = str(certs["api" if sni.startswith("api") else "www"][0])
        assert got["tls"]["certificate"] == want_cert, (sni, host)
        assert got["tls"]["host_ok"] is served, (sni, host)
        if served:
            assert (got["action"], got["pool"]) == ("route", "a"), (sni, host)
        else:
            assert (got["action"], got["status"], got["rule"]) == ("misdirected", 421, None)
    # by default the SNI is the request's host, as a browser sends it
    assert cli.main(["route", str(rules), "http://v1.api.example.com/"]) == 0
    out = capsys.readouterr().out
    assert "SNI 'v1.api.example.com' chose" in out and "api.example.com.crt" in out
    assert "action:  route a" in out
    assert cli.main(["route", str(rules), "http://x.v1.api.example.com/"]) == 0
    out = capsys.readouterr().out
    assert "action:  421 Misdirected Request" in out and "rule:    none tried" in out


@needs_match
def test_cases_expect_misdirected_and_name_the_sni(
    tmp_path: Path, certs: dict[str, tuple[Path, Path]], capsys: pytest.CaptureFixture[str]
) -> None:
    from l7ctl import cli

    rules = tmp_path / "site.rules"
    rules.write_text(tls_service(certs))
    cases = tmp_path / "site.cases"
    cases.write_text(
        "".join(
            f"GET /x -H 'Host: {host}' --sni '{sni}' => {'a' if served else 'misdirected'}\n"
            for sni, host, served in MISDIRECTION
        )
        + "GET /x -H 'Host: api.example.com' --sni www.example.com => a\n"
    )
    assert cli.main(["test", str(rules), str(cases)]) == 1
    out = capsys.readouterr().out
    n = len(MISDIRECTION)
    assert f"{n}/{n + 1} cases passed" in out
    assert "expected route a, got misdirected" in out


def test_route_names_a_certificate_it_cannot_read(
    tmp_path: Path, certs: dict[str, tuple[Path, Path]], capsys: pytest.CaptureFixture[str]
) -> None:
    from l7ctl import cli

    crt = tmp_path / "gone.crt"
    crt.write_bytes(certs["www"][0].read_bytes())
    rules = tmp_path / "site.rules"
    rules.write_text(tls_service(certs).replace(str(certs["www"][0]), str(crt)))
    crt.unlink()
    assert cli.main(["route", str(rules), "http://www.example.com/"]) == 1
    err = capsys.readouterr().err
    assert "service secure: cannot read the certificate file" in err and "gone.crt" in err
    assert "421" in err


def test_pick_and_host_ok_are_the_daemons_and_the_modules_rules() -> None:
    www = ("www.example.com", "example.com")
    api = ("api.example.com", "*.api.example.com")
    assert tlscert.pick([www, api], "API.example.com.") == 1
    assert tlscert.pick([www, api], "v1.api.example.com") == 1
    assert tlscert.pick([www, api], "x.v1.api.example.com") == 0
    assert tlscert.pick([www, api], None) == 0
    # an exact name wins over an earlier wildcard
    assert tlscert.pick([("*.example.com",), ("www.example.com",)], "www.example.com") == 1
    assert tlscert.host_ok(api, "v1.api.example.com")
    assert not tlscert.host_ok(api, ".api.example.com")  # an empty label
    assert not tlscert.host_ok(api, "api.example.com.evil")
