"""Real servers for integration tests: a Kafka broker, a standalone Flink cluster and an
S3-compatible object store (MinIO), each started once per test session on free ports in a
temporary run dir, stopped afterwards (all from ``harness/``, which the benchmarks use too).

Needs java and the jars of scripts/fetch_jars.sh; the tests are skipped, with the reason, when
they are missing.
"""

from __future__ import annotations

import pytest

from harness.flink import FlinkCluster
from harness.kafka import Broker
from harness.s3 import S3Server
from tests.helpers import require_jvm_side


@pytest.fixture(scope='session')
def kafka_bootstrap(tmp_path_factory):
  """A KRaft broker (scripts/kafka.sh) on a free port; yields its bootstrap address."""
  require_jvm_side()
  broker = Broker(run_dir=str(tmp_path_factory.mktemp('kafka'))).start()
  try:
    yield broker.bootstrap
  finally:
    broker.stop()


@pytest.fixture(scope='session')
def flink_rest(tmp_path_factory):
  """A standalone session cluster (scripts/flink_cluster.sh) on free ports; yields host:port."""
  require_jvm_side()
  cluster = FlinkCluster(str(tmp_path_factory.mktemp('flink')), slots=2,
                         heartbeat_interval_ms=None, heartbeat_timeout_ms=None).start()
  try:
    yield cluster.master
  finally:
    cluster.stop()


@pytest.fixture(scope='session')
def s3_server(tmp_path_factory):
  """A MinIO server (scripts/s3_server.sh) on a free port, with fresh credentials; builds
  MinIO first if the cache has none (needs Go; skipped, with the reason, without it)."""
  server = S3Server(str(tmp_path_factory.mktemp('s3')))
  try:
    server.start()
  except RuntimeError as e:
    if 'go not found' in str(e):
      pytest.skip(str(e).splitlines()[-1])
    raise
  try:
    yield server
  finally:
    server.stop()
