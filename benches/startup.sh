#!/usr/bin/env bash
# Start-up time of the commands that do not train (issue: under 50 ms), and of the training
# binary for comparison: the median wall time of RUNS runs (default 20) of each command, with
# a warm page cache (one unmeasured run first). The driver `archsmith` does not link libtorch;
# `archsmith-torch`, which trains, does.
#
#   benches/startup.sh            # RUNS=20
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
RUNS="${RUNS:-20}"
cargo build --release --locked --quiet
BIN="$PWD/target/release/archsmith"
TORCH="$PWD/target/release/archsmith-torch"
CAND="$(mktemp)"
trap 'rm -f "$CAND"' EXIT
"$BIN" sample --space einspace -n 1 --seed 3 >"$CAND"

median_ms() {
    # Runs "$@" RUNS times (after one warm-up) and prints the median wall time in ms.
    "$@" >/dev/null 2>&1 || true
    python3 - "$RUNS" "$@" <<'PY'
import statistics, subprocess, sys, time
runs = int(sys.argv[1]); cmd = sys.argv[2:]
ts = []
for _ in range(runs):
    t = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ts.append((time.perf_counter() - t) * 1e3)
print(f"{statistics.median(ts):.1f}")
PY
}

echo "| command | median of $RUNS (ms) |"
echo "|---|---|"
echo "| \`archsmith --version\` | $(median_ms "$BIN" --version) |"
echo "| \`archsmith validate\` (one einspace candidate) | $(median_ms "$BIN" validate --space einspace "$CAND") |"
echo "| \`archsmith sample --space einspace -n 10\` | $(median_ms "$BIN" sample --space einspace -n 10) |"
echo "| \`archsmith space list\` | $(median_ms "$BIN" space list) |"
echo "| \`archsmith-torch --version\` (links libtorch) | $(median_ms "$TORCH" --version) |"
echo "| \`archsmith worker --gpus\` (forwarded, loads libtorch) | $(median_ms "$BIN" worker --gpus) |"
