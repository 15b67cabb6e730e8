#!/usr/bin/env bash
# Issue 14's scaling figure on the accelerator machine (the `device` tool's 16 cores): req/s and
# CPU per request of the Python floor and the gateway (local: SQLite; production: PostgreSQL +
# Redis) with 1, 2, 4, 8 workers, N workers pinned one each to N dedicated cores, while wrk and
# the static nginx upstream stay on cores of their own and PostgreSQL / Redis on others
# (`python -m bench.hotpath --scaling`, whose docstring has the method).
#
# That machine has Python 3.12 and no network; what it lacks travels, built here by
# `bash bench/device_kit.sh` (ignored paths, named in the call's carry: .whl and .kit):
#   .whl/            the gateway's Python dependencies -> pip install --target /tmp/site
#   .kit/kit.tar.xz  nginx, wrk, redis-server, PostgreSQL 15 and their libraries -> /tmp/gwkit
#
#   device: bash bench/device_scaling.sh          (carry: .whl, .kit; about 4 minutes)
#   here:   PYTHON=.venv/bin/python WHEELS=0 bash bench/device_scaling.sh   (a 2-core rehearsal:
#           1 worker; PostgreSQL / Redis already on 5432 / 6379 are used as they are)
#
# Writes $OUT/scaling.txt (the tables), $OUT/scaling.json (every cell), $OUT/scaling.log (this
# script's and the bench's log, machine facts first). Every step is under `timeout`; the whole
# stays under ~5 minutes: TOTAL_TIMEOUT (300 s) minus the set-up's time, at most BENCH_TIMEOUT
# (250 s), bounds the measurements, and a bench stopped early still writes what it measured;
# run it under an outer `timeout 320` all the same. Settings can be
# overridden from the environment: WORKERS (1,2,4,8), LOAD_CORES, SERVICE_CORES, PROXY_CORES,
# DRIVER_CORES, SETUPS (upstream,floor,gw-local,gw-prod), CONCURRENCY (16,64), WORKLOAD (json),
# DURATION (3), WARMUP (1), PG_PORT (5432), REDIS_PORT (6379), PRIME (1: an unrecorded pass first).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
# The classifier scores on the CPU, as on the 2-core box: there "auto" finds no GPU, here it
# would put every gateway worker's classifier (and a torch import) on the GPU.
export GATEWAY_CLASSIFIER_DEVICE="${GATEWAY_CLASSIFIER_DEVICE:-cpu}"
export OUT="${OUT:-bench/results}"
mkdir -p "$OUT"
LOG="$OUT/scaling.log"
: > "$LOG"
PY="${PYTHON:-python3}"
KIT_ROOT="${KIT_ROOT:-/tmp/gwkit}"
SITE="${SITE:-/tmp/site}"
PG_PORT="${PG_PORT:-5432}"
REDIS_PORT="${REDIS_PORT:-6379}"
SETUPS="${SETUPS:-upstream,floor,gw-local,gw-prod}"
CONCURRENCY="${CONCURRENCY:-16,64}"
WORKLOAD="${WORKLOAD:-json}"
DURATION="${DURATION:-3}"
WARMUP="${WARMUP:-1}"
BENCH_TIMEOUT="${BENCH_TIMEOUT:-250}"
TOTAL_TIMEOUT="${TOTAL_TIMEOUT:-300}"  # the bench gets what the set-up left of this, at most

say() { echo "device_scaling: $*" | tee -a "$LOG" >&2; }
die() { say "FATAL: $*"; exit 2; }
started=$(date +%s)

# --- machine facts -----------------------------------------------------------------------------
{
  echo "== $(date -u +%FT%TZ) $(uname -srm)"
  echo "cpus: $(nproc 2>/dev/null) online, affinity $("$PY" -c 'import os; print(sorted(os.sched_getaffinity(0)))' 2>&1)"
  echo "glibc: $(ldd --version 2>&1 | head -1)"
  echo "python: $("$PY" -c 'import sys; print(sys.executable, sys.version.split()[0])' 2>&1)"
  echo "memory: $(free -g 2>/dev/null | awk '/Mem:/ {print $2 " GiB total, " $7 " GiB available"}')"
  echo "cgroup cpu.max: $(cat /sys/fs/cgroup/cpu.max 2>/dev/null || echo n/a)"
} >> "$LOG" 2>&1

