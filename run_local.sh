#!/usr/bin/env bash
# The whole product on this machine, one command: a local Kafka broker, models (trained on
# synthetic data when the registry is empty), the traffic generator, and the stream job on an
# embedded Flink, with live progress and the job's own summary (its counters) at the end.
#
#   ./run_local.sh                      60 s of traffic at 2000 messages/s, then stop
#   ./run_local.sh --duration 300 --rate 5000
#   ./run_local.sh --keep_broker        leave Kafka running afterwards (scripts/kafka.sh stop)
#   ./run_local.sh --keep_services      leave the job server and expansion service running for
#                                       the next run (kill $(cat .run/services.pid) to stop)
#
# Everything it writes stays in this folder: .run/ (broker data, logs), models/, output/.
set -euo pipefail
cd "$(dirname "$0")"

DURATION=60
RATE=2000
MALFORMED=0.01
OUTPUT=output
MODEL_DIR=models
KEEP_BROKER=0
KEEP_SERVICES=0
usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION=$2; shift 2 ;;
    --rate) RATE=$2; shift 2 ;;
    --malformed_fraction) MALFORMED=$2; shift 2 ;;
    --output) OUTPUT=$2; shift 2 ;;
    --model_dir) MODEL_DIR=$2; shift 2 ;;
    --keep_broker) KEEP_BROKER=1; shift ;;
    --keep_services) KEEP_SERVICES=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "run_local.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
RECORDS=$(( DURATION * RATE ))
export KAFKA_PORT=${KAFKA_PORT:-9092}
BOOTSTRAP=127.0.0.1:$KAFKA_PORT
PY=.venv/bin/python
mkdir -p .run

step() { printf '\n== %s\n' "$*"; }

step "set-up (Python packages, pinned JVM artifacts)"
# Only what this run uses: the browser (dashboard test) and MinIO (object-storage tests) are
# the test command's (./run_tests.sh).
SKIP_BROWSER=1 SKIP_S3=1 scripts/bootstrap.sh

# The job server and the expansion service (pipelines/services.py) start first, while the
# broker starts and the models are made, and a run with --keep_services leaves them for the
# next: the job then starts neither JVM itself.
SERVICES_FLAGS=.run/services.flags
SERVICES_STARTED=
services_alive() { [ -f .run/services.pid ] && kill -0 "$(cat .run/services.pid)" 2>/dev/null && [ -s "$SERVICES_FLAGS" ]; }
if services_alive; then
  step "job server and expansion service: reusing the running ones (pid $(cat .run/services.pid))"
else
  step "job server and expansion service (log: .run/services.log)"
  rm -f "$SERVICES_FLAGS"
  $PY -m pipelines.services --flags_file "$SERVICES_FLAGS" > .run/services.log 2>&1 &
  SERVICES_STARTED=$!
  echo "$SERVICES_STARTED" > .run/services.pid
fi

step "Kafka broker on $BOOTSTRAP"
scripts/kafka.sh start
scripts/kafka.sh create-topics
cleanup() {
  [ -n "${MONITOR_PID:-}" ] && kill "$MONITOR_PID" 2>/dev/null || true
  [ -n "${GENERATOR_PID:-}" ] && kill "$GENERATOR_PID" 2>/dev/null || true
  [ -n "${STREAM_PID:-}" ] && kill -TERM "$STREAM_PID" 2>/dev/null && wait "$STREAM_PID" 2>/dev/null || true
  if [ -n "$SERVICES_STARTED" ] && [ "$KEEP_SERVICES" = 0 ]; then
    kill -TERM "$SERVICES_STARTED" 2>/dev/null && wait "$SERVICES_STARTED" 2>/dev/null || true
    rm -f .run/services.pid
  fi
  if [ "$KEEP_BROKER" = 0 ]; then scripts/kafka.sh stop >/dev/null || true; fi
}
trap cleanup EXIT

step "models in $MODEL_DIR/"
$PY -m pipelines.bootstrap --model_dir "$MODEL_DIR"

