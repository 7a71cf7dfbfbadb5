#!/usr/bin/env bash
# The stream job on a real Flink cluster.
#
#   ./run_flink.sh                                  start a local standalone session cluster
#                                                   (JobManager + TaskManager JVMs) and Kafka if
#                                                   none run, then submit the job (Ctrl-C stops it)
#   ./run_flink.sh --flink_master=host:8081 --bootstrap_servers=broker:9092 [stream options]
#                                                   submit to an existing cluster and broker
#
# Any other option goes to `python -m pipelines.stream` (see its --help), e.g. --max_records=N
# for a bounded run, --parallelism=2. Checkpoints every 10 s are the stream job's default
# (--checkpointing_interval=-1 turns them off). On a remote cluster the
# Python workers are a worker pool beside each TaskManager:
#   python -m apache_beam.runners.worker.worker_pool_main --service_port=50000
# and the job gets --environment_type=EXTERNAL --environment_config=localhost:50000.
set -euo pipefail
cd "$(dirname "$0")"

case " $* " in *" -h "*|*" --help "*) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
FLINK_MASTER=
BOOTSTRAP=
for arg in "$@"; do
  case "$arg" in
    --flink_master=*) FLINK_MASTER=${arg#*=} ;;
    --bootstrap_servers=*) BOOTSTRAP=${arg#*=} ;;
  esac
done

scripts/bootstrap.sh
PASS=("$@")
if [ -z "$BOOTSTRAP" ]; then
  export KAFKA_PORT=${KAFKA_PORT:-9092}
  BOOTSTRAP=127.0.0.1:$KAFKA_PORT
  scripts/kafka.sh status >/dev/null 2>&1 || { scripts/kafka.sh start && scripts/kafka.sh create-topics; }
  PASS+=("--bootstrap_servers=$BOOTSTRAP")
fi
if [ -z "$FLINK_MASTER" ]; then
  export FLINK_REST_PORT=${FLINK_REST_PORT:-8081}
  scripts/flink_cluster.sh status >/dev/null 2>&1 || scripts/flink_cluster.sh start
  FLINK_MASTER=localhost:$FLINK_REST_PORT
  PASS+=("--flink_master=$FLINK_MASTER")
fi
echo "Flink web UI: http://${FLINK_MASTER/localhost/127.0.0.1}"
echo "Kafka: $BOOTSTRAP; the cluster and broker keep running afterwards:"
echo "  scripts/flink_cluster.sh stop; scripts/kafka.sh stop"
.venv/bin/python -m pipelines.bootstrap --model_dir models
exec .venv/bin/python -m pipelines.stream --runner=FlinkRunner --model_dir=models --output=output \
    "${PASS[@]}"
