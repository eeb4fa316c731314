#!/usr/bin/env bash
# Builds SQLite's speedtest1 benchmark (the SQLite project's test/speedtest1.c) against
# Debian's libsqlite3-dev, for the speedtest1 chaos campaign and tests/speedtest1_test.ts.
#
#   scripts/speedtest1.sh          # prints the binary's path; builds it first when missing
#
# The source comes from Debian's source package of sqlite3 (same version as the installed
# library) and is never kept in the repository. The build goes to
# ${SLUICE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice}/speedtest1/ (outside the work tree);
# a second run finds it there and does nothing. apt's own configuration is not changed: the
# deb-src entries are made from the configured deb entries in a private apt state directory.
#
# The binary is speedtest1 unchanged, except that it sets a busy timeout when the environment
# variable SPEEDTEST1_BUSY_TIMEOUT (ms) is set: the application then follows sluice's advice to
# set one. Without the variable it behaves exactly as upstream's.
#
# Exit status 1 with the reason on stderr when it cannot be built (no apt, no network, no
# compiler): the tests that need it are then reported skipped.
set -euo pipefail

cache="${SLUICE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice}/speedtest1"
bin="$cache/speedtest1"
if [ -x "$bin" ] && "$bin" --help 2>&1 | grep -q '^-- Speedtest1 for SQLite'; then
  echo "$bin"
  exit 0
fi

fail() {
  echo "speedtest1.sh: cannot build speedtest1: $*" >&2
  exit 1
}

command -v apt-get >/dev/null || fail "apt-get not found (Debian's source package is needed)"
if [ ! -e /usr/include/sqlite3.h ] || ! command -v gcc >/dev/null || ! command -v xz >/dev/null; then
  [ "$(id -u)" = 0 ] || fail "libsqlite3-dev, gcc and xz-utils are missing and this is not root"
  apt-get update -qq >/dev/null || fail "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    libsqlite3-dev gcc libc6-dev xz-utils >/dev/null || fail "apt-get install failed"
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/sluice-speedtest1-XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/parts" "$work/lists/partial" "$work/cache/archives/partial" "$work/src"

# deb-src twins of the configured deb entries (deb822 .sources files and one-line .list files).
for f in /etc/apt/sources.list.d/*.sources; do
  if [ -e "$f" ]; then sed 's/^Types:.*$/Types: deb-src/' "$f" >"$work/parts/$(basename "$f")"; fi
done
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
  if [ -e "$f" ]; then sed -n 's/^deb /deb-src /p' "$f" >"$work/parts/$(basename "$f").list"; fi
done
apt_private=(
  -o "Dir::Etc::SourceList=/dev/null" -o "Dir::Etc::SourceParts=$work/parts"
  -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache"
)
apt-get "${apt_private[@]}" update -qq >/dev/null 2>"$work/update.log" ||
  fail "apt-get update of the deb-src lists failed: $(tail -n 3 "$work/update.log")"

# The source of the installed library when the archive still has it, else the current one.
version="$(dpkg-query -W -f '${Version}' libsqlite3-dev 2>/dev/null || true)"
(
  cd "$work/src"
  apt-get "${apt_private[@]}" source --download-only -qq "sqlite3${version:+=$version}" \
    >/dev/null 2>&1 ||
    apt-get "${apt_private[@]}" source --download-only -qq sqlite3 >/dev/null 2>"$work/src.log"
) || fail "apt-get source sqlite3 failed: $(tail -n 3 "$work/src.log")"

orig="$(find "$work/src" -maxdepth 1 -name 'sqlite3_*.orig.tar.*' | head -n 1)"
[ -n "$orig" ] || fail "no orig tarball in the sqlite3 source package"
tar -xf "$orig" -C "$work/src" --wildcards '*/test/speedtest1.c' ||
  fail "test/speedtest1.c not found in $(basename "$orig")"
source_file="$(find "$work/src" -path '*/test/speedtest1.c' | head -n 1)"

# Included before speedtest1.c: wraps sqlite3_open_v2 to apply SPEEDTEST1_BUSY_TIMEOUT.
cat >"$work/busy_timeout.h" <<'EOF'
#include <sqlite3.h>
#include <stdlib.h>
static int speedtest1_open_with_busy_timeout(const char *name, sqlite3 **db, int flags,
                                             const char *vfs) {
  int rc = sqlite3_open_v2(name, db, flags, vfs);
  const char *ms = getenv("SPEEDTEST1_BUSY_TIMEOUT");
  if (rc == SQLITE_OK && ms != NULL && *ms != '\0') sqlite3_busy_timeout(*db, atoi(ms));
  return rc;
}
#define sqlite3_open_v2 speedtest1_open_with_busy_timeout
EOF

mkdir -p "$cache"
gcc -O2 -DSQLITE_ENABLE_RTREE -include "$work/busy_timeout.h" "$source_file" -lsqlite3 \
  -o "$cache/speedtest1.new" 2>"$work/gcc.log" || fail "gcc failed: $(tail -n 5 "$work/gcc.log")"
mv "$cache/speedtest1.new" "$bin"
echo "$bin"
