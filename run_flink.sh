#!/usr/bin/env bash
# The stream job on a real Flink cluster.
#
#   ./run_flink.sh                                  start a local standalone session cluster
#                                                   (JobManager + TaskManager JVMs) and Kafka if
#                                                   none run, then submit the job (Ctrl-C stops it)
#   ./run_flink.sh --flink_master=host:8081 --bootstrap_servers=broker:9092 [stream options]
#                                                   submit to an existing cluster and broker
#
# Any other option goes to `python -m pipelines.stream` (see its --help), e.g. --run_for_s=N
# for a bounded run, --parallelism=2, --checkpoint_dir=s3://bucket/path --stop_with_savepoint.
# Checkpoints every 10 s are the stream job's default (--checkpointing_interval=-1: off).
# The Python SDK workers come from a worker pool beside each TaskManager (EXTERNAL environment,
# port WORKER_POOL_PORT, 50000): the local cluster starts one (scripts/worker_pool.sh); on your
# cluster run `scripts/worker_pool.sh start` on every TaskManager host. Another
# --environment_type (PROCESS, LOOPBACK) given here wins.
set -euo pipefail
cd "$(dirname "$0")"

case " $* " in *" -h "*|*" --help "*) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
FLINK_MASTER=
BOOTSTRAP=
ENVIRONMENT=
for arg in "$@"; do
  case "$arg" in
    --flink_master=*) FLINK_MASTER=${arg#*=} ;;
    --bootstrap_servers=*) BOOTSTRAP=${arg#*=} ;;
    --environment_type=*) ENVIRONMENT=${arg#*=} ;;
  esac
done
export WORKER_POOL_PORT=${WORKER_POOL_PORT:-50000}

# The job's own needs only: the browser and MinIO are the test command's (./run_tests.sh).
SKIP_BROWSER=1 SKIP_S3=1 scripts/bootstrap.sh
PASS=("$@")
if [ -z "$ENVIRONMENT" ]; then
  PASS+=("--environment_type=EXTERNAL" "--environment_config=localhost:$WORKER_POOL_PORT")
fi
if [ -z "$BOOTSTRAP" ]; then
  export KAFKA_PORT=${KAFKA_PORT:-9092}
  BOOTSTRAP=127.0.0.1:$KAFKA_PORT
  scripts/kafka.sh status >/dev/null 2>&1 || { scripts/kafka.sh start && scripts/kafka.sh create-topics; }
  PASS+=("--bootstrap_servers=$BOOTSTRAP")
fi
if [ -z "$FLINK_MASTER" ]; then
  export FLINK_REST_PORT=${FLINK_REST_PORT:-8081}
  export FLINK_WORKER_POOL_PORT=$WORKER_POOL_PORT
  scripts/flink_cluster.sh status >/dev/null 2>&1 || scripts/flink_cluster.sh start
  # A cluster started without a pool gets one (flink_cluster.sh keeps it in the same place).
  export WORKER_POOL_RUN_DIR=$PWD/.run/flink/worker_pool
  scripts/worker_pool.sh status >/dev/null 2>&1 || scripts/worker_pool.sh start
  FLINK_MASTER=localhost:$FLINK_REST_PORT
  PASS+=("--flink_master=$FLINK_MASTER")
fi
echo "Flink web UI: http://${FLINK_MASTER/localhost/127.0.0.1}"
echo "Kafka: $BOOTSTRAP; the cluster and broker keep running afterwards:"
echo "  FLINK_WORKER_POOL_PORT=$WORKER_POOL_PORT scripts/flink_cluster.sh stop; scripts/kafka.sh stop"
.venv/bin/python -m pipelines.bootstrap --model_dir models
exec .venv/bin/python -m pipelines.stream --runner=FlinkRunner --model_dir=models --output=output \
    "${PASS[@]}"
