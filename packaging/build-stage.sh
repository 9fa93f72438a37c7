#!/usr/bin/env bash
# Shared by packaging/build-deb.sh and packaging/rpm/agentshim.spec: the version, a clean source
# export, and the installed file tree of the agentshim package (docs/packaging.md lists it).
#
#   build-stage.sh version [deb|rpm]       the package version (from agentshim/__init__.py)
#   build-stage.sh python                  the interpreter that can import agentshim.cli
#   build-stage.sh export DIR              this checkout's files, without what git ignores
#   build-stage.sh stage DESTDIR UNITDIR   install the tree into DESTDIR (run from a source tree
#                                          whose wrapper/agentshim-bash is built)
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIB=/usr/share/agentshim            # private module directory (see docs/packaging.md)
LIBEXEC=/usr/libexec/agentshim
HOOKS_DIR=/usr/share/containers/oci/hooks.d
PROFILES_DIR=/etc/agentshim/profiles
DOC_DIR=/usr/share/doc/agentshim

die() { printf 'build-stage: error: %s\n' "$*" >&2; exit 1; }

# The one place the version lives is agentshim/__init__.py. Package managers sort "~" before
# anything, so PEP 440 pre-releases (0.2.0rc1, 0.2.0.dev3) become 0.2.0~rc1, 0.2.0~dev3.
python_version() {
    local v
    v=$(sed -n 's/^__version__ *= *["'"'"']\([^"'"'"']*\)["'"'"'].*/\1/p' "$SRC/agentshim/__init__.py")
    [ -n "$v" ] || die "no __version__ = \"...\" line in $SRC/agentshim/__init__.py"
    printf '%s\n' "$v"
}

package_version() {
    python_version | sed -E 's/\.?(a|b|rc|dev)([0-9]+)/~\1\2/; s/\.post([0-9]+)/+post\1/'
}

export_tree() {
    local dest=$1
    mkdir -p "$dest"
    if git -C "$SRC" rev-parse --git-dir >/dev/null 2>&1; then
        # the work tree minus what git ignores (build/, .venv/, bytecode); deleted files skipped
        (cd "$SRC" && git ls-files -z --cached --others --exclude-standard | while IFS= read -r -d '' f; do
            [ -e "$f" ] && printf '%s\0' "$f"; done | tar --null -T - -cf -) | tar -xf - -C "$dest"
    else
        (cd "$SRC" && tar --exclude=./.venv --exclude=./build --exclude=./dist --exclude=./.git \
            --exclude='__pycache__' --exclude='*.pyc' -cf - .) | tar -xf - -C "$dest"
    fi
}

# A launcher: the system python3, isolated (-I: no PYTHON* variables, no script directory, no
# user site), importing agentshim from $LIB only. PYTHONPATH and PYTHONSAFEPATH are set for the
# children agentshim starts as `python3 -m agentshim...` (the prestart hook starts agentshimd
# that way), so they import the same copy and never one in their working directory.
launcher() {
    local out=$1 module=$2
    install -d "$(dirname "$out")"
    cat > "$out" <<EOF
#!/usr/bin/python3 -I
# $(basename "$out"): installed by the agentshim package; the code is in $LIB.
import os
import sys

sys.path.insert(0, "$LIB")
os.environ["PYTHONPATH"] = "$LIB"
os.environ["PYTHONSAFEPATH"] = "1"

from $module import main  # noqa: E402

sys.exit(main())
EOF
    chmod 0755 "$out"
}

# The interpreter that imports agentshim.cli for the man pages: $PYTHON, the checkout's venv,
# else the system python3.
man_python() {
    local venv=${VENV:-$SRC/.venv}
    if [ -n "${PYTHON:-}" ]; then echo "$PYTHON"
    elif [ -x "$venv/bin/python" ]; then echo "$venv/bin/python"
    else echo /usr/bin/python3; fi
}

