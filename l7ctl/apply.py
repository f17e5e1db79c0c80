"""`l7ctl apply`: compile a rules file and make it the running configuration.

Two kernel parts take a rules file: ktcpvs (services, pools, rules: one
compiled blob) and IPVS (the file's `virtual` blocks).  Apply ends with both
on the new configuration or both on the old one:

1. compile; read the running blob and source (ktcpvs) and the IPVS state;
2. ktcpvs: push the new blob in one transaction (begin, chunks, commit; an
   atomic swap at commit).  If that fails, nothing changed anywhere: IPVS has
   not been touched yet;
3. IPVS: apply the difference between its state and the file's virtual
   services.  If an IPVS step fails, IPVS is brought back to the state read in
   step 1 and the previous blob is pushed back (or the configuration flushed
   if there was none), then the error is reported.

Applying what already runs changes nothing and says so.  The ktcpvs side also
counts as changed when a server's runtime weight or state (`l7ctl server
set`) differs from the file: apply restores what the file says.

A file without `virtual` blocks leaves IPVS alone (see l7ctl.ipvs).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

from l7ctl import compiler, ipvs, ir
from l7ctl.errors import L7ctlError
from l7ctl.netlink import Client


@dataclass(frozen=True)
class ApplyResult:
    changed: bool
    generation: int | None  # the new generation when the ktcpvs side changed and was applied
    services: int
    size: int
    warnings: list[str]
    l7_changed: bool = False
    l7_diff: list[str] = field(default_factory=list)  # human-readable lines
    ipvs_ops: list[ipvs.Op] = field(default_factory=list)
    virtuals: int = 0
    tls_services: int = 0  # served by l7ctl tlsd, which reads the file itself

    def describe(self) -> list[str]:
        """The difference as lines for the operator (dry run and apply)."""
        out: list[str] = []
        if self.l7_changed:
            out.append("ktcpvs (L7):")
            out += ["  " + line for line in self.l7_diff]
        if self.ipvs_ops:
            out.append("IPVS (L4):")
            out += ["  " + str(op) for op in self.ipvs_ops]
        return out


def compile_or_raise(path: str | Path) -> compiler.Result:
    res = compiler.compile_file(path)
    if not res.ok or res.tables is None:
        raise L7ctlError(
            f"{path}: {len(res.errors)} error(s), nothing applied\n{res.format()}".rstrip()
        )
    return res


# -- the L7 difference ----------------------------------------------------------


def _pool_line(p: ir.Pool) -> str:
    return f"pool {p.name} scheduler {p.scheduler}, {len(p.servers)} server(s)"


def _server_line(s: ir.Server) -> str:
    return f"server {s.endpoint()} weight {s.weight} {s.state}" + (f" id {s.id}" if s.id else "")


def _pool_settings(p: ir.Pool) -> list[str]:
    """A pool's health check and persistence, as the diff shows them."""
    return [str(x) for x in (p.check, p.persist) if x is not None]


def _service_settings(s: ir.Service) -> list[str]:
    out = [f"listen {ir_endpoint(s.addr, s.port)}"]
    if s.tls:
        out.append("tls")
        out += [f'certificate "{c.cert}" key "{c.key}"' for c in s.certificates]
        out.append(f"x-forwarded-proto {'on' if s.xfp else 'off'}")
    out.append("relay raw" if s.raw else f"x-forwarded-for {s.xff}")
    out.append(f"log sample {s.log_sample}" if s.log == "sample" else f"log {s.log}")
    out += [f"limit {k} {v}" for k, v in sorted(s.limits.items())]
    out += [f"timeout {k} {v}ms" for k, v in sorted(s.timeouts_ms.items())]
    return out


def ir_endpoint(addr: ir.IPAddress, port: int) -> str:
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"


