#!/usr/bin/env bash
# A single-node KRaft Kafka broker (Kafka 3.9.2 from .cache/jars/kafka/lib, see scripts/fetch_jars.sh)
# on 127.0.0.1, for local runs and integration tests. No ZooKeeper, no Docker.
#
#   scripts/kafka.sh start           start in the background, wait until it serves requests
#   scripts/kafka.sh stop            stop it (clean shutdown, SIGKILL after KAFKA_STOP_TIMEOUT); idempotent
#   scripts/kafka.sh status          exit 0 if running
#   scripts/kafka.sh create-topics   create the product's topics (idempotent)
#
# Environment:
#   KAFKA_PORT (9092)                client listener, 127.0.0.1 only
#   KAFKA_CONTROLLER_PORT (KAFKA_PORT+1)  KRaft controller listener
#   KAFKA_RUN_DIR (.run/kafka)       data (data/), config, pid file (kafka.pid), logs (kafka.out, logs/)
#   KAFKA_PARTITIONS (4)             partitions of the topics made by create-topics (and auto-created ones)
#   KAFKA_RETENTION_BYTES (1 GiB)    retention per partition; there is no time-based retention (see config)
#   KAFKA_TOPICS                     space-separated list, overrides all of the four names below
#   KAFKA_TOPIC_NETWORK (sensor_messages) KAFKA_TOPIC_PROCESS (process_activity)
#   KAFKA_TOPIC_MEMORY (memory_activity)  KAFKA_TOPIC_ALERTS (alerts)
#   KAFKA_SASL_PORT                  optional: also a SASL_PLAINTEXT listener (mechanism PLAIN) here, whose
#                                    users come from KAFKA_SASL_USERS ("name:password name2:password2");
#                                    the config file holding them is private to the owner (mode 600)
#   KAFKA_SASL_SSL_PORT              optional: also a SASL_SSL listener (TLS, then PLAIN with the same users)
#                                    here; its private key and certificate chain are read from the PEM
#                                    file KAFKA_SSL_KEYSTORE_PEM (an unencrypted PKCS#8 key, then the chain)
#   KAFKA_HEAP_OPTS (-Xms256m -Xmx512m), KAFKA_JVM_OPTS (extra JVM flags)
#   KAFKA_START_TIMEOUT (60), KAFKA_STOP_TIMEOUT (30)  seconds
#   JARS_DIR (.cache/jars)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/service_lib.sh
source "$ROOT/scripts/service_lib.sh"
JARS_DIR="${JARS_DIR:-$ROOT/.cache/jars}"
LIB="$JARS_DIR/kafka/lib"
PORT="${KAFKA_PORT:-9092}"
CPORT="${KAFKA_CONTROLLER_PORT:-$((PORT + 1))}"
RUN_DIR="${KAFKA_RUN_DIR:-$ROOT/.run/kafka}"
PID_FILE="$RUN_DIR/kafka.pid"
OUT="$RUN_DIR/kafka.out"
PARTITIONS="${KAFKA_PARTITIONS:-4}"
RETENTION_BYTES="${KAFKA_RETENTION_BYTES:-1073741824}"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-60}"
STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"

die() { echo "kafka.sh: $*" >&2; exit 1; }
log() { echo "kafka.sh: $*"; }

need_java() {
  command -v java >/dev/null 2>&1 \
    || die "java not found on PATH: install a JDK 17 (apt-get install openjdk-17-jdk-headless)"
  [[ -f "$LIB/kafka_2.13-3.9.2.jar" ]] \
    || die "Kafka jars missing in $LIB: run scripts/fetch_jars.sh first"
}

