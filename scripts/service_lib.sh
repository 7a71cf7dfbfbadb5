# Sourced by scripts/kafka.sh and scripts/s3_server.sh: the one way they stop their service.
# The caller defines our_pid (prints the pid while its service runs), log, PID_FILE and
# STOP_TIMEOUT (seconds between TERM and KILL).

stop_service() {
  local pid
  if ! pid="$(our_pid)"; then
    rm -f "$PID_FILE"
    log "not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$(( $(date +%s) + STOP_TIMEOUT ))
  while kill -0 "$pid" 2>/dev/null; do
    if (( $(date +%s) >= deadline )); then
      log "no clean shutdown within ${STOP_TIMEOUT}s: killing pid $pid"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  rm -f "$PID_FILE"
  log "stopped (pid $pid)"
}
