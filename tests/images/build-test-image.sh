#!/usr/bin/env bash
# Builds agentshim's test images from this host's files (no registry, no mirror needed):
#
#   build-test-image.sh            localhost/agentshim-test:latest     bash + busybox (~6 MB)
#   build-test-image.sh --python   localhost/agentshim-test-py:latest  the same + python3 with its
#                                                                      standard library (~60 MB)
#   build-test-image.sh [--python] --tar FILE    write the rootfs tarball only (no podman)
#
# The rootfs is /usr-merged like Debian 12 (/bin, /lib, /lib64 -> usr/...): bash with its shared
# libraries, busybox-static with every applet linked (bash itself is never replaced), and with
# --python /usr/bin/python3.11 with its libraries (ldd of the interpreter and of every
# lib-dynload module) and /usr/lib/python3.11 without its tests.
#
# Idempotent: an image is rebuilt only when missing, when its io.agentshim.test-image label is
# not this script's VERSION, or with FORCE=1. PODMAN (word-split) is the podman command, e.g.
# PODMAN="podman --root /tmp/r --runroot /tmp/rr --storage-driver vfs" inside the VM.
set -euo pipefail
VERSION=2
PYTHON=0
TAR=""
while [ $# -gt 0 ]; do
    case $1 in
        --python) PYTHON=1 ;;
        --tar) TAR=$2; shift ;;
        *) echo "usage: $0 [--python] [--tar FILE]" >&2; exit 2 ;;
    esac
    shift
done
if [ "$PYTHON" = 1 ]; then
    IMAGE=${IMAGE:-localhost/agentshim-test-py:latest}
else
    IMAGE=${IMAGE:-localhost/agentshim-test:latest}
fi
read -r -a PM <<< "${PODMAN:-podman}"
LABEL=io.agentshim.test-image

if [ -z "$TAR" ] && [ "${FORCE:-0}" != 1 ] &&
   [ "$("${PM[@]}" image inspect --format "{{index .Config.Labels \"$LABEL\"}}" "$IMAGE" \
        2>/dev/null || true)" = "$VERSION" ]; then
    echo "test image: $IMAGE present"; exit 0
fi

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/usr/bin "$root"/usr/lib "$root"/tmp "$root"/proc "$root"/sys "$root"/dev \
         "$root"/etc "$root"/root "$root"/work "$root"/run
ln -s usr/bin "$root/bin"
ln -s usr/lib "$root/lib"
ln -s usr/lib "$root/lib64"

copy_libs() {  # the shared libraries of each ELF file given, at their paths in the rootfs
    local lib
    for lib in $(ldd "$@" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3}
                                             $1 ~ /^\// && $2 ~ /^\(/ {print $1}' | sort -u); do
        [ -e "$root$lib" ] && continue
        mkdir -p "$root$(dirname "$lib")"
        cp -L "$lib" "$root$lib"
    done
}

cp /usr/bin/bash "$root/usr/bin/bash"
copy_libs /usr/bin/bash
cp /bin/busybox "$root/usr/bin/busybox"
for t in $(/bin/busybox --list); do
    [ -e "$root/usr/bin/$t" ] || ln -s busybox "$root/usr/bin/$t"
done

if [ "$PYTHON" = 1 ]; then
    py=$(readlink -f /usr/bin/python3)
    pyname=$(basename "$py")
    stdlib=/usr/lib/$pyname
    [ -d "$stdlib" ] || { echo "no standard library at $stdlib" >&2; exit 1; }
    cp "$py" "$root/usr/bin/$pyname"
    ln -s "$pyname" "$root/usr/bin/python3"
    ln -s "$pyname" "$root/usr/bin/python"
    copy_libs "$py"
    mkdir -p "$root$stdlib"
    tar -C "$stdlib" --exclude=./test --exclude=./idlelib --exclude=./tkinter \
        --exclude=./turtledemo --exclude=./dist-packages --exclude=./site-packages -c . |
        tar -C "$root$stdlib" -x
    copy_libs "$stdlib"/lib-dynload/*.so
fi

echo "root:x:0:0:root:/root:/bin/bash" > "$root/etc/passwd"
echo "root:x:0:" > "$root/etc/group"
chmod 1777 "$root/tmp"

if [ -n "$TAR" ]; then
    tar -C "$root" -c . > "$TAR"
    echo "test image: rootfs of $IMAGE written to $TAR"
    exit 0
fi
old=$("${PM[@]}" image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
tar -C "$root" -c . | "${PM[@]}" import -q --change "LABEL $LABEL=$VERSION" - "$IMAGE" >/dev/null
if [ -n "$old" ]; then  # the previous build, untagged now: drop it unless a container uses it
    "${PM[@]}" rmi "$old" >/dev/null 2>&1 || true
fi
echo "test image: built $IMAGE"
