"""The apply diffs, without a kernel: IPVS operations and the L7 IR difference."""

from __future__ import annotations

from pathlib import Path

from l7ctl import compiler, ipvs, ir
from l7ctl.apply import ir_diff

BASE = """
pool images { scheduler wrr; server 10.0.1.11:80 weight 3; server 10.0.1.12:80; }
pool cgi { server 10.0.2.11:80; }
service web listen 10.0.0.1:80 {
    route images if path prefix "/img/";
    route cgi;
}
virtual tcp 10.0.0.1:443 { scheduler sh; persistence 300; server 10.0.1.11:443; }
virtual udp 10.0.0.1:53 { server 10.0.2.11:53 weight 2; forward dr; }
"""


def compile_text(tmp_path: Path, text: str, name: str = "a.rules") -> compiler.Result:
    p = tmp_path / name
    p.write_text(text)
    res = compiler.compile_file(p)
    assert res.ok, res.format()
    return res


def test_desired_state_from_virtual_blocks(tmp_path: Path) -> None:
    res = compile_text(tmp_path, BASE)
    assert res.ir is not None
    st = ipvs.desired(res.ir.virtuals)
    tls = st[("tcp", "10.0.0.1", 443)]
    assert (tls.scheduler, tls.persistence) == ("sh", 300)
    assert tls.dests == (ipvs.Dest("10.0.1.11", 443, 1, "nat"),)
    dns = st[("udp", "10.0.0.1", 53)]
    assert (dns.scheduler, dns.persistence) == ("wlc", 0)
    assert dns.dests == (ipvs.Dest("10.0.2.11", 53, 2, "dr"),)


def test_ipvs_diff_empty_to_full_and_back(tmp_path: Path) -> None:
    res = compile_text(tmp_path, BASE)
    assert res.ir is not None
    want = ipvs.desired(res.ir.virtuals)
    ops = ipvs.diff({}, want)
    assert [o.kind for o in ops] == ["add-service", "add-dest", "add-service", "add-dest"]
    assert ipvs.diff(want, want) == []
    back = ipvs.diff(want, {})
    assert sorted(o.kind for o in back) == ["del-service", "del-service"]
    assert str(ops[0]) == "+ virtual tcp 10.0.0.1:443 scheduler sh persistence 300s"


def test_ipvs_diff_changes_only_what_differs(tmp_path: Path) -> None:
    old = ipvs.desired(compile_text(tmp_path, BASE).ir.virtuals)  # type: ignore[union-attr]
    new_text = BASE.replace("scheduler sh; persistence 300;", "scheduler rr;").replace(
        "server 10.0.2.11:53 weight 2;", "server 10.0.2.11:53 weight 5; server 10.0.2.12:53;"
    )
    new = ipvs.desired(compile_text(tmp_path, new_text, "b.rules").ir.virtuals)  # type: ignore[union-attr]
    ops = ipvs.diff(old, new)
    kinds = sorted((o.kind, str(o.dest.addr) if o.dest else "") for o in ops)
    assert kinds == [("add-dest", "10.0.2.12"), ("set-dest", "10.0.2.11"), ("set-service", "")]
    text = "\n".join(map(str, ops))
    assert "scheduler sh persistence 300s -> scheduler rr" in text
    assert "weight 2 forward dr -> weight 5 forward dr" in text


def test_ir_diff_names_pools_servers_and_rules(tmp_path: Path) -> None:
    a = compile_text(tmp_path, BASE).ir
    b_text = (
        BASE.replace("server 10.0.1.12:80;", "server 10.0.1.13:80;")
        .replace("weight 3", "weight 4")
        .replace("route cgi;", 'route cgi if path prefix "/cgi-bin/";\n    route images;')
        .replace("pool cgi {", "pool static { server 10.0.3.11:80; }\npool cgi {")
    )
    b = compile_text(tmp_path, b_text, "b.rules").ir
    assert a is not None and b is not None
    lines = ir_diff(a, b)
    assert "- pool images: server 10.0.1.12:80" in lines
    assert "+ pool images: server 10.0.1.13:80 weight 1 up" in lines
    assert "~ pool images: server 10.0.1.11:80 weight 3 up -> weight 4 up" in lines
    assert any(x.startswith("+ pool static") for x in lines)
    assert any(x.startswith("- service web: rule route cgi") for x in lines)
    assert any(x.startswith("+ service web: rule route images") for x in lines)
    assert ir_diff(a, a) == []


def test_ir_diff_names_limits_and_x_forwarded_for(tmp_path: Path) -> None:
    a = compile_text(tmp_path, BASE).ir
    b_text = "limit connections 5000;\n" + BASE.replace(
        'route images if path prefix "/img/";',
        "x-forwarded-for replace; limit source-connections 10; limit source-rate 50;\n"
        '    limit backlog 2048;\n    route images if path prefix "/img/";',
    )
    b = compile_text(tmp_path, b_text, "b.rules").ir
    c_text = b_text.replace("5000", "6000").replace("replace", "on")
    c = compile_text(tmp_path, c_text, "c.rules").ir
    assert a is not None and b is not None and c is not None
    lines = ir_diff(a, b)
    assert "+ limit connections 5000" in lines
    assert "- service web: x-forwarded-for off" in lines
    assert "+ service web: x-forwarded-for replace" in lines
    assert "+ service web: limit source-connections 10" in lines
    assert "+ service web: limit source-rate 50" in lines
    assert "+ service web: limit backlog 2048" in lines
    lines = ir_diff(b, c)
    assert "~ limit connections 5000 -> 6000" in lines
    assert "+ service web: x-forwarded-for append" in lines  # 'on' is append
    assert not any("source-rate" in x for x in lines)
    assert "- limit connections 6000 (back to the module's default)" in ir_diff(c, a)
    # a first apply lists the namespace limit too
    empty = ir.Config((), (), ())
    assert "+ limit connections 5000" in ir_diff(empty, b)


def test_ir_diff_names_checks_persistence_ids_and_log(tmp_path: Path) -> None:
    a = compile_text(tmp_path, BASE).ir
    b_text = (
        BASE.replace(
            "pool images { scheduler wrr;",
            'pool images { scheduler wrr; check http "GET /health"; persist cookie SRV;',
        )
        .replace("server 10.0.2.11:80;", "server 10.0.2.11:80 id cgi1;")
        .replace("    route cgi;", "    log sample 4;\n    route cgi;")
    )
    b = compile_text(tmp_path, b_text, "b.rules").ir
    c_text = b_text.replace('check http "GET /health";', "check tcp interval 5s;").replace(
        "persist cookie SRV;", ""
    )
    c = compile_text(tmp_path, c_text, "c.rules").ir
    assert a is not None and b is not None and c is not None
    lines = ir_diff(a, b)
    check = (
        '+ pool images: check http "GET /health" expect 200-399 interval 2000ms '
        "timeout 1000ms rise 2 fall 3"
    )
    assert check in lines
    assert "+ pool images: persist cookie SRV" in lines
    assert "~ pool cgi: server 10.0.2.11:80 weight 1 up -> weight 1 up id cgi1" in lines
    assert "- service web: log on" in lines and "+ service web: log sample 4" in lines
    lines = ir_diff(b, c)
    assert (
        '~ pool images: check http "GET /health" expect 200-399 interval 2000ms timeout 1000ms '
        "rise 2 fall 3 -> tcp interval 5000ms timeout 1000ms rise 2 fall 3"
    ) in lines
    assert "- pool images: persist cookie SRV" in lines
    assert ir_diff(c, c) == []
