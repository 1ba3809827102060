# Sourced by setup-torch.sh and setup-ray.sh: `ensure_venv VENV PY` creates (or reuses) a Python
# virtual environment at VENV with interpreter PY, refusing to touch a non-empty folder that is
# not one. Needs a `log` function. On Debian/Ubuntu, `python3 -m venv` needs python3-venv.
ensure_venv() {
    local venv="$1" py="$2"
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import sys' 2>/dev/null; then
        log "using existing venv $venv"
        return 0
    fi
    command -v "$py" >/dev/null || { log "ERROR: '$py' not found (set ARCHSMITH_PYTHON)"; exit 1; }
    if [ -e "$venv" ] && [ ! -f "$venv/pyvenv.cfg" ] && [ -n "$(ls -A "$venv" 2>/dev/null)" ]; then
        log "ERROR: $venv exists, is not empty, and is not a venv; refusing to touch it"; exit 1
    fi
    log "creating venv $venv with $("$py" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
    mkdir -p "$(dirname "$venv")"
    # --clear recreates a broken venv, e.g. one whose base interpreter was removed.
    if ! "$py" -m venv --clear "$venv"; then
        log "ERROR: '$py -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)"; exit 1
    fi
}