# --- Python packages ---------------------------------------------------------------------------
if [ "${WHEELS:-1}" != 0 ] && ls .whl/*.whl >/dev/null 2>&1; then
  say "installing $(ls .whl/*.whl | wc -l) wheels into $SITE"
  timeout 180 "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$SITE" .whl/*.whl >> "$LOG" 2>&1 || die "pip install of .whl/ failed (see $LOG)"
  export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
timeout 120 "$PY" -c 'import fastapi, uvicorn, uvloop, httptools, aiohttp, sqlalchemy, asyncpg, aiosqlite, redis, hiredis, orjson, pydantic_settings, alembic, gateway.cli, gateway.app' \
  >> "$LOG" 2>&1 || die "the gateway does not import (see $LOG)"

# --- programs ----------------------------------------------------------------------------------
KIT="$KIT_ROOT/kit"
if [ -f .kit/kit.tar.xz ] && [ "${KIT_UNPACK:-1}" != 0 ]; then
  say "unpacking .kit/kit.tar.xz into $KIT_ROOT"
  rm -rf "$KIT_ROOT" && mkdir -p "$KIT_ROOT" && chmod 755 "$KIT_ROOT"
  timeout 120 "$PY" - .kit/kit.tar.xz "$KIT_ROOT" <<'EOF' >> "$LOG" 2>&1 \
    || timeout 120 tar -C "$KIT_ROOT" -xJf .kit/kit.tar.xz >> "$LOG" 2>&1 || die "could not unpack the kit"
import sys, tarfile
with tarfile.open(sys.argv[1]) as tar:
    if hasattr(tarfile, "tar_filter"):
        tar.extractall(sys.argv[2], filter="tar")
    else:
        tar.extractall(sys.argv[2])
EOF
fi
if [ -d "$KIT/bin" ]; then
  command -v taskset >/dev/null || ln -sf ../real/taskset-py "$KIT/bin/taskset"
  # The kit's bookworm copies of these need glibc 2.36; the machine's own (as new or newer
  # wherever that glibc is) are used when it has them.
  for so in libstdc++.so.6 libgcc_s.so.1 libcrypt.so.1; do
    if ldconfig -p 2>/dev/null | awk '{print $1}' | grep -qxF "$so" && [ -f "$KIT/lib/$so" ]; then
      rm -f "$KIT/lib/$so"
    fi
  done
  export PATH="$KIT/bin:$PATH"
fi
for tool in taskset nginx wrk; do
  command -v "$tool" >/dev/null || die "$tool not found (carry .kit; bash bench/device_kit.sh)"
done
nginx -v >> "$LOG" 2>&1 || die "nginx does not run here (see $LOG)"
wrk_version=$(wrk -v 2>&1)  # (exits 1 after printing its version and usage)
[[ "$wrk_version" == wrk* ]] || die "wrk does not run here: $(echo "$wrk_version" | head -3)"
{ echo "${wrk_version%%$'\n'*}"; redis-server --version; postgres --version; } >> "$LOG" 2>&1

# --- cores -------------------------------------------------------------------------------------
mapfile -t CPUS < <("$PY" -c 'import os; print(*sorted(os.sched_getaffinity(0)), sep="\n")')
N=${#CPUS[@]}
c() { echo "${CPUS[$1]}"; }
range() { local out=() i; for ((i = $1; i <= $2; i++)); do out+=("$(c "$i")"); done; (IFS=,; echo "${out[*]}"); }
if [ "$N" -ge 12 ]; then     # 16 cores: 0-1 load, 2-3 services, 4-11 proxy, 12-15 this driver
  d_load=$(range 0 1); d_svc=$(range 2 3); d_proxy=$(range 4 11); d_driver=$(range 12 $((N - 1)))
  d_workers=1,2,4,8
elif [ "$N" -ge 8 ]; then
  d_load=$(range 0 1); d_svc=$(c 2); d_proxy=$(range 3 6); d_driver=$(range 7 $((N - 1)))
  d_workers=1,2,4
elif [ "$N" -ge 4 ]; then
  d_load=$(c 0); d_svc=$(c 0); d_proxy=$(range 1 2); d_driver=$(range 3 $((N - 1)))
  d_workers=1,2
else                          # the 2-core box: a rehearsal with one worker
  d_load=$(c 0); d_svc=$(c 0); d_proxy=$(c 1); d_driver=$(range 0 $((N - 1)))
  d_workers=1
fi
LOAD_CORES="${LOAD_CORES:-$d_load}"
SERVICE_CORES="${SERVICE_CORES:-$d_svc}"
PROXY_CORES="${PROXY_CORES:-$d_proxy}"
DRIVER_CORES="${DRIVER_CORES:-$d_driver}"
WORKERS="${WORKERS:-$d_workers}"
say "cores: load $LOAD_CORES, services $SERVICE_CORES, proxy $PROXY_CORES, driver $DRIVER_CORES; workers $WORKERS"

# Is taskset enforced here (gVisor may keep the mask without honouring it)? Two spinners on
# one core for 1 s: about 0.5 s of CPU each if it is, about 1 s each if not.
timeout 20 "$PY" - "$(echo "$PROXY_CORES" | cut -d, -f1)" <<'EOF' 2>&1 | tee -a "$LOG" >&2
import os, sys, time
from multiprocessing import Process, Queue
core = int(sys.argv[1])
def spin(q):
    os.sched_setaffinity(0, {core})
    t0, c0 = time.monotonic(), time.process_time()
    while time.monotonic() - t0 < 1.0:
        pass
    q.put(time.process_time() - c0)
q = Queue()
ps = [Process(target=spin, args=(q,)) for _ in range(2)]
for p in ps: p.start()
got = sorted(q.get(timeout=10) for _ in ps)
for p in ps: p.join()
verdict = "enforced" if max(got) < 0.8 else "NOT enforced (numbers are per-process, not per-core)"
print(f"pinning check: two spinners on core {core} got {got[0]:.2f} and {got[1]:.2f} CPU-s in 1 s: {verdict}")
EOF

# --- PostgreSQL and Redis (gw-prod) ------------------------------------------------------------
REDIS_PID=""
PG_STARTED=""
PG_DIR="$KIT_ROOT/pg"
# PostgreSQL refuses to run as root: as root, its commands run through AS_USER as an ordinary
# user (nobody, else a new one); the postmaster (pg_ctl setsid()s it) is stopped on exit.
AS_USER=()
cleanup() {
  if [ -n "$PG_STARTED" ]; then
    timeout 30 "${AS_USER[@]}" pg_ctl -D "$PG_DIR/data" -m immediate -w -t 20 stop >> "$LOG" 2>&1 || true
  fi
  if [ -n "$REDIS_PID" ]; then kill "$REDIS_PID" 2>/dev/null; wait "$REDIS_PID" 2>/dev/null; fi
  return 0
}
trap cleanup EXIT
trap 'exit 143' TERM INT  # an outer `timeout` still runs the cleanup
redis_up() {
  "$PY" -c 'import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1); s.sendall(b"PING\r\n")
sys.exit(0 if s.recv(64).startswith(b"+PONG") else 1)' "$REDIS_PORT" 2>/dev/null
}
pg_up() {
  command -v psql >/dev/null && timeout 10 psql -d "postgresql://postgres@127.0.0.1:$PG_PORT/postgres" \
    -qAtc 'select 1' >/dev/null 2>&1
}
if [[ ",$SETUPS," == *",gw-prod,"* ]]; then
  if redis_up; then
    say "Redis already answers on $REDIS_PORT: using it"
  elif command -v redis-server >/dev/null; then
    say "starting redis-server on port $REDIS_PORT, cores $SERVICE_CORES"
    taskset -c "$SERVICE_CORES" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" \
      --appendonly no --protected-mode no --daemonize no >> "$LOG" 2>&1 &
    REDIS_PID=$!
    for _ in $(seq 1 50); do redis_up && break; sleep 0.2; done
    redis_up || say "WARNING Redis did not come up (gw-prod will be skipped)"
  fi
  if pg_up; then
    say "PostgreSQL already answers on $PG_PORT: using it"
  elif command -v initdb >/dev/null && command -v pg_ctl >/dev/null; then
    RUN_AS=""
    if [ "$(id -u)" = 0 ]; then
      if id -u nobody >/dev/null 2>&1; then RUN_AS=nobody
      else useradd -r -M -d /nonexistent -s /usr/sbin/nologin gwbench >> "$LOG" 2>&1; RUN_AS=gwbench
      fi
      # (the program is found before setuid: the user may not be able to read Python's own files)
      AS_USER=("$PY" -c 'import os, pwd, shutil, sys
u, exe = pwd.getpwnam(sys.argv[1]), shutil.which(sys.argv[2]) or sys.argv[2]
os.setgroups([]); os.setgid(u.pw_gid); os.setuid(u.pw_uid); os.execv(exe, sys.argv[2:])' "$RUN_AS")
    fi
    say "starting PostgreSQL on port $PG_PORT, cores $SERVICE_CORES${RUN_AS:+, as $RUN_AS}"
    # The Debian build reads time zones from /usr/share/zoneinfo; GMT needs no file, and a
    # missing zoneinfo folder gets the kit's UTC/GMT files.
    if [ ! -d /usr/share/zoneinfo ] && [ -d "$KIT/zoneinfo" ] && [ "$(id -u)" = 0 ]; then
      mkdir -p /usr/share/zoneinfo && cp -r "$KIT/zoneinfo/." /usr/share/zoneinfo/
    fi
    rm -rf "$PG_DIR" && mkdir -p "$PG_DIR/data" && chmod 700 "$PG_DIR/data"
    [ -n "$RUN_AS" ] && chown -R "$RUN_AS" "$PG_DIR"
    if TZ=GMT timeout 120 "${AS_USER[@]}" initdb -D "$PG_DIR/data" -U postgres --auth=trust \
         -E UTF8 --locale=C --no-sync >> "$LOG" 2>&1 \
       && TZ=GMT timeout 90 taskset -c "$SERVICE_CORES" "${AS_USER[@]}" pg_ctl -D "$PG_DIR/data" \
         -l "$PG_DIR/server.log" -w -t 60 \
         -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $PG_DIR/data -c max_connections=400 -c jit=off -c timezone=GMT -c log_timezone=GMT" \
         start >> "$LOG" 2>&1; then
      PG_STARTED=1
    else
      say "WARNING PostgreSQL did not start (gw-prod will be skipped); its log:"
      tail -20 "$PG_DIR/server.log" >> "$LOG" 2>/dev/null
    fi
  fi
  if ! pg_up || ! redis_up; then
    say "WARNING gw-prod needs PostgreSQL on $PG_PORT and Redis on $REDIS_PORT: dropping it"
    SETUPS=$(echo "$SETUPS" | tr , '\n' | grep -vx gw-prod | paste -sd, -)
  fi
fi
say "setup took $(( $(date +%s) - started ))s"

# --- priming -----------------------------------------------------------------------------------
# The first device run measured the 1-worker rows first and got them low (the floor 1 -> 2
# workers 2.15x, the gateway 2.7-2.9x at c64): they were the machine's first load. One short,
# unrecorded pass at 1 worker goes first (PRIME=0: none); its output goes to the log only.
if [ "${PRIME:-1}" = 1 ]; then
  PRIMED=$(echo "$SETUPS" | tr , '\n' | grep -vx upstream | paste -sd, -)
  say "priming (unrecorded): $PRIMED at 1 worker, c64, 2 s"
  timeout -k 10 120 taskset -c "$DRIVER_CORES" "$PY" -m bench.hotpath \
    --scaling 1 --load-cores "$LOAD_CORES" --proxy-cores "$PROXY_CORES" --only "$PRIMED" \
    --workload json --concurrency 64 --duration 2 --warmup 1 --repeats 1 \
    --pg-dsn "postgresql://postgres@127.0.0.1:$PG_PORT" \
    --redis-url "redis://127.0.0.1:$REDIS_PORT/14" >> "$LOG" 2>&1 || say "priming failed (ignored)"
fi

# --- the bench ---------------------------------------------------------------------------------
left=$(( TOTAL_TIMEOUT - ($(date +%s) - started) - 15 ))
[ "$left" -lt "$BENCH_TIMEOUT" ] && BENCH_TIMEOUT=$left
[ "$BENCH_TIMEOUT" -gt 30 ] || die "no time left for the bench (set-up took $(( $(date +%s) - started ))s)"
say "bench (at most ${BENCH_TIMEOUT}s): --scaling $WORKERS --only $SETUPS --workload $WORKLOAD --concurrency $CONCURRENCY --duration $DURATION"
timeout -k 20 "$BENCH_TIMEOUT" taskset -c "$DRIVER_CORES" "$PY" -m bench.hotpath \
  --scaling "$WORKERS" --load-cores "$LOAD_CORES" --proxy-cores "$PROXY_CORES" \
  --only "$SETUPS" --workload "$WORKLOAD" --concurrency "$CONCURRENCY" \
  --duration "$DURATION" --warmup "$WARMUP" --repeats 1 \
  --pg-dsn "postgresql://postgres@127.0.0.1:$PG_PORT" --redis-url "redis://127.0.0.1:$REDIS_PORT/14" \
  --json "$OUT/scaling.json" > "$OUT/scaling.txt" 2> >(tee -a "$LOG" >&2)
status=$?
[ "$status" = 124 ] && say "the bench ran past ${BENCH_TIMEOUT}s and was stopped"
cat "$OUT/scaling.txt"
say "done in $(( $(date +%s) - started ))s, bench exit status $status"
exit "$status"
