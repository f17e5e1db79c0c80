"""`l7ctl apply`: compile a rules file and make it the running configuration.

The whole configuration goes to the kernel in one transaction (begin, chunks,
commit) and is swapped in atomically at commit: the kernel ends either fully
on the new configuration or, on any failure, fully on the old one.
Applying the configuration that already runs changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from l7ctl import compiler
from l7ctl.errors import L7ctlError
from l7ctl.netlink import Client


@dataclass(frozen=True)
class ApplyResult:
    changed: bool
    generation: int | None  # the new generation when changed and applied
    services: int
    size: int
    warnings: list[str]


def compile_or_raise(path: str | Path) -> compiler.Result:
    res = compiler.compile_file(path)
    if not res.ok or res.tables is None:
        raise L7ctlError(
            f"{path}: {len(res.errors)} error(s), nothing applied\n{res.format()}".rstrip()
        )
    return res


def apply_file(path: str | Path, *, dry_run: bool = False) -> ApplyResult:
    """Compile `path` and push it to the module of the caller's namespace."""
    res = compile_or_raise(path)
    blob = res.tables
    assert blob is not None and res.ir is not None
    warnings = [d.format(res.sources) for d in res.warnings]
    nsvc = len(res.ir.services)
    with Client() as c:
        running = c.running_config()
        if running is not None and running[0] == blob:
            return ApplyResult(False, None, nsvc, len(blob), warnings)
        if dry_run:
            return ApplyResult(True, None, nsvc, len(blob), warnings)
        gen = c.push_config(blob, source=str(Path(path).resolve()))
    return ApplyResult(True, gen, nsvc, len(blob), warnings)
