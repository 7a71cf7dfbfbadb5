#!/usr/bin/env bash
# The test command: sets up what is missing, then runs the suite CI runs: the DirectRunner tests
# on every core, then the integration tests one at a time against a real Kafka broker, Flink
# and Spark (they time real servers, so they do not share the cores with each other).
#   ./run_tests.sh                  what CI runs
#   ./run_tests.sh --full           that and the long tests (marker long, docs/operations.md)
#   ./run_tests.sh -m "not integration"   the fast DirectRunner tests only
#   ./run_tests.sh tests/test_join.py     one file (any pytest arguments work)
set -euo pipefail
cd "$(dirname "$0")"
scripts/bootstrap.sh
pytest=(.venv/bin/python -m pytest)
if [ $# -gt 0 ] && [ "$*" != --full ]; then
  exec "${pytest[@]}" "$@"
fi
status=0
"${pytest[@]}" -m "not integration" --numprocesses=auto "$@" || status=$?
"${pytest[@]}" -m integration "$@" || status=$?
exit "$status"