stage() {
    local dest=$1 unitdir=$2 f
    [ -x "$SRC/wrapper/agentshim-bash" ] || die "wrapper/agentshim-bash is not built (make -C wrapper)"
    if readelf -l "$SRC/wrapper/agentshim-bash" | grep -q INTERP; then
        die "wrapper/agentshim-bash is not statically linked"
    fi
    rm -rf "$dest"
    # Python code, without bytecode (compiled by the maintainer scripts, removed with them)
    (cd "$SRC" && find agentshim -type f -name '*.py' ! -path '*/__pycache__/*') | sort |
        while read -r f; do install -D -m 0644 "$SRC/$f" "$dest$LIB/$f"; done
    # package data: the demo's traces (agentshim demo)
    (cd "$SRC" && find agentshim/replay/demo_traces -type f) | sort |
        while read -r f; do install -D -m 0644 "$SRC/$f" "$dest$LIB/$f"; done
    # the BPF C agentshim/bpf/loader.py compiles at run time
    install -D -m 0644 "$SRC/bpf/memevents.bpf.c" "$dest$LIB/bpf/memevents.bpf.c"
    launcher "$dest/usr/bin/agentshim" agentshim.cli
    launcher "$dest/usr/bin/agentshim-runtime" agentshim.runtime_shim
    launcher "$dest/usr/bin/agentshim-hook" agentshim.hooks
    launcher "$dest/usr/sbin/agentshimd" agentshim.daemon
    install -D -m 0755 "$SRC/wrapper/agentshim-bash" "$dest$LIBEXEC/agentshim-bash"
    strip --strip-unneeded "$dest$LIBEXEC/agentshim-bash"
    install -D -m 0755 "$SRC/packaging/agentshim-maint" "$dest$LIBEXEC/agentshim-maint"
    install -d "$dest$HOOKS_DIR"
    for f in "$SRC"/hooks/*.json.in; do
        sed 's|@AGENTSHIM@|/usr/bin/agentshim|g' "$f" > "$dest$HOOKS_DIR/$(basename "${f%.in}")"
        chmod 0644 "$dest$HOOKS_DIR/$(basename "${f%.in}")"
    done
    install -D -m 0644 "$SRC/packaging/systemd/agentshimd.service" "$dest$unitdir/agentshimd.service"
    for f in "$SRC"/packaging/profiles/*.yaml; do
        install -D -m 0644 "$f" "$dest$PROFILES_DIR/$(basename "$f")"
    done
    local man
    man=$(mktemp -d)
    "$(man_python)" "$SRC/packaging/build-man.py" "$man" "$(package_version)" ||
        die "generating the man pages failed (they need click, pyyaml, numpy: packaging/setup-host.sh, or set PYTHON)"
    for f in "$man"/*.[1-8]; do
        install -D -m 0644 "$f" "$dest/usr/share/man/man${f##*.}/$(basename "$f")"
        gzip -9n "$dest/usr/share/man/man${f##*.}/$(basename "$f")"
    done
    rm -rf "$man"
    install -D -m 0644 "$SRC/README.md" "$dest$DOC_DIR/README.md"
    for f in "$SRC"/docs/*.md; do
        install -D -m 0644 "$f" "$dest$DOC_DIR/docs/$(basename "$f")"
    done
}

case "${1:-}" in
    version)
        case "${2:-python}" in
            python) python_version ;;
            deb|rpm) package_version ;;
            *) die "version: deb, rpm or python" ;;
        esac ;;
    python) man_python ;;
    export) [ $# = 2 ] || die "usage: build-stage.sh export DIR"; export_tree "$2" ;;
    stage) [ $# = 3 ] || die "usage: build-stage.sh stage DESTDIR UNITDIR"; stage "$2" "$3" ;;
    *) die "usage: build-stage.sh version [deb|rpm] | python | export DIR | stage DESTDIR UNITDIR" ;;
esac
