#!/usr/bin/env bash
# A 30-evaluation search on `textures` (einspace) with the local model (`llm` strategy, the
# grammar-constrained llama.cpp server that `scripts/setup.sh --llm` installs) against `random`
# and `evolution`: same budget, same recipe, seeds 0 1 2. Not a timed test: a measurement, run
# by hand (it takes about an hour on 2 busy cores). Prints one Markdown table row per run and a
# mean per strategy; the run folders stay under $OUT.
#
#   benches/llm_search.sh                 # all three strategies, seeds 0 1 2, 30 evaluations
#   EVALS=10 SEEDS="0" STRATEGIES="llm" benches/llm_search.sh
#   STRATEGIES="llm-evolution" benches/llm_search.sh   # the model as evolution's mutation
#   DUPLICATE_RETRIES=0 STRATEGIES=llm benches/llm_search.sh   # repeats fall back to samples
#   TEMPERATURE=1.2 STRATEGIES=llm benches/llm_search.sh       # the sampling temperature (0.8)
set -euo pipefail
cd "$(dirname "$0")/.."
EVALS="${EVALS:-30}"
SEEDS="${SEEDS:-0 1 2}"
STRATEGIES="${STRATEGIES:-llm random evolution}"
OUT="${OUT:-target/llm-search}"
BIN="${ARCHSMITH_BIN:-target/release/archsmith}"
mkdir -p "$OUT"
if [ ! -x "$BIN" ]; then
    echo "building $BIN" >&2
    cargo build --release --locked >&2
fi
CFG="$OUT/experiment.toml"
cat >"$CFG" <<TOML
# benches/llm_search.sh: einspace on textures, a small recipe so 9 searches fit in an hour.
out = "$OUT"
device = "cpu"
[space]
name = "einspace"
[space.limits]
max_params = 100000
max_flops = 20000000
max_activation_bytes = 4194304
[task]
name = "textures"
train_size = 512
valid_size = 256
test_size = 64
[task.recipe]
epochs = 2
batch_size = 64
threads = 2
time_limit_secs = 60.0
[strategy]
kind = "auto"
[strategy.evolution]
population = 8
tournament = 3
[strategy.llm]
k = 4
repairs = 1
duplicate_retries = ${DUPLICATE_RETRIES:-1}
[strategy.llm_evolution]
population = 8
tournament = 3
duplicate_retries = ${DUPLICATE_RETRIES:-1}
[budget]
evaluations = $EVALS
stall_rounds = 20
[llm]
provider = "local"
model = "gemma-3-270m"
temperature = ${TEMPERATURE:-0.8}
max_tokens = 400
timeout_secs = 600.0
constrain = "auto"
TOML
echo "| strategy | seed | best validation accuracy | evaluations | model-written valid candidates | seconds |"
echo "|---|---|---|---|---|---|"
for s in $STRATEGIES; do
    for seed in $SEEDS; do
        t0=$(date +%s)
        "$BIN" run --config "$CFG" --strategy "$s" --seed "$seed" --name "$s" >"$OUT/$s-$seed.out" 2>"$OUT/$s-$seed.err" || {
            echo "| $s | $seed | FAILED (see $OUT/$s-$seed.err) | | | |"; continue; }
        dir="$(sed -n 's/^run folder: //p' "$OUT/$s-$seed.err" | tail -1)"
        "$BIN" show "$dir" --format json >"$OUT/$s-$seed.json"
        # The program comes on stdin, so the run's JSON comes as a file.
        python3 - "$s" "$seed" "$(( $(date +%s) - t0 ))" "$OUT/$s-$seed.json" <<'PY'
import json, sys
s, seed, secs, path = sys.argv[1:5]
r = json.load(open(path))["run"]
src = r.get("sources", {})
model = src.get("model_valid", 0) + src.get("repair_valid", 0)
best = r.get("best_score")
print(f"| {s} | {seed} | {best:.4f} | {r['evaluations']} | {model if s.startswith('llm') else '-'} | {secs} |" if best is not None
      else f"| {s} | {seed} | - | {r['evaluations']} | - | {secs} |")
PY
    done
done | tee "$OUT/table.md"
python3 - "$OUT/table.md" <<'PY'
import sys, collections
rows = [l.split("|")[1:-1] for l in open(sys.argv[1]) if l.startswith("| ") and not l.startswith("| strategy")]
by = collections.defaultdict(list)
for r in rows:
    try: by[r[0].strip()].append(float(r[2]))
    except ValueError: pass
print()
for s, v in by.items():
    print(f"mean best of {s} over {len(v)} seeds: {sum(v)/len(v):.4f}")
PY
