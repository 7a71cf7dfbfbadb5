#!/usr/bin/env bash
# The test command: sets up what is missing, then runs the whole suite (unit tests on the
# DirectRunner, integration tests against a real Kafka broker and a real Flink).
#   ./run_tests.sh                  everything
#   ./run_tests.sh -m "not integration"   the fast DirectRunner tests only
#   ./run_tests.sh tests/test_join.py     one file (any pytest arguments work)
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh
exec .venv/bin/python -m pytest "$@"