def ir_diff(old: ir.Config, new: ir.Config) -> list[str]:
    """Namespace limits, services, pools, servers and rules added (+), removed (-)
    or changed (~)."""
    out: list[str] = []
    for lim in ir.NS_LIMITS:
        was, now = old.limits.get(lim), new.limits.get(lim)
        if was == now:
            continue
        if was is None:
            out.append(f"+ limit {lim} {now}")
        elif now is None:
            out.append(f"- limit {lim} {was} (back to the module's default)")
        else:
            out.append(f"~ limit {lim} {was} -> {now}")
    op = {p.name: p for p in old.pools}
    np_ = {p.name: p for p in new.pools}
    for name, p in op.items():
        if name not in np_:
            out.append(f"- {_pool_line(p)}")
    for name, p in np_.items():
        q = op.get(name)
        if q is None:
            out.append(f"+ {_pool_line(p)}")
            out += [f"+ pool {name}: {line}" for line in _pool_settings(p)]
            out += [f"+ pool {name}: {_server_line(s)}" for s in p.servers]
            continue
        if q.scheduler != p.scheduler:
            out.append(f"~ pool {name}: scheduler {q.scheduler} -> {p.scheduler}")
        for kind, before, after in (
            ("check", q.check, p.check),
            ("persist", q.persist, p.persist),
        ):
            if before == after:
                continue
            if before is None:
                out.append(f"+ pool {name}: {after}")
            elif after is None:
                out.append(f"- pool {name}: {before}")
            else:
                out.append(f"~ pool {name}: {before} -> {str(after).removeprefix(kind + ' ')}")
        qs = {(s.addr, s.port): s for s in q.servers}
        ps = {(s.addr, s.port): s for s in p.servers}
        out += [f"- pool {name}: server {s.endpoint()}" for k, s in qs.items() if k not in ps]
        for k, s in ps.items():
            t = qs.get(k)
            if t is None:
                out.append(f"+ pool {name}: {_server_line(s)}")
            elif (t.weight, t.state, t.id) != (s.weight, s.state, s.id):
                after_s = f"weight {s.weight} {s.state}" + (f" id {s.id}" if s.id else "")
                out.append(f"~ pool {name}: {_server_line(t)} -> {after_s}")
    osv = {s.name: s for s in old.services}
    nsv = {s.name: s for s in new.services}
    for name in osv:
        if name not in nsv:
            out.append(f"- service {name}")
    for name, sv in nsv.items():
        o = osv.get(name)
        if o is None:
            out.append(f"+ service {name} listen {ir_endpoint(sv.addr, sv.port)}"
                       + (" tls" if sv.tls else "") + ", "
                       + ("relay raw, " if sv.raw else "")
                       + f"{len(sv.rules)} rule(s)")  # fmt: skip
            continue
        a, b = _service_settings(o), _service_settings(sv)
        for line in difflib.unified_diff(a, b, lineterm="", n=0):
            if line[:1] in "+-" and not line.startswith(("+++", "---")):
                out.append(f"{line[0]} service {name}: {line[1:]}")
        ra, rb = [r.text for r in o.rules], [r.text for r in sv.rules]
        for line in difflib.unified_diff(ra, rb, lineterm="", n=0):
            if line[:1] in "+-" and not line.startswith(("+++", "---")):
                out.append(f"{line[0]} service {name}: rule {line[1:]}")
    return out


def _blob_diff(old: bytes, new: bytes) -> str:
    first = next((i for i, (x, y) in enumerate(zip(old, new, strict=False)) if x != y), None)
    if first is None:
        first = min(len(old), len(new))
    return f"compiled tables {len(old)} -> {len(new)} bytes, first difference at byte {first}"


def l7_diff(
    new: compiler.Result, running: tuple[bytes, str] | None, runtime: list[str]
) -> list[str]:
    """What changes on the ktcpvs side, in words."""
    assert new.ir is not None and new.tables is not None
    if running is None:
        empty = ir.Config((), (), ())
        return ["(no configuration running)", *ir_diff(empty, new.ir)]
    blob, source = running
    lines: list[str] = []
    if blob != new.tables:
        old = None
        if source and Path(source).is_file():
            prev = compiler.compile_file(source, tls_files=False)
            if prev.ok and prev.tables == blob:
                old = prev.ir
        if old is None:
            lines.append(
                f"the running configuration is from an unknown source "
                f"({source or 'no file recorded'} does not compile to it): "
                + _blob_diff(blob, new.tables)
            )
        else:
            lines += ir_diff(old, new.ir) or [_blob_diff(blob, new.tables)]
    return lines + runtime


