#!/usr/bin/env bash
# Prepares a fresh machine for archsmith, idempotently: checks the Rust toolchain, fetches the
# crates, and (when the crate links libtorch) installs PyTorch into a virtual environment
# outside the source tree. Prints nothing on stdout; progress goes to stderr.
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

log "fetching crates"
cargo fetch --locked >&2
log "ready"
