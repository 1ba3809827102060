#!/usr/bin/env bash
# llm-server.sh: llama.cpp's llama-server with the local model, on 127.0.0.1 only.
#
#   scripts/llm-server.sh start    # start (or find) the server; prints http://127.0.0.1:PORT on stdout
#   scripts/llm-server.sh status   # exit 0 and print the URL when GET /health answers ok, else exit 1
#   scripts/llm-server.sh stop     # stop the server this script started; succeeds when none runs
#
# A run does not need this: with `provider = "local"` (the default when no API key is set and the
# model is installed) it starts its own server and stops it at its end. This script is for
# `[llm.local] autostart = false` (a server shared by several runs), and for benchmarks.
# `start` waits until GET /health answers {"status":"ok"} (the model is loaded), at most
# $ARCHSMITH_LLM_START_TIMEOUT seconds. The binary and model come from scripts/setup-llm.sh
# (`scripts/setup.sh --llm`), which this script does not run: the first build takes ~20 minutes.
#
# Knobs (all optional):
#   ARCHSMITH_LLM_PORT           port on 127.0.0.1              (default: 8181)
#   ARCHSMITH_LLM_THREADS        CPU threads                    (default: 2)
#   ARCHSMITH_LLM_CTX            context size in tokens         (default: 4096)
#   ARCHSMITH_LLM_HOME           install location               (default: ~/.cache/archsmith/llm)
#   ARCHSMITH_LLAMA_SERVER       the llama-server binary        (default: $ARCHSMITH_LLM_HOME/bin/llama-server)
#   ARCHSMITH_LLM_MODEL          the GGUF model file            (default: the installed Gemma 3 270M)
#   ARCHSMITH_LLM_START_TIMEOUT  seconds to wait for /health    (default: 120)
#   ARCHSMITH_LLM_RUN_DIR        pid file and log               (default: $ARCHSMITH_LLM_HOME/run)
set -euo pipefail

log() { echo "[archsmith-llm-server] $*" >&2; }

HOME_DIR="${ARCHSMITH_LLM_HOME:-$HOME/.cache/archsmith/llm}"
PORT="${ARCHSMITH_LLM_PORT:-8181}"
THREADS="${ARCHSMITH_LLM_THREADS:-2}"
CTX="${ARCHSMITH_LLM_CTX:-4096}"
BIN="${ARCHSMITH_LLAMA_SERVER:-$HOME_DIR/bin/llama-server}"
MODEL="${ARCHSMITH_LLM_MODEL:-$HOME_DIR/models/gemma-3-270m-q4_k_m.gguf}"
TIMEOUT="${ARCHSMITH_LLM_START_TIMEOUT:-120}"
RUN_DIR="${ARCHSMITH_LLM_RUN_DIR:-$HOME_DIR/run}"
PIDFILE="$RUN_DIR/llama-server-$PORT.pid"
LOGFILE="$RUN_DIR/llama-server-$PORT.log"
URL="http://127.0.0.1:$PORT"

healthy() { curl -fsS --max-time 2 "$URL/health" 2>/dev/null | grep -q '"ok"'; }
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }
our_pid() {
    [ -f "$PIDFILE" ] || return 1
    local pid
    pid="$(cat "$PIDFILE")"
    kill -0 "$pid" 2>/dev/null && [ "$(basename "$(readlink "/proc/$pid/exe" 2>/dev/null)")" = "llama-server" ] && echo "$pid"
}

cmd="${1:-}"
case "$cmd" in
status)
    if healthy; then
        echo "$URL"
    else
        log "no llama-server answers /health at $URL"
        exit 1
    fi
    ;;
start)
    if healthy; then
        log "llama-server already running at $URL"
        echo "$URL"
        exit 0
    fi
    [ -x "$BIN" ] || { log "ERROR: llama-server not found at $BIN; run scripts/setup.sh --llm (or set ARCHSMITH_LLAMA_SERVER)"; exit 1; }
    [ -f "$MODEL" ] || { log "ERROR: model file not found at $MODEL; run scripts/setup.sh --llm (or set ARCHSMITH_LLM_MODEL)"; exit 1; }
    if [ "$(head -c 4 "$MODEL")" != "GGUF" ]; then
        log "ERROR: $MODEL is not a GGUF file; delete it and run scripts/setup.sh --llm again"; exit 1
    fi
    if port_taken; then
        log "ERROR: port $PORT on 127.0.0.1 is already taken by something that is not a healthy llama-server; set ARCHSMITH_LLM_PORT"
        exit 1
    fi
    mkdir -p "$RUN_DIR"
    log "$BIN -m $MODEL --host 127.0.0.1 --port $PORT -t $THREADS -c $CTX --parallel 1 --no-repack (log: $LOGFILE)"
    t0=$(date +%s)
    nohup "$BIN" -m "$MODEL" --host 127.0.0.1 --port "$PORT" -t "$THREADS" -c "$CTX" \
        --parallel 1 --no-webui --no-repack >"$LOGFILE" 2>&1 </dev/null &
    # --no-repack: repacked weights use ggml's AMX kernels on CPUs that report AMX, which
    # crash where the hypervisor does not enable AMX tiles; the AVX2 kernels run instead.
    pid=$!
    echo "$pid" >"$PIDFILE"
    until healthy; do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "ERROR: llama-server exited before it answered; the end of $LOGFILE:"
            tail -n 8 "$LOGFILE" >&2 || true
            rm -f "$PIDFILE"
            exit 1
        fi
        if [ $(($(date +%s) - t0)) -ge "$TIMEOUT" ]; then
            log "ERROR: llama-server did not answer /health within ${TIMEOUT}s; stopping it (log: $LOGFILE)"
            kill "$pid" 2>/dev/null || true
            rm -f "$PIDFILE"
            exit 1
        fi
        sleep 0.5
    done
    log "llama-server up after $(($(date +%s) - t0))s at $URL (pid $pid)"
    echo "$URL"
    ;;
stop)
    if pid="$(our_pid)"; then
        kill "$pid"
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
        rm -f "$PIDFILE"
        log "stopped llama-server (pid $pid) on port $PORT"
    else
        rm -f "$PIDFILE"
        log "no llama-server started by this script on port $PORT; nothing to stop"
    fi
    ;;
*)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac
