# Sourced by scripts/kafka.sh, scripts/s3_server.sh and scripts/flink_cluster.sh: the one way
# they stop a process. The caller defines log and STOP_TIMEOUT (seconds between TERM and KILL);
# for stop_service also our_pid (prints the pid while its service runs) and PID_FILE.

terminate() {  # terminate PID NAME: TERM, then KILL if PID still runs after STOP_TIMEOUT
  local pid=$1 name=$2
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$(( $(date +%s) + STOP_TIMEOUT ))
  while kill -0 "$pid" 2>/dev/null; do
    if (( $(date +%s) >= deadline )); then
      log "$name did not stop within ${STOP_TIMEOUT}s: killing pid $pid"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
}

stop_service() {
  local pid
  if ! pid="$(our_pid)"; then
    rm -f "$PID_FILE"
    log "not running"
    return 0
  fi
  terminate "$pid" "the service"
  rm -f "$PID_FILE"
  log "stopped (pid $pid)"
}
