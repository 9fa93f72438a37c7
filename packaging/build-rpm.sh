#!/usr/bin/env bash
# `make rpm`: dist/agentshim-<version>-1.<arch>.rpm and the SRPM, built with rpmbuild (Debian's
# `rpm` package works) from packaging/rpm/agentshim.spec and a source tarball of this checkout.
# Work files go to build/rpm/ (the rpmbuild _topdir; or $WORK_DIR), the packages to dist/ (or
# $DIST_DIR).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STAGE="$REPO/packaging/build-stage.sh"
OUT=${DIST_DIR:-$REPO/dist}
TOP=${WORK_DIR:-$REPO/build/rpm}

command -v rpmbuild >/dev/null || { echo "build-rpm: rpmbuild missing (apt-get install rpm)" >&2; exit 1; }
VERSION=$("$STAGE" version rpm)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || date +%s)}

rm -rf "$TOP"
mkdir -p "$TOP"/{SOURCES,SPECS,BUILD,RPMS,SRPMS} "$OUT"
"$STAGE" export "$TOP/agentshim-$VERSION"
tar -C "$TOP" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
    -czf "$TOP/SOURCES/agentshim-$VERSION.tar.gz" "agentshim-$VERSION"
rm -rf "${TOP:?}/agentshim-$VERSION"
{ printf '%%global agentshim_version %s\n' "$VERSION"; cat "$REPO/packaging/rpm/agentshim.spec"; } \
    > "$TOP/SPECS/agentshim.spec"

# --nodeps: BuildRequires name Fedora packages, which Debian's rpm database does not list.
# __os_install_post: Debian's brp-compress breaks under dash (`read -d`); the staged tree is
# already stripped and its man pages compressed.
rpmbuild --quiet --define "_topdir $TOP" --define "__python3 $("$STAGE" python)" --nodeps \
    --define '__os_install_post %{nil}' -ba "$TOP/SPECS/agentshim.spec"
for f in "$TOP"/RPMS/*/*.rpm "$TOP"/SRPMS/*.rpm; do
    cp "$f" "$OUT/"
    echo "built $OUT/$(basename "$f")"
done