def _runtime_drift(c: Client, cfg: ir.Config) -> list[str]:
    """Servers whose runtime weight or state (l7ctl server set) differs from the file."""
    want = {(p.name, s.endpoint()): (s.weight, s.state) for p in cfg.pools for s in p.servers}
    out = []
    for o in c.stats():
        if o.kind != "server":
            continue
        w = want.get((o.name, o.address))
        if w is not None and (o.weight, o.state) != w:
            out.append(
                f"~ pool {o.name}: server {o.address} runtime weight {o.weight} {o.state} "
                f"-> file weight {w[0]} {w[1]}"
            )
    return out


# -- apply ------------------------------------------------------------------------


def apply_file(path: str | Path, *, dry_run: bool = False) -> ApplyResult:
    """Compile `path` and push it to ktcpvs and IPVS of the caller's namespace."""
    res = compile_or_raise(path)
    blob = res.tables
    assert blob is not None and res.ir is not None
    warnings = [d.format(res.sources) for d in res.warnings]
    nsvc = len(res.ir.services)
    virtuals = res.ir.virtuals
    with Client() as c:
        running = c.running_config()
        # A configuration the module runs but does not dump back (see
        # _rollback): compared as unknown, and not restorable.
        unreadable = running is None and c.info().service_count > 0
        drift = _runtime_drift(c, res.ir) if running is not None and running[0] == blob else []
        l7_changed = running is None or running[0] != blob or bool(drift)
        l7_lines = l7_diff(res, running, drift) if l7_changed else []
        if unreadable:
            l7_lines[0] = "(the running configuration could not be read back from the module)"

        lvs: ipvs.Client | None = ipvs.Client() if virtuals else None
        try:
            before = lvs.read() if lvs is not None else {}
            ops = ipvs.diff(before, ipvs.desired(virtuals)) if lvs is not None else []
            result = ApplyResult(
                l7_changed or bool(ops), None, nsvc, len(blob), warnings,
                l7_changed, l7_lines, ops, len(virtuals),
                sum(s.tls for s in res.ir.services),
            )  # fmt: skip
            if dry_run or not result.changed:
                return result
            gen = None
            if l7_changed:
                gen = c.push_config(blob, source=str(Path(path).resolve()))
            if lvs is not None and ops:
                try:
                    lvs.apply(ops)
                except L7ctlError as e:
                    raise _rollback(
                        c, lvs, before, l7_changed and not unreadable, running, e
                    ) from None
        finally:
            if lvs is not None:
                lvs.close()
    return ApplyResult(
        True, gen, nsvc, len(blob), warnings, l7_changed, l7_lines, ops, len(virtuals)
    )


class RolledBack(L7ctlError):
    """An IPVS step failed after the ktcpvs commit; both sides are back on the old config."""


def _rollback(
    c: Client,
    lvs: ipvs.Client,
    before: ipvs.State,
    l7_changed: bool,
    running: tuple[bytes, str] | None,
    cause: L7ctlError,
) -> L7ctlError:
    problems = []
    try:
        lvs.restore(before)
    except L7ctlError as e:
        problems.append(f"restoring IPVS failed too: {e}")
    if l7_changed:
        try:
            if running is None:
                c.flush()
            else:
                c.push_config(running[0], source=running[1])
        except L7ctlError as e:
            problems.append(f"restoring the previous ktcpvs configuration failed too: {e}")
    if not l7_changed and running is None:  # ktcpvs changed but its old config was unreadable
        problems.append("the previous ktcpvs configuration could not be read back to restore it")
    if problems:
        return L7ctlError(f"{cause}; " + "; ".join(problems))
    return RolledBack(f"{cause}; rolled back: ktcpvs and IPVS are on the previous configuration")
