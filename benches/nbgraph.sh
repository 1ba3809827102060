#!/usr/bin/env bash
# Speed of look-up searches on NAS-Bench-Graph (needs scripts/setup-nbgraph.sh):
#   1. the loop time of one 100-evaluation search per classical strategy on nbgraph:cora,
#      journal included (the `elapsed_seconds` the run records, start to finish);
#   2. the wall time of the whole bench: random, evolution and bo x SEEDS seeds x the nine
#      data sets x EVALS evaluations, on THREADS threads.
#
#   benches/nbgraph.sh                  # SEEDS=20 EVALS=100 THREADS=2
#   SEEDS=5 benches/nbgraph.sh          # a quicker look
#
# Run folders go to a temporary folder (ARCHSMITH_BENCH_DIR to choose where: the journal's
# fsyncs cost what that disk makes them cost), removed at the end; the bench's table is
# printed and kept as $OUT_MD when set.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
SEEDS="${SEEDS:-20}"
EVALS="${EVALS:-100}"
THREADS="${THREADS:-2}"

cargo build --release --locked --quiet
BIN="$PWD/target/release/archsmith"
WORK="$(mktemp -d -p "${ARCHSMITH_BENCH_DIR:-${TMPDIR:-/tmp}}")"
trap 'rm -rf "$WORK"' EXIT

echo "## one search of $EVALS evaluations on nbgraph:cora (loop time recorded in the journal)"
for s in random evolution bo; do
    "$BIN" run --space nbgraph --task nbgraph:cora --strategy "$s" --evals "$EVALS" \
        --seed 1 --out "$WORK/single" --name "$s" >/dev/null 2>&1
    dir="$(ls -d "$WORK"/single/*-"$s"-s1 | tail -1)"
    python3 - "$dir/journal.jsonl" "$s" <<'PY'
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
fin = [e["data"] for e in ev if e["type"] == "run_finished"][-1]
n = sum(1 for e in ev if e["type"] == "train_finished")
print(f"{sys.argv[2]:<10} {n} evaluations, loop {fin['elapsed_seconds']:.3f} s, best {fin['best_score']:.4f}")
PY
done

echo
echo "## the bench: random, evolution, bo x $SEEDS seeds x 9 data sets x $EVALS evaluations, $THREADS threads"
start=$(date +%s.%N)
"$BIN" bench --strategies random,evolution,bo --seeds "$SEEDS" --evals "$EVALS" \
    --threads "$THREADS" --out "$WORK/bench" --no-html > "$WORK/bench.out"
end=$(date +%s.%N)
cat "$WORK/bench.out"
python3 -c "print(f'wall time of the whole bench: {$end - $start:.1f} s')"
if [ -n "${OUT_MD:-}" ]; then cp "$WORK/bench/bench.md" "$OUT_MD"; fi
