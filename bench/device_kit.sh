#!/usr/bin/env bash
# Builds, HERE (a Debian 12 x86-64 box with PostgreSQL 15 and redis-server installed, and
# apt-get download working), what bench/device_scaling.sh needs on the accelerator machine,
# which has Python 3.12 but no network, no nginx, wrk, redis-server or PostgreSQL, and none of
# the gateway's web / database packages:
#
#   .whl/            cp312 manylinux wheels of the gateway's dependencies the device's Python
#                    lacks (versions: this repo's .venv; the device installs them into /tmp/site)
#   .kit/kit.tar.xz  nginx and wrk (Debian debs), redis-server and PostgreSQL 15 (postgres,
#                    initdb, pg_ctl, psql, the .so modules and the share dir, no JIT), every
#                    shared library they need except glibc's own (from this box), and a
#                    zoneinfo UTC; bin/ holds wrappers that set LD_LIBRARY_PATH for the carried
#                    programs only, so the device's Python never loads Debian's libstdc++.
#
# Idempotent: wheels already in .whl/ and debs already in .kitcache/debs/ are not fetched
# again; the tarball is rebuilt each time (about a minute: xz on 2 cores). The three folders
# are ignored through .git/info/exclude (added here if missing), so .whl and .kit travel only
# when `carry` names them, and .kitcache never:
#
#   carry: [".whl", ".kit"]        (about 36 MiB together; the repo is ~7 MiB; limit 64 MiB)
#
#   bash bench/device_kit.sh            # build / refresh
#   bash bench/device_kit.sh --check    # also unpack to /tmp/kittest and run each program
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
say() { echo "device_kit: $*" >&2; }
die() { echo "device_kit: $*" >&2; exit 1; }

# --- ignore rules ------------------------------------------------------------------------------
EXCLUDE="$(git rev-parse --git-path info/exclude)"
mkdir -p "$(dirname "$EXCLUDE")"
touch "$EXCLUDE"
for pattern in /.whl/ /.kit/ /.kitcache/; do
  grep -qxF "$pattern" "$EXCLUDE" || echo "$pattern" >> "$EXCLUDE"
done

# --- wheels ------------------------------------------------------------------------------------
# The gateway's runtime dependencies (pyproject.toml) and theirs that the device image lacks,
# or has in versions these pins may not accept (typing-extensions: pydantic needs >= 4.16;
# anyio: starlette needs < 5). The device already has aiohttp (and its deps), uvloop, h11,
# click, idna, markupsafe, numpy, onnxruntime, prometheus-client, psutil, torch.
# uvicorn[standard]'s websockets / watchfiles are not needed (no websockets, no --reload).
WHEELS=(fastapi starlette uvicorn orjson redis hiredis sqlalchemy asyncpg aiosqlite alembic
        pydantic pydantic-core pydantic-settings annotated-types annotated-doc typing-inspection
        typing-extensions python-dotenv greenlet mako httptools opentelemetry-api anyio)
