#!/usr/bin/env bash
# Beam's PROCESS environment, and the EXTERNAL environment's worker pool (scripts/worker_pool.sh),
# start this once per Python SDK worker (see pipelines/sdk_worker.py):
# the project's Python, not Docker. BEAM_SDK_PYTHON is set by the job's launcher; on a cluster's
# TaskManager hosts the repo's .venv is the default.
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${BEAM_SDK_PYTHON:-$ROOT/.venv/bin/python}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# stdout to stderr: Beam's worker pool gives each worker a stdout pipe that nobody reads, and a
# full pipe would block the worker.
if [ -n "${ATTACK_DETECTION_FORK_SERVER:-}" ]; then
  # The job's fork server (pipelines/fork_server.py) forks the worker from its pre-imported
  # interpreter; this process waits for it (and starts a fresh one if there is no server).
  exec "$PYTHON" -m pipelines.fork_server "$@" 1>&2
fi
exec "$PYTHON" -m pipelines.sdk_worker "$@" 1>&2
