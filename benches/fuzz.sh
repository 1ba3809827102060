#!/usr/bin/env bash
# Fuzzes the parsers of untrusted text (candidate notation with macros and the validator, the
# grammar language, a model's reply, the journal reader) for a long run, and prints how many
# inputs each target ran without a panic. A release build; CASES inputs per target.
#
#   benches/fuzz.sh [CASES]      # default 100000
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cases="${1:-100000}"
ARCHSMITH_FUZZ_CASES="$cases" cargo test --release --locked --test parsers_fuzz -- --nocapture --test-threads 1 2>&1 |
    grep -E "inputs, no panic|test result|panicked"
