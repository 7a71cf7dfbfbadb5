# Sourced by the scripts that run services (kafka.sh, s3_server.sh, flink_cluster.sh,
# spark_cluster.sh, worker_pool.sh): the one way they stop a process, and the one way they wait
# for a process they launched to become the command it was launched as. The caller defines log and STOP_TIMEOUT (seconds between TERM and KILL);
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

await_exec() {  # await_exec PID PATTERN: wait (<= 10 s) until PID runs a command line matching PATTERN
  # `cmd &` forks a copy of this shell that only then execs cmd: until it has, /proc/PID/cmdline
  # is this script's, and a check of "is our process running" by command line fails on a busy
  # machine although nothing has gone wrong. Returns 1 if PID exits or never matches.
  local pid=$1 pattern=$2 deadline=$(( $(date +%s) + 10 ))
  while kill -0 "$pid" 2>/dev/null; do
    tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$pattern" && return 0
    (( $(date +%s) >= deadline )) && return 1
    sleep 0.05
  done
  return 1
}
