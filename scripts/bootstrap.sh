#!/usr/bin/env bash
# Sets up everything the project needs on a fresh machine, and does nothing on a second run:
#   - a Python virtualenv in .venv with this package and its test extras (pip's own cache
#     keeps wheels across clones),
#   - the pinned JVM artifacts (Kafka broker, Beam's Flink job server and expansion service,
#     a Flink distribution) via scripts/fetch_jars.sh, cached in ~/.m2 and .cache/jars.
#   - a MinIO server binary (the S3-compatible store of the object-storage tests), built from
#     source with Go via scripts/s3_server.sh, cached in ~/.cache/streaming-attack-detection/bin.
#   - Debian's Chromium, for the dashboard's browser test.
# The last two are the tests' only: ./run_local.sh and ./run_flink.sh skip them (SKIP_S3=1,
# SKIP_BROWSER=1); ./run_tests.sh sets up everything. SKIP_JARS=1 skips the JVM artifacts.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if ! command -v "$PYTHON" >/dev/null; then
  echo "bootstrap: $PYTHON not found; install Python 3.10+ or set PYTHON=/path/to/python3" >&2
  exit 1
fi
"$PYTHON" - <<'PY' || { echo "bootstrap: Python 3.10 or newer is required" >&2; exit 1; }
import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)
PY

if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$PYTHON" -m venv .venv
fi
# Reinstall only when the package's requirements change.
stamp=.venv/.installed-$(sha256sum setup.py | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing Python packages (a few minutes the first time)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[test]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi

# Headless Chromium for the dashboard's browser test (Debian's package, not a browser download).
if [ "${SKIP_BROWSER:-0}" != 1 ]; then
  scripts/install_browser.sh || echo "bootstrap: chromium not installed; browser tests will be skipped" >&2
fi

if [ -x scripts/fetch_jars.sh ] && [ "${SKIP_JARS:-0}" != 1 ]; then
  scripts/fetch_jars.sh
fi

# MinIO for the object-storage tests: built once (~4 min cold), then a no-op. Without Go
# (and no cached binary) the S3 tests are skipped and say why.
if [ "${SKIP_S3:-0}" != 1 ]; then
  scripts/s3_server.sh install || echo "bootstrap: MinIO not installed (see above)" >&2
fi
echo "bootstrap: ready"
