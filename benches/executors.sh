#!/usr/bin/env bash
# Evaluations per minute on this machine's CPU: inline (in the driver), 1, 2 and 4 local worker
# processes, and the Ray executor (when a head is reachable), on one fixed search; and the
# per-job overhead, i.e. time from submission to result beyond training (`overhead_seconds` of
# `train_finished`). For Ray, the overhead is split into submission to RUNNING and end of the
# job to result, from the executor's timing lines in run.log.
#
#   benches/executors.sh            # local executors only
#   benches/executors.sh --ray      # also Ray: uses RAY_ADDRESS, or starts a head with
#                                   # scripts/ray-head.sh (and stops it after)
#
# Knobs: EVALS (default 16), TRAIN (training examples, default 4096), EPOCHS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
EVALS="${EVALS:-16}"
TRAIN="${TRAIN:-4096}"
EPOCHS="${EPOCHS:-2}"
WITH_RAY=0
[ "${1:-}" = "--ray" ] && WITH_RAY=1

cargo build --release --locked --quiet
BIN="$PWD/target/release/archsmith"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

cat > "$WORK/bench.toml" <<TOML
seed = 0
device = "cpu"
[executor]
command = "$BIN"
[executor.ray]
cpus = 1.0
poll_ms = 50
[space]
name = "einspace"
[space.limits]
max_params = 100000
max_flops = 20000000
max_activation_bytes = 4194304
[task]
name = "textures"
train_size = $TRAIN
valid_size = 128
test_size = 32
[task.recipe]
epochs = $EPOCHS
batch_size = 64
threads = $(nproc)
[strategy]
kind = "random"
[budget]
evaluations = $EVALS
TOML

# One run; prints "label evals/min median-overhead-s mean-train-s".
bench() {
    local label="$1"; shift
    local out="$WORK/$label"
    local t0 t1
    t0=$(date +%s.%N)
    "$BIN" run --config "$WORK/bench.toml" --out "$out" "$@" >/dev/null 2>"$WORK/$label.err" || {
        echo "$label failed:" >&2; tail -5 "$WORK/$label.err" >&2; return 1; }
    t1=$(date +%s.%N)
    python3 - "$out" "$t0" "$t1" "$label" <<'PY'
import json, sys, glob, statistics, re
out, t0, t1, label = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
run = glob.glob(out + "/*/journal.jsonl")[0]
fin = [json.loads(l)["data"] for l in open(run) if '"train_finished"' in l]
fin = [f for f in fin if "overhead_seconds" in f]
over = statistics.median(f["overhead_seconds"] for f in fin)
train = statistics.mean(f["wall_seconds"] for f in fin)
rate = len(fin) * 60.0 / (t1 - t0)
extra = ""
log = run.replace("journal.jsonl", "run.log")
sub, res = [], []
for line in open(log):
    m = re.search(r"ray job timing.*submitted_to_running_ms=(\d+).*finished_to_result_ms=(\d+)", line)
    if m:
        sub.append(int(m.group(1))); res.append(int(m.group(2)))
if sub:
    extra = f" | {statistics.median(sub)} ms | {statistics.median(res)} ms"
print(f"| {label} | {len(fin)} | {rate:.1f} | {over*1000:.0f} ms | {train:.2f} s{extra} |")
PY
}

echo "$(nproc) cores; $EVALS evaluations of einspace/textures ($TRAIN examples, $EPOCHS epochs), random strategy"
echo
echo "| executor | evaluations | evaluations/min | median overhead per job | mean training per job |"
echo "|---|---|---|---|---|"
bench inline --executor inline --parallel 1
bench local-1 --executor local --parallel 1
bench local-2 --executor local --parallel 2
bench local-4 --executor local --parallel 4

if [ "$WITH_RAY" = 1 ]; then
    started=0
    if [ -z "${RAY_ADDRESS:-}" ]; then
        RAY_ADDRESS="$(scripts/ray-head.sh start 2>/dev/null | tail -1)"
        started=1
    fi
    export RAY_ADDRESS
    echo
    echo "Ray at $RAY_ADDRESS (1 CPU a job); the last two columns split the overhead: submission to RUNNING, end to result"
    echo
    echo "| executor | evaluations | evaluations/min | median overhead per job | mean training per job | submitted to running | finished to result |"
    echo "|---|---|---|---|---|---|---|"
    bench ray-1 --executor ray --parallel 1 || true
    bench ray-2 --executor ray --parallel 2 || true
    [ "$started" = 1 ] && scripts/ray-head.sh stop >/dev/null
fi
