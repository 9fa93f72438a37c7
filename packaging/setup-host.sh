#!/usr/bin/env bash
# Idempotent host set-up for agentshim development, tests and the demo (Debian 12, root).
#
# Installs and configures everything the project needs, and says what it did:
#   - Debian packages (podman and its runtimes, BCC, kernel headers, the VM kernel and QEMU, ...)
#   - /lib/modules/$(uname -r)/build when missing (linked to Debian's headers: LOUD warning when
#     they do not match the running kernel)
#   - tracefs at /sys/kernel/tracing
#   - /etc/containers/containers.conf that works on this host (runc on hybrid cgroups, cgroupfs
#     manager without systemd, lowered default ulimits where raising them is refused)
#   - a virtual environment (.venv) from /usr/bin/python3 with --system-site-packages (so the
#     Debian bcc module imports), the project installed in it (editable) with its test extras
#
#   - a zram swap device (a quarter of memory, lz4) when the host has no swap, for offloading
#     frozen tool calls (AGENTSHIM_ZRAM=0 to skip)
#
# Environment: VENV (default: <repo>/.venv), AGENTSHIM_SKIP_APT=1 to skip package installation,
# AGENTSHIM_ZRAM=0 to leave swap alone.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$REPO/.venv}
STAMP_DIR=/var/lib/agentshim-setup

