#!/bin/bash
# make kernel-test: the kernel suite once per kernel, one boot each, one after
# the other, results in build/vm/KVER/; then a summary per kernel (tests
# passed, failed and skipped from the JUnit XML, duration); fails if any
# kernel failed.
#
#   scripts/kernel-test.sh KERNEL...     (series such as 6.1 6.12, or full versions)
#
# INSTALL_TEST=1 (make test sets it): before the first boot, make install runs
# on this host -- the DKMS build for every installed kernel, l7ctl's virtual
# environment, ktcpvs.service and /etc/ktcpvs/site.rules; nothing is loaded
# here -- and every guest runs tests/kernel/test_install.py against that
# installation (modprobe from DKMS, the unit's commands).  make uninstall
# follows the last boot, also when a boot fails or the run is interrupted, so
# the machine is left as it was and later runs load build/KVER/ktcpvs.ko.
# VM_MEMDEBUG=0 boots without memory debugging (tests/vm.py --no-memdebug).
set -euo pipefail
cd "$(dirname "$0")/.."

[ $# -gt 0 ] || { echo "usage: scripts/kernel-test.sh KERNEL..." >&2; exit 2; }
py=.venv/bin/python

# The test installation: one make test at a time holds it (a lock), and it
# is marked, so that one a killed run left behind (no trap runs on SIGKILL)
# is recognised and removed by the next run, while an installation someone
# made by hand is never touched.
LOCK=/run/lock/ktcpvs-install-test.lock
MARK=/opt/ktcpvs/.installed-by-make-test

undo_test_install() {
	echo "kernel-test: undoing the test installation"
	local mok
	mok=$(sed -n 's/^mok=//p' "$MARK" 2>/dev/null || true)
	scripts/install.sh uninstall
	if [ "$mok" = created ]; then
		rm -f /var/lib/dkms/mok.key /var/lib/dkms/mok.pub
	fi
}

if [ "${INSTALL_TEST:-0}" = 1 ]; then
	mkdir -p "$(dirname "$LOCK")"
	exec {lock_fd}>"$LOCK"
	if ! flock -n "$lock_fd"; then
		echo "kernel-test: another make test holds the test installation: waiting for it"
		flock "$lock_fd"
	fi
	if scripts/install.sh status >/dev/null; then
		if [ -e "$MARK" ]; then
			echo "kernel-test: an interrupted make test left its installation behind"
			undo_test_install
		else
			echo "kernel-test: ktcpvs is installed on this machine (scripts/install.sh status);" \
				"the install test would replace and then remove it: run make uninstall first," \
				"or make kernel-test without INSTALL_TEST=1" >&2
			exit 1
		fi
	fi
	# Marked before anything is installed; undone after the last boot,
	# whatever happens: the installation, and the signing key DKMS creates
	# on first use if this run created it.
	mkdir -p "$(dirname "$MARK")"
	if [ -e /var/lib/dkms/mok.key ]; then echo mok=kept; else echo mok=created; fi >"$MARK"
	trap undo_test_install EXIT
	scripts/install.sh install
	# The installed unit as systemd reads it (the guests have no systemd).
	systemd-analyze verify /etc/systemd/system/ktcpvs.service
	export KTCPVS_INSTALL_TEST=1
fi

kvers=()
for k in "$@"; do kvers+=("$(scripts/kver.sh "$k")"); done

# The kernels boot side by side (KERNEL_TEST_JOBS=2, the default) or one
# after the other (1).  A guest keeps about one of the host's CPUs busy: its
# tests wait on sockets, timers and timeouts much of the time (measured:
# docs/testing.md), so two guests on two CPUs take little longer than one.
# Each guest's output is prefixed with its kernel and kept whole in
# build/vm/KVER.log.
jobs=${KERNEL_TEST_JOBS:-2}
mkdir -p build/vm
run_one() {
	local kv=$1 rc=0
	echo "kernel-test: kernel $kv: the kernel suite, results in build/vm/$kv/"
	$py tests/vm.py --kernel "$kv" --out "build/vm/$kv" -- tests/kernel \
		>"build/vm/$kv.log" 2>&1 || rc=$?
	return $rc
}
failed=0
pids=()
tails=()
for kv in "${kvers[@]}"; do
	: >"build/vm/$kv.log"
	if [ "$jobs" -le 1 ]; then
		run_one "$kv" &
		pid=$!
		tail -n +1 --pid=$pid -F "build/vm/$kv.log" 2>/dev/null | sed -u "s/^/[$kv] /" &
		wait $pid || failed=1
		wait $! 2>/dev/null || true
		continue
	fi
	run_one "$kv" &
	pids+=($!)
	tail -n +1 --pid=$! -F "build/vm/$kv.log" 2>/dev/null | sed -u "s/^/[$kv] /" &
	tails+=($!)
done
for pid in "${pids[@]}"; do
	wait "$pid" || failed=1
done
for t in "${tails[@]}"; do
	wait "$t" 2>/dev/null || true
done

# The installation goes before the summary, so that the summary is the
# last thing printed (where a CI log's tail shows it).
if [ "${INSTALL_TEST:-0}" = 1 ]; then
	trap - EXIT
	undo_test_install >build/vm/uninstall.log 2>&1 ||
		{ cat build/vm/uninstall.log; echo "kernel-test: make uninstall failed" >&2; failed=1; }
	echo "kernel-test: test installation undone (build/vm/uninstall.log)"
fi

echo
echo "kernel-test: summary"
$py - "${kvers[@]}" <<'EOF'
import json
import sys
from pathlib import Path

total = [0, 0, 0]
for kv in sys.argv[1:]:
    p = Path("build/vm") / kv / "summary.json"
    if not p.exists():
        print(f"{kv}: no result (the run stopped before the guest booted)")
        continue
    s = json.loads(p.read_text())
    counts = [s.get("passed", 0), s.get("failed", 0), s.get("skipped", 0)]
    total = [a + b for a, b in zip(total, counts)]
    debug = " ".join(s["memdebug"]) or "no memory debugging"
    verdict = "ok" if s["ok"] else "FAILED: " + "; ".join(x.splitlines()[0] for x in s["problems"])
    cpu = f" ({s['cpu_seconds']} s CPU)" if "cpu_seconds" in s else ""
    print(f"  kernel {kv}: {s['seconds']} s{cpu}, {debug}; {verdict}")
    print(f"{kv}: {counts[0]} passed, {counts[1]} failed, {counts[2]} skipped")
    for f in s.get("failures", []):
        print(f"    FAILED {f}")
    for x in s["problems"]:  # what a crashed guest's console said: tests/vm.py crash_excerpt
        if x.startswith("the guest did not finish"):
            print("\n".join(x.splitlines()[1:]))
print(f"total: {total[0]} passed, {total[1]} failed, {total[2]} skipped")
EOF
exit $failed
