#!/bin/bash
# Runs inside the QEMU guest (started by tests/vm.py): load the module, run
# the kernel suite or a script, unload, and save what the host checks in
# build/vm/ (the only directory the guest can write to on the host).
#   tests/guest.sh [--out DIR] -- PYTEST_ARGS...
#   tests/guest.sh [--out DIR] --script FILE
set -u
cd "$(dirname "$0")/.."
out=build/vm
mode=pytest
if [ "${1:-}" = --out ]; then
	out=$2
	shift 2
fi
if [ "${1:-}" = --script ]; then
	mode=script
	script=$2
	shift 2
elif [ "${1:-}" = -- ]; then
	shift
fi

export KTCPVS_IN_VM=1
export PATH="$PWD/.venv/bin:$PATH"
export PYTHONDONTWRITEBYTECODE=1
export HYPOTHESIS_STORAGE_DIRECTORY=/tmp/hypothesis
export HOME=/tmp

# Kernel tests build their own topologies; these are the modules they use.
for m in veth ip_vs; do modprobe "$m" || echo "guest: modprobe $m failed"; done

export KTCPVS_KO="${KTCPVS_KO:-$PWD/build/ktcpvs.ko}"
insmod "$KTCPVS_KO"
echo $? >$out/insmod.rc

if [ "$mode" = script ]; then
	bash "$script"
else
	pytest -p no:cacheprovider -o addopts= --durations=8 --junitxml=$out/junit.xml "$@"
fi
echo $? >$out/run.rc

# The module must unload, also after the tests left whatever they left.
rmmod ktcpvs
echo $? >$out/rmmod.rc
dmesg >$out/dmesg.txt
cat /proc/sys/kernel/tainted >$out/tainted
echo done >$out/done