[ -x .venv/bin/python ] || die "no .venv here (bash scripts/test builds it): its versions are the pins"
mapfile -t PINS < <(.venv/bin/python - "${WHEELS[@]}" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version
for name in sys.argv[1:]:
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        sys.exit(f"{name} is not installed in .venv")
EOF
)
mkdir -p .whl
# One version of each: drop wheels of these names whose version is not the pinned one.
for pin in "${PINS[@]}"; do
  name="${pin%%==*}"; ver="${pin##*==}"
  norm="$(echo "$name" | tr '-' '_' | tr '[:upper:]' '[:lower:]')"
  for f in .whl/*.whl; do
    [ -e "$f" ] || continue
    base="$(basename "$f")"; fname="$(echo "${base%%-*}" | tr '[:upper:]' '[:lower:]')"
    fver="$(echo "$base" | cut -d- -f2)"
    if [ "$fname" = "$norm" ] && [ "$fver" != "$ver" ]; then say "removing stale $base"; rm -f "$f"; fi
  done
done
missing=()
for pin in "${PINS[@]}"; do
  name="${pin%%==*}"; ver="${pin##*==}"
  norm="$(echo "$name" | tr '-' '_' | tr '[:upper:]' '[:lower:]')"
  found=0
  for f in .whl/*.whl; do
    [ -e "$f" ] || continue
    base="$(basename "$f")"
    if [ "$(echo "${base%%-*}" | tr '[:upper:]' '[:lower:]')" = "$norm" ] \
       && [ "$(echo "$base" | cut -d- -f2)" = "$ver" ]; then found=1; fi
  done
  [ "$found" = 1 ] || missing+=("$pin")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "downloading ${missing[*]}"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any \
    -d .whl "${missing[@]}" 2>&1 | grep -v "^WARNING: Location" >&2 || true
fi
for pin in "${PINS[@]}"; do
  norm="$(echo "${pin%%==*}" | tr '-' '_' | tr '[:upper:]' '[:lower:]')"
  ls .whl | tr '[:upper:]' '[:lower:]' | grep -q "^${norm}-${pin##*==}-" \
    || die "no wheel for $pin in .whl/"
done
say "wheels: $(ls .whl | wc -l) files, $(du -sh .whl | cut -f1)"

# --- binaries ----------------------------------------------------------------------------------
PG_VERSION=15
PG_BIN=/usr/lib/postgresql/$PG_VERSION/bin
PG_LIB=/usr/lib/postgresql/$PG_VERSION/lib
PG_SHARE=/usr/share/postgresql/$PG_VERSION
REDIS=$(readlink -f "$(command -v redis-server || echo /usr/bin/redis-server)")
for need in "$PG_BIN/postgres" "$PG_BIN/initdb" "$PG_BIN/pg_ctl" "$PG_BIN/psql" "$PG_SHARE" "$REDIS"; do
  [ -e "$need" ] || die "missing $need (apt-get install postgresql-$PG_VERSION redis-server)"
done

mkdir -p .kitcache/debs
rm -rf .kit/debs  # (an earlier layout kept them here; .kit holds only what travels)
DEBS=(nginx wrk libluajit-5.1-2 libluajit-5.1-common)
for pkg in "${DEBS[@]}"; do
  ls .kitcache/debs/"${pkg}"_*.deb >/dev/null 2>&1 && continue
  say "apt-get download $pkg"
  (cd .kitcache/debs && apt-get download -q "$pkg" >&2) \
    || die "apt-get download $pkg failed (apt-get update first?)"
done

STAGE="$(mktemp -d /tmp/device-kit.XXXXXX)"
trap 'rm -rf "$STAGE"' EXIT
DEBX="$STAGE/debx"
mkdir -p "$DEBX" "$STAGE/kit/bin" "$STAGE/kit/real" "$STAGE/kit/lib" \
  "$STAGE/kit/pg/lib/postgresql/$PG_VERSION/bin" "$STAGE/kit/pg/lib/postgresql/$PG_VERSION/lib" \
  "$STAGE/kit/pg/share/postgresql" "$STAGE/kit/zoneinfo"
for deb in .kitcache/debs/*.deb; do dpkg -x "$deb" "$DEBX"; done
KIT="$STAGE/kit"
cp "$DEBX/usr/sbin/nginx" "$DEBX/usr/bin/wrk" "$KIT/real/"
cp "$REDIS" "$KIT/real/redis-server"
for exe in postgres initdb pg_ctl psql; do cp "$PG_BIN/$exe" "$KIT/pg/lib/postgresql/$PG_VERSION/bin/"; done
# The server's modules without the LLVM JIT (jit=off on the device) and its 26 MB of bitcode.
find "$PG_LIB" -maxdepth 1 -name '*.so' ! -name 'llvmjit*' ! -name 'sepgsql.so' \
  -exec cp {} "$KIT/pg/lib/postgresql/$PG_VERSION/lib/" \;
cp -r "$PG_SHARE" "$KIT/pg/share/postgresql/$PG_VERSION"
rm -rf "$KIT/pg/share/postgresql/$PG_VERSION/man" "$KIT/pg/share/postgresql/$PG_VERSION/contrib"
# PostgreSQL's Debian build reads time zones from /usr/share/zoneinfo, which a slim image may
# lack: UTC and GMT travel, and the device script installs them only if that folder is missing.
for zone in UTC Etc/UTC GMT Etc/GMT; do
  mkdir -p "$KIT/zoneinfo/$(dirname "$zone")"
  cp "$(readlink -f "/usr/share/zoneinfo/$zone")" "$KIT/zoneinfo/$zone"
done

# Every shared library the carried programs and modules need, except glibc's own (the device's
# glibc is newer than bookworm's 2.36, and glibc's libraries must match its loader).
GLIBC_RE='^(ld-linux-x86-64\.so|libc\.so|libm\.so|libpthread\.so|libdl\.so|librt\.so|libresolv\.so|libutil\.so|libanl\.so|libnsl\.so|libmvec\.so|libBrokenLocale\.so|libnss_|libthread_db\.so|linux-vdso)'
copy_closure() {
  local changed=1
  while [ "$changed" = 1 ]; do
    changed=0
    while IFS= read -r line; do
      local soname path
      soname="$(basename "$(echo "$line" | awk '{print $1}')")"
      path="$(echo "$line" | awk '$2=="=>" {print $3}')"
      [[ "$soname" =~ $GLIBC_RE ]] && continue
      [ -e "$KIT/lib/$soname" ] && continue
      [ -n "$path" ] && [ -e "$path" ] || die "unresolved library $soname ($line)"
      cp -L "$path" "$KIT/lib/$soname"
      changed=1
    done < <(find "$KIT/real" "$KIT/pg/lib/postgresql/$PG_VERSION" "$KIT/lib" -type f \
               \( -perm -u+x -o -name '*.so*' \) -print0 \
             | xargs -0 -n1 env LD_LIBRARY_PATH="$KIT/lib:$DEBX/usr/lib/x86_64-linux-gnu" ldd 2>/dev/null \
             | grep -E '=>|^\s*/' | grep -v 'not a dynamic' | sed 's/^\s*//' | sort -u)
  done
}
# wrk's LuaJIT comes from the debs, the rest from this box.
cp -L "$DEBX"/usr/lib/x86_64-linux-gnu/libluajit-5.1.so.2 "$KIT/lib/"
copy_closure

