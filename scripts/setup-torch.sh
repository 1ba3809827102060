#!/usr/bin/env bash
# setup.sh: create (or reuse) the Python venv that provides libtorch for the `tch` crate.
#
#   eval "$(./setup.sh)"     # install if needed, then export the build env into this shell
#   ./setup.sh               # same, but only prints the export lines (progress goes to stderr)
#
# Idempotent: if torch==$ARCHSMITH_TORCH, numpy and safetensors are already installed, it only reads
# package metadata (about 0.1 s). On GitHub Actions ($GITHUB_ENV set), it also writes the env there.
#
# Knobs (all optional):
#   ARCHSMITH_VENV     venv location            (default: $HOME/.cache/archsmith/venv)
#   ARCHSMITH_PYTHON   interpreter for the venv (default: python3; any version torch ships wheels for)
#   ARCHSMITH_TORCH    torch version            (default: 2.13.0, which is what tch 0.26 expects)
#   pip's own PIP_* variables (PIP_INDEX_URL, PIP_NO_CACHE_DIR, ...) are honoured.
set -euo pipefail

TORCH_VERSION="${ARCHSMITH_TORCH:-2.13.0}"
VENV="${ARCHSMITH_VENV:-$HOME/.cache/archsmith/venv}"
PY="${ARCHSMITH_PYTHON:-python3}"
MARKER="$VENV/.archsmith-torch-$TORCH_VERSION-ok"

log() { echo "[archsmith-setup] $*" >&2; }

# 1. The venv. It must live outside the source tree: about 4.7 GB, mostly CUDA libraries.
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
ensure_venv "$VENV" "$PY"
VPY="$VENV/bin/python"

# 2. What is missing? This reads package metadata only; it does not import torch.
missing="$("$VPY" - "$TORCH_VERSION" <<'EOF'
import sys
from importlib import metadata
want = {"torch": sys.argv[1], "numpy": None, "safetensors": None}
out = []
for name, ver in want.items():
    try:
        have = metadata.version(name)
    except metadata.PackageNotFoundError:
        have = None
    if have is None or (ver is not None and have.split("+")[0] != ver):
        out.append(f"{name}=={ver}" if ver else name)
        print(f"[archsmith-setup]   {name}: installed={have} wanted={ver or 'any'}", file=sys.stderr)
print(" ".join(out))
EOF
)"

# 3. Install only what is missing, then run an import check once. The check is recorded in $MARKER.
if [ -n "$missing" ]; then
    rm -f "$VENV"/.archsmith-torch-*-ok
    log "pip install $missing  (fresh venv: about 3 GB downloaded from PyPI, 1.5 to 10 min)"
    # PyPI's default Linux x86_64 wheel is the CUDA 13 build. It pulls in the nvidia-* wheels,
    # and libtorch_cpu.so links libcudart even on CPU-only machines, so do NOT use --no-deps.
    "$VPY" -m pip install --no-input --progress-bar off --disable-pip-version-check \
        "torch==$TORCH_VERSION" numpy safetensors >&2
else
    log "torch==$TORCH_VERSION, numpy and safetensors already installed; nothing to install"
fi
if [ ! -f "$MARKER" ]; then
    log "checking that torch imports (about 2 s)"
    "$VPY" -c 'import torch, numpy, safetensors
from torch.utils import cpp_extension
print("[archsmith-setup] torch", torch.__version__, "| numpy", numpy.__version__,
      "| safetensors", safetensors.__version__, "| libtorch lib dir", cpp_extension.library_paths()[0])' >&2
    touch "$MARKER"
fi

# 4. Print the build environment. torch-sys runs `python` if VIRTUAL_ENV is set, otherwise
#    `python3`, and finds either one through PATH, so the venv's bin/ must come first in PATH.
if [ -n "${GITHUB_ENV:-}" ]; then
    { echo "VIRTUAL_ENV=$VENV"; echo "LIBTORCH_USE_PYTORCH=1"; } >> "$GITHUB_ENV"
    echo "$VENV/bin" >> "$GITHUB_PATH"
    log "wrote VIRTUAL_ENV, LIBTORCH_USE_PYTORCH to \$GITHUB_ENV and $VENV/bin to \$GITHUB_PATH"
fi
cat <<EOF
export VIRTUAL_ENV="$VENV"
export LIBTORCH_USE_PYTORCH=1
case "\${PATH}" in "$VENV/bin:"*) ;; *) export PATH="$VENV/bin:\${PATH}" ;; esac
EOF
