#!/usr/bin/env bash
# `make deb`: dist/agentshim_<version>_<arch>.deb with dpkg-deb from a staged tree (no
# debhelper). The tree is packaging/build-stage.sh's; the control file, maintainer scripts and
# copyright are in packaging/debian/. Work files go to build/deb/ (or $WORK_DIR), the package to
# dist/ (or $DIST_DIR).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STAGE="$REPO/packaging/build-stage.sh"
OUT=${DIST_DIR:-$REPO/dist}
WORK=${WORK_DIR:-$REPO/build/deb}

VERSION=$("$STAGE" version deb)
ARCH=$(dpkg --print-architecture)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || date +%s)}

rm -rf "$WORK"
mkdir -p "$WORK" "$OUT"
"$STAGE" export "$WORK/src"
make -s -C "$WORK/src/wrapper" agentshim-bash
ROOT=$WORK/root
"$WORK/src/packaging/build-stage.sh" stage "$ROOT" /lib/systemd/system

# Debian's documentation files
DOC=$ROOT/usr/share/doc/agentshim
install -m 0644 "$REPO/packaging/debian/copyright" "$DOC/copyright"
{
    printf 'agentshim (%s) unstable; urgency=medium\n\n' "$VERSION"
    printf '  * Built from %s.\n\n' "$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo 'a source tree')"
    printf ' -- agentshim maintainers <maintainers@agentshim.invalid>  %s\n' \
        "$(date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n > "$DOC/changelog.Debian.gz"

# control data
install -d -m 0755 "$ROOT/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$ROOT" | cut -f1)
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/g" -e "s/@SIZE@/$size/" \
    "$REPO/packaging/debian/control.in" > "$ROOT/DEBIAN/control"
for s in postinst prerm postrm; do
    install -m 0755 "$REPO/packaging/debian/$s" "$ROOT/DEBIAN/$s"
done
(cd "$ROOT" && find etc -type f | sort | sed 's|^|/|') > "$ROOT/DEBIAN/conffiles"
(cd "$ROOT" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -print0 | sort -z |
    xargs -0 md5sum | sed 's| \./| |') > "$ROOT/DEBIAN/md5sums"
chmod 0644 "$ROOT/DEBIAN/control" "$ROOT/DEBIAN/conffiles" "$ROOT/DEBIAN/md5sums"
find "$ROOT" -type d -exec chmod 0755 {} +

DEB=$OUT/agentshim_${VERSION}_${ARCH}.deb
dpkg-deb --root-owner-group -Zxz --build "$ROOT" "$DEB" >/dev/null
echo "built $DEB"
