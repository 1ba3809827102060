#!/usr/bin/env bash
# ray-head.sh: a single-machine Ray head for the `ray` executor, its Jobs API on 127.0.0.1 only.
#
#   scripts/ray-head.sh start    # start (or find) the head; prints http://127.0.0.1:PORT on stdout
#   scripts/ray-head.sh status   # exit 0 and print the address when the Jobs API answers, else exit 1
#   scripts/ray-head.sh stop     # `ray stop --force`; succeeds when nothing is running too
#
# The Jobs REST API (/api/jobs/, /api/version) is served by the dashboard, so `start` waits until
# GET /api/version answers (at most $ARCHSMITH_RAY_START_TIMEOUT seconds). `start` on a running head
# only reports its address. Ray is installed by scripts/setup-ray.sh (run here when needed).
#
# Jobs inherit the environment of the shell that ran `start` (PATH, LD_LIBRARY_PATH, VIRTUAL_ENV,
# ... pass through the raylet to each job's entrypoint), and its working directory too, so start
# the head from the shell the jobs should run in. Nothing has to be set for jobs to run. Ray adds
# RAY_ADDRESS, PYTHONUNBUFFERED=1, ... and OMP_NUM_THREADS = the job's entrypoint_num_cpus (1 when
# not given) unless OMP_NUM_THREADS is already set here. One variable of the head's environment
# matters: RAY_JOB_START_TIMEOUT_SECONDS (Ray's default 900): a job still PENDING after that long,
# including one merely queued behind others for CPUs, is FAILED. See tests/fixtures/ray/README.md.
#
# The head's session files and logs go to Ray's temp dir (default /tmp/ray, outside the source
# tree; one session_* directory per start, not cleaned). An idle head uses about 1.2 GB of RAM.
#
# Knobs (all optional):
#   ARCHSMITH_RAY_CPUS            CPUs the head offers       (default: the CPUs this process may use)
#   ARCHSMITH_RAY_GPUS            GPUs the head offers       (default: 0)
#   ARCHSMITH_RAY_DASHBOARD_PORT  dashboard / Jobs API port  (default: 8265)
#   ARCHSMITH_RAY_PORT            GCS port of the head       (default: 6379)
#   ARCHSMITH_RAY_TEMP_DIR        Ray's temp dir             (default: Ray's own, /tmp/ray)
#   ARCHSMITH_RAY_START_TIMEOUT   seconds to wait for the API (default: 90)
#   ARCHSMITH_RAY_BIN             the `ray` executable       (default: from scripts/setup-ray.sh)
set -euo pipefail

log() { echo "[archsmith-ray-head] $*" >&2; }

DASH_PORT="${ARCHSMITH_RAY_DASHBOARD_PORT:-8265}"
GCS_PORT="${ARCHSMITH_RAY_PORT:-6379}"
ADDR="http://127.0.0.1:$DASH_PORT"
TIMEOUT="${ARCHSMITH_RAY_START_TIMEOUT:-90}"

ray_bin() {
    if [ -n "${ARCHSMITH_RAY_BIN:-}" ]; then
        echo "$ARCHSMITH_RAY_BIN"
    else
        "$(dirname "$0")/setup-ray.sh" | sed -n 's/^export ARCHSMITH_RAY_BIN="\(.*\)"$/\1/p'
    fi
}

# The Jobs API answers: GET /api/version returns 200 within 2 s.
api_up() { curl -fsS --max-time 2 -o /dev/null "$ADDR/api/version" 2>/dev/null; }

cmd="${1:-}"
case "$cmd" in
status)
    if api_up; then
        echo "$ADDR"
    else
        log "no Ray Jobs API at $ADDR"
        exit 1
    fi
    ;;
start)
    if api_up; then
        log "Ray head already running; Jobs API at $ADDR"
        echo "$ADDR"
        exit 0
    fi
    RAY="$(ray_bin)"
    [ -x "$RAY" ] || { log "ERROR: ray executable '$RAY' not found"; exit 1; }
    # GNU nproc honours OMP_NUM_THREADS and OMP_THREAD_LIMIT; the head must count CPUs, not threads.
    cpus="${ARCHSMITH_RAY_CPUS:-$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)}"
    gpus="${ARCHSMITH_RAY_GPUS:-0}"
    # No --node-ip-address=127.0.0.1: Ray replaces a loopback address with the machine's routable
    # IP anyway, and its GCS, raylet and worker gRPC ports listen on all interfaces whatever is
    # asked. Only the dashboard, which serves the Jobs API, can be bound to 127.0.0.1.
    args=(start --head --port="$GCS_PORT"
        --num-cpus="$cpus" --num-gpus="$gpus"
        --include-dashboard=true --dashboard-host=127.0.0.1 --dashboard-port="$DASH_PORT"
        --disable-usage-stats)
    [ -n "${ARCHSMITH_RAY_TEMP_DIR:-}" ] && args+=(--temp-dir="$ARCHSMITH_RAY_TEMP_DIR")
    log "ray ${args[*]}"
    t0=$(date +%s)
    # RAY_USAGE_STATS_ENABLED=0 as well as the flag: the flag only covers this cluster's start.
    if ! RAY_USAGE_STATS_ENABLED=0 "$RAY" "${args[@]}" >&2; then
        log "ERROR: ray start failed (another head on port $GCS_PORT? try: $0 stop)"
        exit 1
    fi
    until api_up; do
        if [ $(($(date +%s) - t0)) -ge "$TIMEOUT" ]; then
            log "ERROR: the Jobs API at $ADDR did not answer within ${TIMEOUT}s (logs: Ray's temp dir, session_latest/logs/dashboard*)"
            exit 1
        fi
        sleep 0.5
    done
    log "Ray head up after $(($(date +%s) - t0))s; Jobs API at $ADDR"
    echo "$ADDR"
    ;;
stop)
    RAY="${ARCHSMITH_RAY_BIN:-}"
    if [ -z "$RAY" ]; then
        venv="${ARCHSMITH_RAY_VENV:-$HOME/.cache/archsmith/ray-venv}"
        RAY="$venv/bin/ray"
    fi
    if [ ! -x "$RAY" ]; then
        log "no ray executable at $RAY; nothing to stop"
        exit 0
    fi
    # `ray stop` exits 0 when nothing runs, so this is idempotent. It prints every killed process's
    # full command line (kilobytes each): show only its last line unless it fails.
    out="$(mktemp)"
    if ! "$RAY" stop --force >"$out" 2>&1; then
        cat "$out" >&2; rm -f "$out"
        log "ERROR: ray stop --force failed"; exit 1
    fi
    log "$(tail -n 1 "$out" | sed 's/\x1b\[[0-9;]*m//g')"
    rm -f "$out"
    ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
