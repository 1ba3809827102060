#!/usr/bin/env bash
# Installs NAS-Bench-Graph's tables for the look-up tasks `nbgraph:<dataset>`, idempotently:
# the PyPI package `nas-bench-graph` (its nine light pickles) into the set-up's Python venv,
# then converts each pickle once into the CSV archsmith reads (scripts/nbgraph_convert.py).
# Prints nothing on stdout; progress goes to stderr. A second run only checks a marker file.
#
# Knobs (all optional):
#   ARCHSMITH_VENV         venv location         (default: $HOME/.cache/archsmith/venv)
#   ARCHSMITH_PYTHON       interpreter for a new venv (default: python3)
#   ARCHSMITH_NBGRAPH_DIR  where the CSV tables go (default: $HOME/.cache/archsmith/nbgraph)
set -euo pipefail

VERSION=1.4.0
FORMAT=1
VENV="${ARCHSMITH_VENV:-$HOME/.cache/archsmith/venv}"
PY="${ARCHSMITH_PYTHON:-python3}"
OUT="${ARCHSMITH_NBGRAPH_DIR:-$HOME/.cache/archsmith/nbgraph}"
MARKER="$OUT/.archsmith-nbgraph-$VERSION-v$FORMAT-ok"
DATASETS="cora citeseer pubmed cs physics photo computers arxiv proteins"

log() { echo "[setup-nbgraph] $*" >&2; }

all_there() {
    [ -f "$MARKER" ] || return 1
    for d in $DATASETS; do [ -s "$OUT/$d.csv" ] || return 1; done
}
if all_there; then
    log "NAS-Bench-Graph $VERSION tables already in $OUT; nothing to do"
    exit 0
fi

source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
ensure_venv "$VENV" "$PY"
VPY="$VENV/bin/python"

have="$("$VPY" -c 'from importlib import metadata
for n in ("nas-bench-graph", "numpy"):
    try: print(n, metadata.version(n))
    except metadata.PackageNotFoundError: print(n, "-")')"
if ! grep -qx "nas-bench-graph $VERSION" <<<"$have"; then
    # The package declares no dependencies; --no-deps keeps it that way should a later
    # release add heavy ones. Unpickling needs numpy only (the parameter counts).
    log "pip install nas-bench-graph==$VERSION (about 6 MB from PyPI)"
    "$VPY" -m pip install --no-input --progress-bar off --disable-pip-version-check --no-deps \
        "nas-bench-graph==$VERSION" >&2
fi
if grep -qx "numpy -" <<<"$have"; then
    log "pip install numpy"
    "$VPY" -m pip install --no-input --progress-bar off --disable-pip-version-check numpy >&2
fi

rm -f "$MARKER"
"$VPY" "$(dirname "${BASH_SOURCE[0]}")/nbgraph_convert.py" "$OUT"
touch "$MARKER"
log "ready: nbgraph:<dataset> tasks read $OUT"
