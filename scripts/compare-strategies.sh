#!/usr/bin/env bash
# Runs random, evolution and bo on one synthetic task over 5 seeds with the same small budget
# and prints the best validation score of each run side by side, with the mean.
#
#   scripts/compare-strategies.sh [CONFIG] [EVALS]
#
# CONFIG defaults to configs/compare.toml; EVALS overrides its evaluation budget. Runs go to
# $OUT (default: a temporary folder), so that results/ stays clean.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
CONFIG="${1:-configs/compare.toml}"
EVALS="${2:-}"
OUT="${OUT:-$(mktemp -d)}"
BIN="${ARCHSMITH_BIN:-target/debug/archsmith}"
[ -x "$BIN" ] || cargo build --quiet
STRATEGIES=(random evolution bo)
SEEDS=(0 1 2 3 4)
for s in "${STRATEGIES[@]}"; do
    for seed in "${SEEDS[@]}"; do
        args=(run --config "$CONFIG" --strategy "$s" --seed "$seed" --out "$OUT/$s" --name "$s")
        [ -n "$EVALS" ] && args+=(--evals "$EVALS")
        "$BIN" "${args[@]}" 2>/dev/null >/dev/null || echo "run $s seed $seed failed" >&2
    done
done
printf '%-10s' strategy
for seed in "${SEEDS[@]}"; do printf ' %8s' "seed$seed"; done
printf ' %8s\n' mean
for s in "${STRATEGIES[@]}"; do
    # `runs` lists oldest first, which is seed order here.
    "$BIN" runs "$OUT/$s" | awk -v s="$s" 'NR > 1 { best[n++] = $4 }
        END { printf "%-10s", s; sum = 0; k = 0
              for (i = 0; i < n; i++) { printf " %8s", best[i]; if (best[i] != "-") { sum += best[i]; k++ } }
              printf " %8.4f\n", (k ? sum / k : 0) }'
done
echo "runs in $OUT"