# Everything the job and its JVMs print (Flink's logs, Java stack traces at shutdown) goes to
# the log; the terminal gets the progress lines and the summary.
step "stream job on embedded Flink (log: .run/stream.log)"
echo "Flink web UI: none for the embedded cluster; run_flink.sh runs a standalone one with a UI"
waited=0
until [ -s "$SERVICES_FLAGS" ]; do
  if [ -n "$SERVICES_STARTED" ] && ! kill -0 "$SERVICES_STARTED" 2>/dev/null; then
    echo "the job server / expansion service did not start: see .run/services.log" >&2
    tail -20 .run/services.log >&2; exit 1
  fi
  (( waited++ > 300 )) && { echo "the services did not start within 300 s" >&2; exit 1; }
  sleep 1
done
# shellcheck disable=SC2046  # one flag per word
$PY -m pipelines.stream --runner=FlinkRunner --bootstrap_servers="$BOOTSTRAP" \
    --output="$OUTPUT" --model_dir="$MODEL_DIR" --roll_seconds=10 $(cat "$SERVICES_FLAGS") \
    > .run/stream.log 2>&1 &
STREAM_PID=$!
job_failed() { echo "stream job failed: see .run/stream.log" >&2; tail -20 .run/stream.log >&2; exit 1; }

# The generator starts once every task of the job runs, so that the alert latency measured at
# the end is the job's, not Flink's start-up.
running() {
  local rest jobs
  rest=$(sed -n 's/.*--flink_rest_url=\([^ ]*\).*/\1/p' "$SERVICES_FLAGS")
  [ -n "$rest" ] || return 1
  # The embedded Flink (and its REST API) starts only once the job is submitted.
  jobs=$(curl -fsS --max-time 2 "$rest/jobs/overview" 2>/dev/null) || return 1
  $PY -c '
import json, sys
jobs = [j for j in json.loads(sys.argv[1])["jobs"] if j["state"] == "RUNNING"]
sys.exit(0 if jobs and all(j["tasks"]["running"] == j["tasks"]["total"] for j in jobs) else 1)' "$jobs"
}
started=$(date +%s)
until running; do
  kill -0 "$STREAM_PID" 2>/dev/null || { STREAM_PID=; job_failed; }
  (( $(date +%s) - started > 300 )) && { echo "the job did not start within 300 s" >&2; job_failed; }
  sleep 1
done
echo "job running after $(( $(date +%s) - started )) s"

step "generator: $RECORDS messages at $RATE/s (log: .run/generator.log)"
$PY -m pipelines.generate --bootstrap_servers "$BOOTSTRAP" --rate "$RATE" --count "$RECORDS" \
    --malformed_fraction "$MALFORMED" > .run/generator.log 2>&1 &
GENERATOR_PID=$!

step "progress every 10 s (Kafka and $OUTPUT/)"
$PY -m pipelines.monitor --output "$OUTPUT" --bootstrap_servers "$BOOTSTRAP" --every 10 &
MONITOR_PID=$!

wait "$GENERATOR_PID" || echo "generator reported failures: see .run/generator.log" >&2
GENERATOR_PID=
tail -1 .run/generator.log
# Two more rolls of the output files, then stop the job (SIGTERM: it cancels and summarises).
sleep 25
kill "$MONITOR_PID" 2>/dev/null || true; MONITOR_PID=
kill -TERM "$STREAM_PID" 2>/dev/null || true
wait "$STREAM_PID" || { STREAM_PID=; job_failed; }
STREAM_PID=

step "summary"
$PY -m pipelines.monitor --output "$OUTPUT" --bootstrap_servers "$BOOTSTRAP" --once
echo "outputs: $OUTPUT/ (Parquet); alerts also in the Kafka topic 'alerts'"
sed -n '/^Run summary/,/dead_letter/p' .run/stream.log
sed -n 's/.*pipelines.startup \(startup: .*\)/\1/p' .run/stream.log