port_open() {  # true when something accepts TCP connections on 127.0.0.1:$1
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

our_pid() {  # prints the broker pid when our broker is running
  [[ -f "$PID_FILE" ]] || return 1
  local pid; pid="$(cat "$PID_FILE" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  # Guard against a recycled pid: it must be a JVM running kafka.Kafka with our config.
  tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q "kafka.Kafka $RUN_DIR/server.properties" || return 1
  echo "$pid"
}

sasl_config() {  # settings of the SASL listeners named in "$@" (sasl_plaintext, sasl_ssl)
  local users="" pair name
  for pair in ${KAFKA_SASL_USERS:?a SASL listener needs KAFKA_SASL_USERS}; do
    users+=" user_${pair%%:*}=\"${pair#*:}\""
  done
  echo "sasl.enabled.mechanisms=PLAIN"
  for name in "$@"; do
    echo "listener.name.$name.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required${users};"
  done
  if [[ " $* " == *" sasl_ssl "* ]]; then
    [[ -r "${KAFKA_SSL_KEYSTORE_PEM:-}" ]] || die "KAFKA_SASL_SSL_PORT needs KAFKA_SSL_KEYSTORE_PEM, a readable PEM file"
    echo "listener.name.sasl_ssl.ssl.keystore.type=PEM"
    echo "listener.name.sasl_ssl.ssl.keystore.location=$KAFKA_SSL_KEYSTORE_PEM"
  fi
}

write_config() {
  mkdir -p "$RUN_DIR/data" "$RUN_DIR/logs"
  local listeners="PLAINTEXT://127.0.0.1:$PORT" protocols="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
  local sasl_listeners=()
  if [[ -n "${KAFKA_SASL_PORT:-}" ]]; then
    listeners+=",SASL_PLAINTEXT://127.0.0.1:$KAFKA_SASL_PORT"
    protocols+=",SASL_PLAINTEXT:SASL_PLAINTEXT"
    sasl_listeners+=(sasl_plaintext)
  fi
  if [[ -n "${KAFKA_SASL_SSL_PORT:-}" ]]; then
    listeners+=",SASL_SSL://127.0.0.1:$KAFKA_SASL_SSL_PORT"
    protocols+=",SASL_SSL:SASL_SSL"
    sasl_listeners+=(sasl_ssl)
  fi
  ( umask 077; : > "$RUN_DIR/server.properties" )  # it may hold SASL passwords
  cat > "$RUN_DIR/server.properties" <<EOF
# Generated by scripts/kafka.sh; edited copies are overwritten at each start.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CPORT
listeners=$listeners,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=$listeners
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=$protocols
log.dirs=$RUN_DIR/data
num.partitions=$PARTITIONS
default.replication.factor=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
# Retention by SIZE only. Time-based retention compares against the records' own (CreateTime)
# timestamps: replayed data with old event times (KDD 1999, test fixtures) would be deleted by the
# first retention check, 30 s after start, and a reader at 'earliest' would find nothing.
log.retention.ms=-1
log.retention.bytes=$RETENTION_BYTES
log.segment.bytes=104857600
EOF
  if (( ${#sasl_listeners[@]} )); then sasl_config "${sasl_listeners[@]}" >> "$RUN_DIR/server.properties"; fi
  cat > "$RUN_DIR/log4j.properties" <<EOF
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File=$RUN_DIR/logs/server.log
log4j.appender.file.MaxFileSize=20MB
log4j.appender.file.MaxBackupIndex=2
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka=INFO
log4j.logger.org.apache.kafka=INFO
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.request.logger=WARN
EOF
  cat > "$RUN_DIR/tools-log4j.properties" <<EOF
log4j.rootLogger=WARN, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.Target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n
EOF
}

set_java_cmd() {  # JAVA_CMD: the common JVM command line prefix (an array: the classpath glob stays literal)
  local heap extra
  read -r -a heap <<< "${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
  read -r -a extra <<< "${KAFKA_JVM_OPTS:-}"
  JAVA_CMD=(java "${heap[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true
    "-Dlog4j.configuration=file:$RUN_DIR/log4j.properties" "-Dkafka.logs.dir=$RUN_DIR/logs" "${extra[@]}"
    -cp "$LIB/*")
}

now_ms() { date +%s%3N; }

start() {
  need_java
  local pid
  if pid="$(our_pid)"; then
    log "already running (pid $pid) on 127.0.0.1:$PORT"
    return 0
  fi
  port_open "$PORT" && die "port $PORT on 127.0.0.1 is already in use by another process (set KAFKA_PORT)"
  port_open "$CPORT" && die "controller port $CPORT on 127.0.0.1 is already in use (set KAFKA_CONTROLLER_PORT)"
  write_config
  set_java_cmd
  local t0; t0=$(now_ms)
  if [[ ! -f "$RUN_DIR/data/meta.properties" ]]; then
    # A KRaft cluster id is 16 random bytes in URL-safe base64 without padding (what
    # `kafka-storage.sh random-uuid` prints); made here to save a JVM start.
    # Like Kafka's own Uuid.randomUuid, never one starting with '-': the tool would read it as
    # an option (1 start in 64 failed with "--cluster-id/-t: expected one argument").
    local cid=-
    while [[ "$cid" == -* ]]; do
      cid="$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    done
    "${JAVA_CMD[@]}" kafka.tools.StorageTool format --ignore-formatted -t "$cid" -c "$RUN_DIR/server.properties" \
      > "$RUN_DIR/format.out" 2>&1 || { cat "$RUN_DIR/format.out" >&2; die "formatting $RUN_DIR/data failed"; }
  fi
  : > "$OUT"
  # setsid: the broker must not die with the shell (or the test) that started it.
  setsid nohup "${JAVA_CMD[@]}" kafka.Kafka "$RUN_DIR/server.properties" >> "$OUT" 2>&1 < /dev/null &
  echo $! > "$PID_FILE"
  pid=$!
  local deadline=$(( $(date +%s) + START_TIMEOUT ))
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$PID_FILE"
      echo "---- last lines of $OUT / server.log:" >&2
      tail -n 30 "$OUT" >&2 || true
      tail -n 30 "$RUN_DIR/logs/server.log" >&2 2>/dev/null || true
      die "broker exited during start-up"
    fi
    if port_open "$PORT" && grep -q "Kafka Server started" "$RUN_DIR/logs/server.log" 2>/dev/null; then
      break
    fi
    if (( $(date +%s) >= deadline )); then
      stop >/dev/null 2>&1 || true
      die "broker did not become ready within ${START_TIMEOUT}s (see $RUN_DIR/logs/server.log)"
    fi
    sleep 0.2
  done
  log "started (pid $pid) on 127.0.0.1:$PORT in $(( $(now_ms) - t0 )) ms; data in $RUN_DIR/data, log $RUN_DIR/logs/server.log"
}

stop() { stop_service; }

status() {
  local pid
  if pid="$(our_pid)"; then
    log "running (pid $pid) on 127.0.0.1:$PORT, data in $RUN_DIR/data"
  else
    log "not running"
    return 1
  fi
}

create_topics() {
  need_java
  our_pid >/dev/null || port_open "$PORT" || die "no broker on 127.0.0.1:$PORT: run scripts/kafka.sh start first"
  local topics
  if [[ -n "${KAFKA_TOPICS:-}" ]]; then
    topics="$KAFKA_TOPICS"
  else
    topics="${KAFKA_TOPIC_NETWORK:-sensor_messages} ${KAFKA_TOPIC_PROCESS:-process_activity} ${KAFKA_TOPIC_MEMORY:-memory_activity} ${KAFKA_TOPIC_ALERTS:-alerts}"
  fi
  mkdir -p "$RUN_DIR"
  # One JVM for all topics (kafka-topics.sh would start one per topic): a single-file Java program.
  cat > "$RUN_DIR/CreateTopics.java" <<'EOF'
import java.util.*;
import java.util.concurrent.ExecutionException;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.common.errors.TopicExistsException;

public class CreateTopics {
  public static void main(String[] a) throws Exception {
    Properties p = new Properties();
    p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, a[0]);
    int partitions = Integer.parseInt(a[1]);
    try (Admin admin = Admin.create(p)) {
      List<NewTopic> wanted = new ArrayList<>();
      for (int i = 2; i < a.length; i++) wanted.add(new NewTopic(a[i], partitions, (short) 1));
      int failed = 0;
      for (Map.Entry<String, org.apache.kafka.common.KafkaFuture<Void>> e :
           admin.createTopics(wanted).values().entrySet()) {
        try {
          e.getValue().get();
          System.out.println("created " + e.getKey() + " (" + partitions + " partitions)");
        } catch (ExecutionException ex) {
          if (ex.getCause() instanceof TopicExistsException) {
            System.out.println("exists  " + e.getKey());
          } else {
            System.err.println("FAILED  " + e.getKey() + ": " + ex.getCause());
            failed++;
          }
        }
      }
      System.exit(failed == 0 ? 0 : 1);
    }
  }
}
EOF
  [[ -f "$RUN_DIR/tools-log4j.properties" ]] || write_config
  # shellcheck disable=SC2086  # $topics is a word list
  java -Xmx128m "-Dlog4j.configuration=file:$RUN_DIR/tools-log4j.properties" -cp "$LIB/*" \
    "$RUN_DIR/CreateTopics.java" "127.0.0.1:$PORT" "$PARTITIONS" $topics \
    | sed 's/^/kafka.sh: /'
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  create-topics) create_topics ;;
  *) echo "usage: $0 start|stop|status|create-topics" >&2; exit 2 ;;
esac
