#!/usr/bin/env bash
# Builds localhost/agentshim-test:latest, a small image assembled from this host's binaries
# (no registry needed): bash with its shared libraries (at /usr/bin/bash, /bin -> usr/bin as on
# Debian 12) and busybox-static for the usual tools. Idempotent: rebuilt only when missing or
# when FORCE=1.
set -euo pipefail
IMAGE=${IMAGE:-localhost/agentshim-test:latest}
if [ "${FORCE:-0}" != 1 ] && podman image exists "$IMAGE" 2>/dev/null; then
    echo "test image: $IMAGE present"; exit 0
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/usr/bin "$root"/usr/lib "$root"/tmp "$root"/proc "$root"/sys "$root"/dev \
         "$root"/etc "$root"/root "$root"/work
ln -s usr/bin "$root/bin"
ln -s usr/lib "$root/lib"
ln -s usr/lib "$root/lib64"
cp /usr/bin/bash "$root/usr/bin/bash"
for lib in $(ldd /usr/bin/bash | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
cp /bin/busybox "$root/usr/bin/busybox"
for t in sh ls cat echo sleep head tail tr wc grep sed mkdir rm cp mv true false env id ps \
         seq dd sort uniq cut touch date yes awk kill; do
    ln -sf busybox "$root/usr/bin/$t"
done
echo "root:x:0:0:root:/root:/bin/bash" > "$root/etc/passwd"
echo "root:x:0:" > "$root/etc/group"
chmod 1777 "$root/tmp"
tar -C "$root" -c . | podman import -q - "$IMAGE" >/dev/null
echo "test image: built $IMAGE"
