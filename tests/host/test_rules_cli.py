"""l7ctl check / route / test, end to end through the CLI entry point."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from rules_helpers import needs_match

from l7ctl import cli

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEMO = str(EXAMPLES / "images-vs-cgi.rules")


def run(
    argv: list[str], capsys: pytest.CaptureFixture[str], stdin: bytes | None = None
) -> tuple[int, str, str]:
    if stdin is not None:
        old = sys.stdin
        sys.stdin = io.TextIOWrapper(io.BytesIO(stdin))
        try:
            rc = cli.main(argv)
        finally:
            sys.stdin = old
    else:
        rc = cli.main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_check_ok(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(["check", DEMO], capsys)
    assert rc == 0
    assert "ok: 1 service(s), 5 rule(s), 3 pool(s), 1 virtual service(s)" in out


def test_check_errors_text_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "bad.rules"
    f.write_text(
        "pool a { server 1.2.3.4:80; }\nservice s listen 1.2.3.4:80 {\n  route b;\n  route a;\n}\n"
    )
    rc, out, err = run(["check", str(f)], capsys)
    assert rc == 1
    assert f"{f}:3:9: error: unknown pool: 'b'" in err
    assert "hint: pools: a" in err
    assert "1 error(s)" in err
    rc, out, _ = run(["check", "--json", str(f)], capsys)
    assert rc == 1
    d = json.loads(out)
    assert d["ok"] is False
    assert d["errors"][0]["line"] == 3 and d["errors"][0]["column"] == 9
    assert d["errors"][0]["message"] == "unknown pool"


def test_check_warnings_only_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "w.rules"
    f.write_text(
        "pool a { server 1.2.3.4:80; }\nservice s listen 1.2.3.4:80 {\n"
        '  route a if path prefix "/img";\n  route a if path prefix "/img/";\n  route a;\n}\n'
    )
    rc, out, _ = run(["check", str(f)], capsys)
    assert rc == 0
    assert "warning: rule is shadowed by the rule at line 3" in out
    assert "1 warning(s)" in out


def test_check_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(["check", "/nonexistent.rules"], capsys)
    assert rc == 1 and "cannot read" in err


@needs_match
def test_route_explains(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(["route", DEMO, "GET", "http://www.example.com/photos/cat.JPG"], capsys)
    assert rc == 0
    assert "images-vs-cgi.rules:32: route images if type image/*;" in out
    assert "action:  route images" in out
    assert "pool:    images (wlc): 10.0.1.11:80 weight 3, 10.0.1.12:80" in out
    assert "because: type image/*" in out
    assert "engine:  C matcher" in out


@needs_match
def test_route_default_and_block_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(["route", DEMO, "/about.html"], capsys)
    assert rc == 0 and "route static" in out and "no condition" in out
    rc, out, _ = run(["route", DEMO, "/", "-H", "User-Agent: sqlmap/1.0", "--json"], capsys)
    d = json.loads(out)
    assert d["action"] == "block" and d["status"] == 403 and d["agree"]
    assert d["rule"]["line"] == 31


@needs_match
def test_route_normalizes_path(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(["route", DEMO, "http://www.example.com/x/..//%63gi-bin/./a"], capsys)
    assert "path='/cgi-bin/a'" in out and "route cgi" in out


@needs_match
def test_route_raw(capsys: pytest.CaptureFixture[str]) -> None:
    raw = b"POST /app/form.cgi HTTP/1.1\r\nHost: www.example.com\r\nContent-Length: 0\r\n\r\n"
    rc, out, _ = run(["route", DEMO, "--raw"], capsys, stdin=raw)
    assert rc == 0 and "route cgi" in out


def test_route_raw_refused(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("l7ctl._http")
    raw = b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"
    rc, _, err = run(["route", DEMO, "--raw"], capsys, stdin=raw)
    assert rc == 1 and "refuses this request with 400" in err


def test_route_bad_rules_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "bad.rules"
    f.write_text("service s listen 1.2.3.4:80 { route nowhere; }\n")
    rc, _, err = run(["route", str(f), "/"], capsys)
    assert rc == 1 and "unknown pool" in err


@needs_match
def test_test_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(["test", DEMO, str(EXAMPLES / "images-vs-cgi.cases")], capsys)
    assert rc == 0, out
    assert "cases passed; rule coverage 5/5" in out
    cases = tmp_path / "c.cases"
    cases.write_text(
        "# comment\nGET http://www.example.com/a.png => images\n"
        "GET http://www.example.com/a.cgi => static\n"
    )
    rc, out, _ = run(["test", DEMO, str(cases)], capsys)
    assert rc == 1
    assert "FAIL" in out and "expected route static, got route cgi" in out
    assert "1/2 cases passed; rule coverage 2/5" in out
    assert "not exercised:" in out and "block 403" in out


def test_test_bad_cases_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = tmp_path / "c.cases"
    cases.write_text("GET / => nosuchpool\n")
    rc, _, err = run(["test", DEMO, str(cases)], capsys)
    assert rc == 1 and "c.cases:1: bad expectation" in err


@pytest.mark.parametrize("name", sorted(p.stem for p in EXAMPLES.glob("*.cases")))
@needs_match
def test_example_cases_pass(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(
        ["test", str(EXAMPLES / f"{name}.rules"), str(EXAMPLES / f"{name}.cases")], capsys
    )
    assert rc == 0, out