# Wrappers: LD_LIBRARY_PATH for the carried programs (and what they start) only.
wrapper() {  # wrapper NAME TARGET(relative to the kit root)
  cat > "$KIT/bin/$1" <<EOF
#!/bin/sh
k="\$(dirname "\$(dirname "\$(readlink -f "\$0")")")"
LD_LIBRARY_PATH="\$k/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "\$k/$2" "\$@"
EOF
  chmod 755 "$KIT/bin/$1"
}
wrapper nginx real/nginx
wrapper wrk real/wrk
wrapper redis-server real/redis-server
for exe in postgres initdb pg_ctl psql; do wrapper "$exe" "pg/lib/postgresql/$PG_VERSION/bin/$exe"; done
# taskset for an image without util-linux: sched_setaffinity through Python (taskset -c LIST CMD...).
cat > "$KIT/real/taskset-py" <<'EOF'
#!/usr/bin/env python3
"""Minimal `taskset -c LIST COMMAND...` (the only form bench/ uses), for images without util-linux."""
import os
import sys

if len(sys.argv) < 4 or sys.argv[1] != "-c":
    sys.exit("usage: taskset -c LIST COMMAND [ARGS...]")
cores: set[int] = set()
for part in sys.argv[2].split(","):
    lo, _, hi = part.partition("-")
    cores.update(range(int(lo), int(hi or lo) + 1))
os.sched_setaffinity(0, cores)
os.execvp(sys.argv[3], sys.argv[3:])
EOF
chmod 755 "$KIT/real/taskset-py"
chmod -R a+rX "$KIT"

mkdir -p .kit
tar -C "$STAGE" -cJf .kit/kit.tar.xz.tmp kit
mv .kit/kit.tar.xz.tmp .kit/kit.tar.xz
say "kit: $(du -sh .kit/kit.tar.xz | cut -f1) ($(du -sh "$KIT" | cut -f1) unpacked, $(ls "$KIT/lib" | wc -l) libraries)"
tracked=$(git ls-files -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
untracked=$(git ls-files -z -o --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
carried=$(du -cb .whl .kit | tail -1 | cut -f1)
say "travels: tracked $((tracked / 1048576)) MiB + untracked $((${untracked:-0} / 1048576)) MiB + carried $((carried / 1048576)) MiB = $(((tracked + ${untracked:-0} + carried) / 1048576)) MiB (limit 64)"

if [ "${1:-}" = "--check" ]; then
  rm -rf /tmp/kittest && mkdir -p /tmp/kittest
  python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' \
    .kit/kit.tar.xz /tmp/kittest
  K=/tmp/kittest/kit
  "$K/bin/nginx" -v
  "$K/bin/wrk" -v 2>&1 | head -1 || true
  "$K/bin/redis-server" --version
  "$K/bin/postgres" --version
  "$K/bin/psql" --version
  "$K/bin/initdb" --version
  "$K/bin/pg_ctl" --version
  # Every library must resolve inside the kit or to glibc.
  bad=0
  while IFS= read -r f; do
    out="$(LD_LIBRARY_PATH="$K/lib" ldd "$f" 2>&1)" || continue
    echo "$out" | grep -q 'not found' && { echo "$f: $out" | grep 'not found'; bad=1; }
    echo "$out" | awk '$2=="=>" {print $1, $3}' | while read -r so path; do
      so="$(basename "$so")"
      [[ "$so" =~ $GLIBC_RE ]] && continue
      case "$path" in "$K"/lib/*) ;; *) echo "$f: $so resolves outside the kit: $path"; exit 1;; esac
    done || bad=1
  done < <(find "$K/real" "$K/pg/lib" "$K/lib" -type f \( -perm -u+x -o -name '*.so*' \) ! -name taskset-py)
  [ "$bad" = 0 ] || die "kit check failed"
  say "kit check passed (unpacked at /tmp/kittest/kit)"
fi
