#!/usr/bin/env bash
# A local S3-compatible object store (MinIO, built from source through the Go module proxy) on
# 127.0.0.1, for local runs and the object-storage integration tests. No Docker.
#
#   scripts/s3_server.sh install   build the pinned MinIO once (cached; a no-op afterwards)
#   scripts/s3_server.sh start     install if needed, start in the background, wait until ready
#   scripts/s3_server.sh stop      stop it (SIGKILL after S3_STOP_TIMEOUT); idempotent
#   scripts/s3_server.sh status    exit 0 if running
#   scripts/s3_server.sh env       print the AWS_* exports that point boto3 (and Beam) at it
#
# Environment:
#   S3_PORT (9000)                  S3 API on 127.0.0.1 only; the web console is off
#   S3_RUN_DIR (.run/s3)            data (data/), pid file (minio.pid), log (minio.out)
#   S3_ACCESS_KEY (attack-detection), S3_SECRET_KEY (attack-detection-local)
#                                   the server's root credentials: a local test server's, not
#                                   secrets; never reuse them for anything reachable
#   S3_START_TIMEOUT (60), S3_STOP_TIMEOUT (20)  seconds
#   S3_BIN_CACHE (~/.cache/streaming-attack-detection/bin)  where built binaries are kept
#   MINIO_MODULE_VERSION            the pinned MinIO commit (a Go pseudo-version, below)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/service_lib.sh
source "$ROOT/scripts/service_lib.sh"
# MinIO tags releases as RELEASE.<date>, not semver, so the module proxy knows only commit
# pseudo-versions; this one is master of 2026-02-12. Cold build ~4 min on 2 cores.
MINIO_MODULE_VERSION="${MINIO_MODULE_VERSION:-v0.0.0-20260212201848-7aac2a2c5b7c}"
BIN_CACHE="${S3_BIN_CACHE:-$HOME/.cache/streaming-attack-detection/bin}"
BIN="$BIN_CACHE/minio-$MINIO_MODULE_VERSION"
PORT="${S3_PORT:-9000}"
RUN_DIR="${S3_RUN_DIR:-$ROOT/.run/s3}"
PID_FILE="$RUN_DIR/minio.pid"
OUT="$RUN_DIR/minio.out"
ACCESS_KEY="${S3_ACCESS_KEY:-attack-detection}"
SECRET_KEY="${S3_SECRET_KEY:-attack-detection-local}"
START_TIMEOUT="${S3_START_TIMEOUT:-60}"
STOP_TIMEOUT="${S3_STOP_TIMEOUT:-20}"

die() { echo "s3_server.sh: $*" >&2; exit 1; }
log() { echo "s3_server.sh: $*"; }

install() {
  if [[ -x "$BIN" ]]; then
    link_into_repo
    return 0
  fi
  command -v go >/dev/null 2>&1 \
    || die "go not found on PATH: install Go 1.24+ (MinIO is built from source), or put a minio binary at $BIN"
  log "building MinIO $MINIO_MODULE_VERSION with the Go module proxy (a few minutes, once)"
  local t0 tmp; t0=$(date +%s)
  mkdir -p "$BIN_CACHE"
  tmp="$(mktemp -d "$BIN_CACHE/.build-XXXXXX")"
  # GOBIN in a temp dir, then a rename: a half-built or interrupted build never becomes $BIN.
  if ! GOBIN="$tmp" GOFLAGS=-buildvcs=false go install -trimpath -ldflags '-s -w' \
      "github.com/minio/minio@$MINIO_MODULE_VERSION"; then
    rm -rf "$tmp"
    die "building MinIO failed"
  fi
  mv -f "$tmp/minio" "$BIN"
  rm -rf "$tmp"
  link_into_repo
  log "built $BIN in $(( $(date +%s) - t0 )) s"
}

link_into_repo() {  # .cache/bin/minio -> the cached binary (git-ignored; for people, not scripts)
  mkdir -p "$ROOT/.cache/bin"
  ln -sfn "$BIN" "$ROOT/.cache/bin/minio"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

ready() { curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/minio/health/ready" 2>/dev/null; }

our_pid() {  # prints the server pid when our server is running
  [[ -f "$PID_FILE" ]] || return 1
  local pid; pid="$(cat "$PID_FILE" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against a recycled pid: it must be minio serving our data dir.
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "server .*$RUN_DIR/data" || return 1
  echo "$pid"
}

start() {
  install
  local pid
  if pid="$(our_pid)"; then
    log "already running (pid $pid) on 127.0.0.1:$PORT"
    return 0
  fi
  port_open "$PORT" && die "port $PORT on 127.0.0.1 is already in use by another process (set S3_PORT)"
  mkdir -p "$RUN_DIR/data"
  : > "$OUT"
  local t0; t0=$(date +%s%3N)
  # Credentials through the environment, never the command line (process listings show it).
  # setsid: the server must not die with the shell (or the test) that started it.
  MINIO_ROOT_USER="$ACCESS_KEY" MINIO_ROOT_PASSWORD="$SECRET_KEY" MINIO_BROWSER=off \
    MINIO_UPDATE=off MINIO_CALLHOME_ENABLE=off \
    setsid nohup "$BIN" server --quiet --anonymous --address "127.0.0.1:$PORT" "$RUN_DIR/data" \
    >> "$OUT" 2>&1 < /dev/null &
  pid=$!
  echo "$pid" > "$PID_FILE"
  local deadline=$(( $(date +%s) + START_TIMEOUT ))
  until ready; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$PID_FILE"
      tail -n 30 "$OUT" >&2 || true
      die "MinIO exited during start-up"
    fi
    if (( $(date +%s) >= deadline )); then
      stop >/dev/null 2>&1 || true
      die "MinIO did not become ready within ${START_TIMEOUT}s (see $OUT)"
    fi
    sleep 0.2
  done
  log "started (pid $pid) on http://127.0.0.1:$PORT in $(( $(date +%s%3N) - t0 )) ms; data in $RUN_DIR/data"
}

stop() { stop_service; }

status() {
  local pid
  if pid="$(our_pid)"; then
    log "running (pid $pid) on http://127.0.0.1:$PORT, data in $RUN_DIR/data"
  else
    log "not running"
    return 1
  fi
}

print_env() {  # boto3 reads these; Beam's S3 filesystem uses boto3's defaults for unset options
  cat <<EOF
export AWS_ENDPOINT_URL=http://127.0.0.1:$PORT
export AWS_ACCESS_KEY_ID=$ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
export AWS_DEFAULT_REGION=us-east-1
EOF
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) print_env ;;
  *) echo "usage: $0 install|start|stop|status|env" >&2; exit 2 ;;
esac