say() { printf 'setup-host: %s\n' "$*"; }
loud() {
    printf '\n' >&2
    printf 'setup-host: !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n' >&2
    printf 'setup-host: !!! %s\n' "$@" >&2
    printf 'setup-host: !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\n' >&2
}
die() { printf 'setup-host: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and writes /etc, /lib/modules)"
[ -r /etc/debian_version ] || die "only Debian 12 (bookworm) is supported by this script"

# --- 1. Debian packages -------------------------------------------------------------------
PKGS=(
    podman runc crun conmon catatonit fuse-overlayfs slirp4netns uidmap iptables
    python3 python3-venv python3-pip python3-bpfcc python3-yaml python3-psutil python3-click
    python3-numpy
    bpftool linux-headers-amd64 linux-image-amd64 qemu-system-x86 busybox-static kmod
    make gcc libc6-dev git rpm
)
missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done
if [ "${AGENTSHIM_SKIP_APT:-0}" = 1 ]; then
    say "AGENTSHIM_SKIP_APT=1: not installing packages (missing: ${missing[*]:-none})"
elif [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    say "Debian packages: all ${#PKGS[@]} present"
fi

# --- 2. kernel headers for BCC --------------------------------------------------------------
KREL=$(uname -r)
MODDIR=/lib/modules/$KREL
if [ -e "$MODDIR/build/Makefile" ]; then
    say "kernel headers: $MODDIR/build present"
else
    hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n 1 || true)
    common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$hdr" ] && [ -n "$common" ] || die "no /usr/src/linux-headers-*-amd64 found (install linux-headers-amd64)"
    mkdir -p "$MODDIR"
    ln -sfn "$hdr" "$MODDIR/build"
    ln -sfn "$common" "$MODDIR/source"
    hver=${hdr#/usr/src/linux-headers-}
    if [ "$hver" != "$KREL" ]; then
        loud "kernel headers DO NOT MATCH the running kernel: running $KREL, headers $hver" \
             "linked $MODDIR/build -> $hdr (and source -> $common)" \
             "BCC compiles against them; agentshim's BPF C uses helpers and tracepoint/kprobe" \
             "arguments only, never kernel struct fields, so this is safe for agentshim's programs"
    else
        say "kernel headers: linked $MODDIR/build -> $hdr"
    fi
fi

# --- 3. tracefs ------------------------------------------------------------------------------
if [ -d /sys/kernel/tracing/events ]; then
    say "tracefs: mounted at /sys/kernel/tracing"
else
    mount -t tracefs tracefs /sys/kernel/tracing || die "cannot mount tracefs at /sys/kernel/tracing"
    say "tracefs: mounted at /sys/kernel/tracing"
fi

# --- 4. containers.conf ---------------------------------------------------------------------
if grep -qw memory /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
    CGMODE=v2
elif grep -q ' - cgroup ' /proc/self/mountinfo; then
    CGMODE=hybrid
else
    CGMODE=v2
fi
if [ "$CGMODE" = hybrid ]; then RUNTIME=runc; else RUNTIME=crun; fi
if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ]; then CGMGR=systemd; EVLOG=journald
else CGMGR=cgroupfs; EVLOG=file; fi
capeff=$(awk '/^CapEff:/ {print $2}' /proc/self/status)
ULIMITS=""
if (( (16#$capeff >> 24) & 1 )); then :; else
    ULIMITS='default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]'
fi
CONF=/etc/containers/containers.conf
want=$(cat <<EOF
# Written by agentshim's packaging/setup-host.sh (cgroups: $CGMODE). Edit freely; remove the
# first line to stop the script from rewriting this file.
[containers]
$ULIMITS

[engine]
runtime = "$RUNTIME"
cgroup_manager = "$CGMGR"
events_logger = "$EVLOG"
EOF
)
if [ -e "$CONF" ] && ! head -n 1 "$CONF" | grep -q "agentshim's packaging/setup-host.sh"; then
    say "containers.conf: $CONF exists and is not ours; leaving it alone"
elif [ -e "$CONF" ] && [ "$(cat "$CONF")" = "$want" ]; then
    say "containers.conf: up to date (runtime=$RUNTIME, cgroup_manager=$CGMGR)"
else
    mkdir -p /etc/containers
    printf '%s\n' "$want" > "$CONF"
    say "containers.conf: wrote $CONF (runtime=$RUNTIME, cgroup_manager=$CGMGR${ULIMITS:+, lowered ulimits})"
fi

# --- 4b. zram swap ---------------------------------------------------------------------------
# Where agentshim offloads the memory of frozen tool calls. A compressed RAM swap device sized at
# a quarter of memory (at most 8G), lz4. Left alone when the host has swap already, when
# /dev/zram0 is taken, or with AGENTSHIM_ZRAM=0.
if [ "${AGENTSHIM_ZRAM:-1}" = 0 ]; then
    say "zram: skipped (AGENTSHIM_ZRAM=0)"
elif [ "$(awk 'NR > 1' /proc/swaps | wc -l)" -gt 0 ]; then
    say "zram: swap present already ($(awk 'NR > 1 {printf "%s ", $1}' /proc/swaps)); leaving it"
else
    [ -e /sys/block/zram0 ] || modprobe zram 2>/dev/null || true
    if [ ! -e /sys/block/zram0 ]; then
        say "zram: no zram device on this kernel; no swap (agentshim works without it)"
    elif [ "$(cat /sys/block/zram0/disksize)" != 0 ]; then
        say "zram: /dev/zram0 is configured by someone else; leaving it"
    else
        mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
        size=$(( mem_kb / 4 * 1024 )); max=$(( 8 << 30 )); (( size > max )) && size=$max
        algo=lz4; grep -qw lz4 /sys/block/zram0/comp_algorithm || algo=$(tr -d '[]' < /sys/block/zram0/comp_algorithm | awk '{print $1}')
        echo "$algo" > /sys/block/zram0/comp_algorithm
        echo "$size" > /sys/block/zram0/disksize
        if mkswap /dev/zram0 >/dev/null && swapon -p 100 /dev/zram0; then
            say "zram: swap on /dev/zram0 ($(( size >> 20 )) MiB, $algo)"
        else
            echo 1 > /sys/block/zram0/reset || true
            say "zram: could not turn /dev/zram0 on; no swap (agentshim works without it)"
        fi
    fi
fi

# --- 5. virtual environment -----------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    say "creating virtual environment $VENV (system site packages, for bcc)"
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi
"$VENV/bin/python" -c 'import bcc' 2>/dev/null || die "bcc does not import in $VENV (python3-bpfcc missing?)"
mkdir -p "$STAMP_DIR"
stamp="$STAMP_DIR/venv-$(sha256sum "$REPO/pyproject.toml" | cut -c1-16)-$(echo "$VENV" | sha256sum | cut -c1-8)"
if [ -e "$stamp" ] && "$VENV/bin/python" -c 'import agentshim, pytest' 2>/dev/null && [ -x "$VENV/bin/vng" ]; then
    say "virtual environment: $VENV up to date"
else
    say "installing agentshim (editable) and test tools into $VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -e "$REPO[test]" virtme-ng
    touch "$stamp"
fi

say "done: cgroups $CGMODE, runtime $RUNTIME, venv $VENV"
