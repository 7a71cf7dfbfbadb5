# Sourced by the scripts that run services (kafka.sh, s3_server.sh, flink_cluster.sh,
# spark_cluster.sh, worker_pool.sh): the one way they stop a process, and the one way they wait
# for a process they launched to become the command it was launched as. The caller defines
# STOP_TIMEOUT (seconds between TERM and KILL); for stop_service also our_pid (prints the pid
# while its service runs) and PID_FILE; for stop_one pid_of NAME and RUN_DIR (NAME.pid there).
# die and log prefix the calling script's name; a script may define its own after sourcing.

SERVICE_NAME="${0##*/}"
die() { echo "$SERVICE_NAME: $*" >&2; exit 1; }
log() { echo "$SERVICE_NAME: $*"; }
now_ms() { date +%s%3N; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }  # something accepts on 127.0.0.1:$1

need_java_and_curl() {
  command -v java >/dev/null 2>&1 \
    || die "java not found on PATH: install a JDK 17 (apt-get install openjdk-17-jdk-headless)"
  command -v curl >/dev/null 2>&1 || die "curl not found on PATH (apt-get install curl)"
}

# The JDK packages both Flink's config.yaml and Spark's launcher (JavaModuleOptions) open on
# Java 17 (Kryo, Netty and friends reflect into them); each cluster script adds its own others.
JAVA17_COMMON_OPTS=(
  --add-opens=java.base/java.lang=ALL-UNNAMED --add-opens=java.base/java.lang.reflect=ALL-UNNAMED
  --add-opens=java.base/java.io=ALL-UNNAMED --add-opens=java.base/java.net=ALL-UNNAMED
  --add-opens=java.base/java.nio=ALL-UNNAMED --add-opens=java.base/sun.nio.ch=ALL-UNNAMED
  --add-opens=java.base/java.util=ALL-UNNAMED --add-opens=java.base/java.util.concurrent=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent.atomic=ALL-UNNAMED
)

pid_matching() {  # pid_matching PID_FILE PATTERN: prints the pid in PID_FILE if it runs a command line matching PATTERN
  local pid
  [[ -f "$1" ]] || return 1
  pid="$(cat "$1" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2" || return 1
  echo "$pid"
}

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

stop_one() {  # stop_one NAME: one of a cluster's processes (pid_of NAME), if it runs
  local name=$1 pid
  if ! pid="$(pid_of "$name")"; then
    rm -f "$RUN_DIR/$name.pid"
    return 0
  fi
  terminate "$pid" "$name"
  rm -f "$RUN_DIR/$name.pid"
  log "stopped $name (pid $pid)"
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
