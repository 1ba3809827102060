#!/usr/bin/env bash
# setup-ray.sh: create (or reuse) the Python venv that provides Ray for the `ray` executor.
#
#   eval "$(scripts/setup-ray.sh)"   # install if needed, then export ARCHSMITH_RAY_BIN into this shell
#   scripts/setup-ray.sh             # same, but only prints the export line (progress goes to stderr)
#
# stdout is exactly one line, `export ARCHSMITH_RAY_BIN="<venv>/bin/ray"`, so that it can be eval'ed
# like scripts/setup-torch.sh; `scripts/setup-ray.sh | sed -n 's/^export ARCHSMITH_RAY_BIN="\(.*\)"$/\1/p'`
# gives the bare path. scripts/ray-head.sh uses it this way.
#
# This venv is separate from the torch venv of scripts/setup-torch.sh on purpose: Ray pins its own
# versions of grpcio, protobuf, pydantic, aiohttp, ... and must not disturb the libtorch build env.
# It is about 0.4 GB; a fresh install downloads about 90 MB from PyPI and takes about half a minute.
#
# Idempotent: if ray[default]==$ARCHSMITH_RAY is already installed it only reads package metadata
# (about 0.1 s).
#
# Knobs (all optional):
#   ARCHSMITH_RAY_VENV  venv location            (default: $HOME/.cache/archsmith/ray-venv)
#   ARCHSMITH_PYTHON    interpreter for the venv (default: python3; 3.10 to 3.13 have Ray wheels)
#   ARCHSMITH_RAY       Ray version              (default: 2.60.0, checked with Python 3.11 on x86_64)
#   pip's own PIP_* variables (PIP_INDEX_URL, PIP_NO_CACHE_DIR, ...) are honoured.
set -euo pipefail

RAY_VERSION="${ARCHSMITH_RAY:-2.60.0}"
VENV="${ARCHSMITH_RAY_VENV:-$HOME/.cache/archsmith/ray-venv}"
PY="${ARCHSMITH_PYTHON:-python3}"
MARKER="$VENV/.archsmith-ray-$RAY_VERSION-ok"

log() { echo "[archsmith-setup-ray] $*" >&2; }

# 1. The venv, outside the source tree.
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
ensure_venv "$VENV" "$PY"
VPY="$VENV/bin/python"

# 2. Is ray[default] there? Reads package metadata only; it does not import ray. The [default]
#    extra is what brings the dashboard (and with it the Jobs REST API); checking aiohttp and
#    aiohttp_cors, two of the packages only that extra installs, tells a bare `ray` install apart.
missing="$("$VPY" - "$RAY_VERSION" <<'EOF'
import sys
from importlib import metadata
want = {"ray": sys.argv[1], "aiohttp": None, "aiohttp_cors": None, "grpcio": None}
bad = False
for name, ver in want.items():
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        have = None
    if have is None or (ver is not None and have != ver):
        bad = True
        print(f"[archsmith-setup-ray]   {name}: installed={have} wanted={ver or 'any'}", file=sys.stderr)
print(f"ray[default]=={sys.argv[1]}" if bad else "")
EOF
)"

# 3. Install only when missing, then run an import check once. The check is recorded in $MARKER.
if [ -n "$missing" ]; then
    rm -f "$VENV"/.archsmith-ray-*-ok
    log "pip install $missing  (fresh venv: about 90 MB downloaded from PyPI, about 30 s)"
    "$VPY" -m pip install --no-input --progress-bar off --disable-pip-version-check "$missing" >&2
else
    log "ray[default]==$RAY_VERSION already installed; nothing to install"
fi
if [ ! -x "$VENV/bin/ray" ]; then
    log "ERROR: $VENV/bin/ray missing after install"; exit 1
fi
if [ ! -f "$MARKER" ]; then
    log "checking that ray and its dashboard import (about 3 s)"
    "$VPY" -c 'import ray, ray.dashboard, aiohttp
print("[archsmith-setup-ray] ray", ray.__version__, "| aiohttp", aiohttp.__version__)' >&2
    touch "$MARKER"
fi

echo "export ARCHSMITH_RAY_BIN=\"$VENV/bin/ray\""
