#!/usr/bin/env bash
# A Python SDK worker pool beside a TaskManager (Beam's EXTERNAL environment; see
# pipelines/worker_pool.py). Run it on every TaskManager host, from an installation of this
# project (its .venv, or BEAM_SDK_PYTHON=/path/to/python of an environment with it installed).
#
#   scripts/worker_pool.sh start     in the background; returns once it listens
#   scripts/worker_pool.sh stop      stop it and its workers (SIGTERM, then SIGKILL); idempotent
#   scripts/worker_pool.sh status    exit 0 if it runs
#   scripts/worker_pool.sh run       in the foreground (a container's or systemd's command)
#
# Jobs: --environment_type=EXTERNAL [--environment_config=localhost:$WORKER_POOL_PORT].
#
# Environment:
#   WORKER_POOL_PORT (50000), WORKER_POOL_HOST (127.0.0.1: the TaskManager on this host)
#   WORKER_POOL_RUN_DIR (.run/worker_pool)   pid file and log
#   BEAM_SDK_PYTHON (.venv/bin/python)       the workers' Python
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/service_lib.sh
source "$ROOT/scripts/service_lib.sh"
PORT="${WORKER_POOL_PORT:-50000}"
HOST="${WORKER_POOL_HOST:-127.0.0.1}"
RUN_DIR="${WORKER_POOL_RUN_DIR:-$ROOT/.run/worker_pool}"
export BEAM_SDK_PYTHON="${BEAM_SDK_PYTHON:-$ROOT/.venv/bin/python}"
PIDFILE="$RUN_DIR/worker_pool.pid"

die() { echo "worker_pool.sh: $*" >&2; exit 1; }
log() { echo "worker_pool.sh: $*"; }

STOP_TIMEOUT="${WORKER_POOL_STOP_TIMEOUT:-15}"
COMMAND=("$BEAM_SDK_PYTHON" -m pipelines.worker_pool --host "$HOST" --port "$PORT"
         --container_executable "$ROOT/scripts/sdk_worker.sh")

pid_of() {
  local pid
  [[ -f "$PIDFILE" ]] || return 1
  pid="$(cat "$PIDFILE" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "pipelines.worker_pool --host $HOST --port $PORT" || return 1
  echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

start() {
  [[ -x "$BEAM_SDK_PYTHON" ]] || die "no Python at $BEAM_SDK_PYTHON (scripts/bootstrap.sh, or set BEAM_SDK_PYTHON)"
  if pid="$(pid_of)"; then log "already running (pid $pid) on $HOST:$PORT"; return 0; fi
  port_open "$PORT" && die "port $PORT on $HOST is already in use (set WORKER_POOL_PORT)"
  mkdir -p "$RUN_DIR"
  # The workers' imports come from the installed project; PYTHONPATH covers a plain checkout.
  PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" setsid nohup "${COMMAND[@]}" \
    >> "$RUN_DIR/worker_pool.log" 2>&1 < /dev/null &
  echo $! > "$PIDFILE"
  await_exec $! "pipelines.worker_pool --host $HOST --port $PORT" || true
  local deadline=$(( $(date +%s) + 60 ))
  until port_open "$PORT"; do
    pid_of >/dev/null || { tail -n 20 "$RUN_DIR/worker_pool.log" >&2; die "the worker pool exited during start-up"; }
    (( $(date +%s) >= deadline )) && die "the worker pool did not listen on $HOST:$PORT within 60 s"
    sleep 0.2
  done
  log "started (pid $(pid_of)) on $HOST:$PORT; log $RUN_DIR/worker_pool.log"
}

stop() {
  local pid
  if ! pid="$(pid_of)"; then rm -f "$PIDFILE"; log "not running"; return 0; fi
  terminate "$pid" "worker pool"
  rm -f "$PIDFILE"
  log "stopped (pid $pid)"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if pid="$(pid_of)"; then log "running (pid $pid) on $HOST:$PORT"; else log "not running"; exit 1; fi ;;
  run) export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"; exec "${COMMAND[@]}" ;;
  *) echo "usage: $0 start|stop|status|run" >&2; exit 2 ;;
esac
