#!/bin/bash
# Runs inside the QEMU guest (started by tests/vm.py): load the module, run
# the kernel suite or a script, unload, and save what the host checks in the
# results directory (the only directory the guest can write to on the host).
#   tests/guest.sh --out DIR -- PYTEST_ARGS...
#   tests/guest.sh --out DIR --script FILE
# $KTCPVS_KO is the module to load (tests/vm.py passes build/KVER/ktcpvs.ko).
#
# Every step's outcome is recorded (record NAME CMD... writes its exit code
# to NAME), and the script goes on after a failed step: the host reads them.
set -euo pipefail
cd "$(dirname "$0")/.."
out=
mode=pytest
if [ "${1:-}" = --out ]; then
	out=$2
	shift 2
fi
if [ -z "$out" ]; then
	echo "guest: --out DIR is required" >&2
	exit 2
fi
if [ "${1:-}" = --script ]; then
	mode=script
	script=$2
	shift 2
elif [ "${1:-}" = -- ]; then
	shift
fi

# One run per boot: should this script be started again (it was seen once,
# after the suite had ended), it does nothing.
if [ -e "$out/run.rc" ]; then
	echo "guest: $out/run.rc exists: this boot's run is over" >&2
	exit 0
fi

export KTCPVS_IN_VM=1
export PATH="$PWD/.venv/bin:$PATH"
export PYTHONDONTWRITEBYTECODE=1
export HYPOTHESIS_STORAGE_DIRECTORY=/tmp/hypothesis
export HOME=/tmp

# Python in the guest's memory: tests/vm.py packed the interpreter's library
# and the packages the guest uses into one tar file (tests/stage.sh has why);
# it is unpacked into a tmpfs and bind-mounted over their paths.
if [ -n "${KTCPVS_STAGE_TAR:-}" ]; then
	staged_at=$SECONDS
	tests/stage.sh unpack "$KTCPVS_STAGE_TAR"
	echo "guest: Python staged in memory ($(du -sh /tmp/stage | cut -f1), $((SECONDS - staged_at)) s)"
fi

echo "guest: kernel $(uname -r)"

record() {
	local name=$1 rc=0
	shift
	"$@" || rc=$?
	echo "$rc" >"$out/$name"
}

# What memory debugging this boot really runs with (tests/vm.py compares it
# with what it asked for): the command line, SLUB's debug flags on a
# kmalloc cache (F sanity_checks, Z red_zone, P poison; U store_user, not asked for) and
# KFENCE's sample interval where the kernel has KFENCE.
{
	echo "cmdline=$(cat /proc/cmdline)"
	for f in sanity_checks red_zone poison store_user; do
		echo "kmalloc-64/$f=$(cat /sys/kernel/slab/kmalloc-64/$f 2>/dev/null)"
	done
	if [ -e /sys/module/kfence/parameters/sample_interval ]; then
		echo "kfence/sample_interval=$(cat /sys/module/kfence/parameters/sample_interval)"
	fi
} >"$out/memdebug.txt"

# A ktcpvs installed on the host (make test installs one for
# tests/kernel/test_install.py) must not load by itself: the genetlink core
# asks modprobe for the family's alias when a client looks the family up, and
# would load the DKMS copy where a test expects "module not loaded".  A
# blacklist ignores the aliases only; `modprobe ktcpvs` by name still works.
# (The guest's /etc is a scratch overlay: nothing reaches the host.)
echo "blacklist ktcpvs" >/etc/modprobe.d/ktcpvs-tests.conf

# Kernel tests build their own topologies; these are the modules they use.
for m in veth ip_vs; do modprobe "$m" || echo "guest: modprobe $m failed"; done

if [ -z "${KTCPVS_KO:-}" ]; then
	echo "guest: KTCPVS_KO (the module to load) is not set" >&2
	exit 2
fi
export KTCPVS_KO
record insmod.rc insmod "$KTCPVS_KO"
# The module in the kernel is the file asked for, not a copy installed
# elsewhere (DKMS): same srcversion.
want=$(modinfo -F srcversion "$KTCPVS_KO" 2>/dev/null || true)
have=$(cat /sys/module/ktcpvs/srcversion 2>/dev/null || true)
if [ -n "$want" ] && [ "$want" = "$have" ]; then
	echo ok >"$out/module.check"
else
	echo "srcversion $have loaded, $KTCPVS_KO has $want" >"$out/module.check"
fi

# Where the module's code is, to read addresses of a stalled guest against
# (tests/vm_monitor.py 'info registers -a', from the host).
cat /sys/module/ktcpvs/sections/.text >"$out/ktcpvs.text" 2>/dev/null || true

# Every 30 s, what the guest is doing, into $out/heartbeat.txt (the host
# reads it while the guest runs): a heartbeat that stops says user space no
# longer runs at all; one that goes on says which task is stuck, and where.
heartbeat() {
	while sleep 30; do
		{
			echo "$(date -u +%T) up $(cut -d' ' -f1 /proc/uptime) s, load $(cut -d' ' -f1-4 /proc/loadavg)"
			ps -eo pid,stat,pcpu,time,wchan:28,comm --sort=-pcpu | head -9
			for pid in $(ps -eo pid= --sort=-pcpu | head -4); do
				echo "--- $pid $(cat "/proc/$pid/comm" 2>/dev/null)"
				cat "/proc/$pid/stack" 2>/dev/null
			done
			echo "--- softirqs"
			cat /proc/softirqs
			echo "--- kernel log, last lines"
			dmesg | tail -15
		} >"$out/heartbeat.tmp" 2>&1 && mv "$out/heartbeat.tmp" "$out/heartbeat.txt"
	done
}
heartbeat &
heartbeat_pid=$!

# Where a test may leave figures it measured (FILE.json), beside the results.
export KTCPVS_RESULTS="$out"
if [ "$mode" = script ]; then
	record run.rc bash "$script"
else
	record run.rc pytest -p no:cacheprovider -o addopts= --durations=8 \
		--junitxml="$out/junit.xml" "$@"
fi

kill "$heartbeat_pid" 2>/dev/null || true

# What the tests left behind, for the report: namespaces, memory, processes.
{
	echo "namespaces: $(ip netns list | wc -l)"
	free -m
	ps -eo pid,rss,etime,args --sort=-rss | head -20
} >"$out/leftovers.txt" 2>&1

# The module must unload, also after the tests left whatever they left --
# within two minutes; else the blocked tasks' stacks go to the kernel log
# (sysrq w) for the report, and the unload counts as failed.
record rmmod.rc timeout 120 rmmod ktcpvs
if [ "$(cat "$out/rmmod.rc")" = 124 ]; then
	echo w >/proc/sysrq-trigger
	sleep 2
fi
dmesg >"$out/dmesg.txt"
cat /proc/sys/kernel/tainted >"$out/tainted"
echo done >"$out/done"
