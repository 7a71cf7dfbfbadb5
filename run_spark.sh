#!/usr/bin/env bash
# The retrain on a real Spark cluster (Beam's portable SparkRunner; docs/spark.md).
#
#   ./run_spark.sh                                  start a local standalone Spark cluster (Master +
#                                                   Worker JVMs) if none runs, then retrain the
#                                                   network detector from output/archive on it
#   ./run_spark.sh --spark_master_url=spark://host:7077 [retrain options]
#                                                   submit to an existing Spark master
#
# Without an archive under output/ it first makes one, also on Spark: 3,000 generated messages
# (pipelines.generate, into .run/spark-input/) through the bounded detection graph
# (pipelines.stream --source=files). Any other option goes to `python -m pipelines.retrain` (see
# its --help), e.g. --detector process --input 'output/archive/process/dt=*/*.parquet'.
# The cluster keeps running afterwards: scripts/spark_cluster.sh stop.
set -euo pipefail
cd "$(dirname "$0")"

case " $* " in *" -h "*|*" --help "*) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac
MASTER=
DETECTOR=network
INPUT=output
for arg in "$@"; do
  case "$arg" in
    --spark_master_url=*) MASTER=${arg#*=} ;;
    --detector=*) DETECTOR=${arg#*=} ;;
    --input=*) INPUT=${arg#*=} ;;
  esac
done

scripts/bootstrap.sh
PASS=("$@")
if [ -z "$MASTER" ]; then
  export SPARK_MASTER_PORT=${SPARK_MASTER_PORT:-7077} SPARK_MASTER_WEBUI_PORT=${SPARK_MASTER_WEBUI_PORT:-8080}
  scripts/spark_cluster.sh status >/dev/null 2>&1 || scripts/spark_cluster.sh start
  MASTER=spark://127.0.0.1:$SPARK_MASTER_PORT
  PASS+=("--spark_master_url=$MASTER")
  echo "Spark master $MASTER; web UI: http://127.0.0.1:$SPARK_MASTER_WEBUI_PORT"
  echo "The cluster keeps running afterwards: scripts/spark_cluster.sh stop"
fi
.venv/bin/python -m pipelines.bootstrap --model_dir models
if [ "$INPUT" = output ] && [ ! -d "output/archive/$DETECTOR" ]; then
  echo "== no archive in output/: 3,000 generated messages through the detection graph on Spark"
  .venv/bin/python -m pipelines.generate --count 3000 --event_rate 100 --malformed_fraction 0.01 \
      --output_dir .run/spark-input --no_progress
  # Absolute paths: the executors resolve a relative one in their own work folder, where the
  # files are not (a relative --input_dir read nothing, silently).
  .venv/bin/python -m pipelines.stream --runner=SparkRunner "--spark_master_url=$MASTER" \
      --source=files "--input_dir=$PWD/.run/spark-input" "--model_dir=$PWD/models" \
      "--output=$PWD/output" --max_event_age_s=0
fi
[ "$INPUT" = output ] && INPUT=$PWD/output
exec .venv/bin/python -m pipelines.retrain --runner=SparkRunner --detector "$DETECTOR" --input "$INPUT" \
    --model_dir "$PWD/models" "${PASS[@]}"
