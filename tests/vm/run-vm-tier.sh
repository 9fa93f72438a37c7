#!/usr/bin/env bash
# The pure cgroup v2 tier: boots Debian's packaged kernel under virtme-ng (QEMU, no KVM) with a
# copy-on-write view of this machine's root filesystem and runs the tests marked `v2` inside.
# Usage: tests/vm/run-vm-tier.sh [OUT_DIR] [pytest args...]
# Writes OUT_DIR/vm.xml (JUnit) and OUT_DIR/vm.log. Needs: packaging/setup-host.sh done.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
OUT=$(realpath -m "${1:-$REPO/build/test-results}")
shift || true
VENV=${VENV:-$REPO/.venv}
mkdir -p "$OUT"
rm -f "$OUT/vm.xml" "$OUT/vm.rc"
kernel=$(ls /boot/vmlinuz-*-amd64 2>/dev/null | sort -V | tail -n 1 || true)
[ -n "$kernel" ] || { echo "vm tier: no /boot/vmlinuz-*-amd64 (install linux-image-amd64)" >&2; exit 2; }
export PATH="$VENV/bin:$PATH"
command -v vng >/dev/null || { echo "vm tier: vng missing (pip install virtme-ng)" >&2; exit 2; }
echo "vm tier: booting $(basename "$kernel") under virtme-ng (software emulation, ~20-60 s)"
targets=${*:-tests}  # test paths or -k expressions given, else the whole v2 tier
inner="cd '$REPO' && mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null; \
'$VENV/bin/python' -m pytest -p no:cacheprovider -m v2 --junitxml='$OUT/vm.xml' $targets; echo \$? > '$OUT/vm.rc'"
set +e
timeout 1200 vng --run "$kernel" --disable-kvm --cpus 2 --memory 2G --rwdir "$OUT" \
    --exec "$inner" 2>&1 | tee "$OUT/vm.log"
vrc=${PIPESTATUS[0]}
set -e
if [ ! -s "$OUT/vm.rc" ]; then
    echo "vm tier: the VM did not finish its tests (vng exit $vrc); see $OUT/vm.log" >&2
    exit 3
fi
exit "$(cat "$OUT/vm.rc")"
