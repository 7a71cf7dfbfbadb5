"""Real servers for integration tests: a Kafka broker, a standalone Flink cluster and an
S3-compatible object store (MinIO), each started once per test session on free ports in a
temporary run dir, stopped afterwards.

Needs java and the jars of scripts/fetch_jars.sh; the tests are skipped, with the reason, when
they are missing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PARTITIONS = 4


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _require_jvm_side():
  if shutil.which('java') is None:
    pytest.skip('java is not installed')
  from transforms import kafka_io  # pylint: disable=import-outside-toplevel
  try:
    kafka_io.flink_job_server_jar()
    kafka_io.io_expansion_service_jar()
  except FileNotFoundError as e:
    pytest.skip(str(e))
  for probe in ('kafka/lib/kafka_2.13-3.9.2.jar', 'flink/lib/flink-runtime-1.19.3.jar'):
    if not os.path.isfile(os.path.join(kafka_io.jars_dir(), probe)):
      pytest.skip(f'{probe} missing: run scripts/fetch_jars.sh')


def _script(name, action, env, timeout):
  t0 = time.monotonic()
  proc = subprocess.run([os.path.join(ROOT, 'scripts', name), action], env=env, timeout=timeout,
                        capture_output=True, text=True, check=False)
  if proc.returncode != 0:
    raise RuntimeError(f'scripts/{name} {action} failed ({proc.returncode}):\n'
                       f'{proc.stdout}\n{proc.stderr}')
  print(f'[timing] scripts/{name} {action}: {time.monotonic() - t0:.1f} s', flush=True)
  return proc.stdout


@pytest.fixture(scope='session')
def kafka_bootstrap(tmp_path_factory):
  """A KRaft broker (scripts/kafka.sh) on a free port; yields its bootstrap address."""
  _require_jvm_side()
  port = _free_port()
  env = dict(os.environ, KAFKA_PORT=str(port), KAFKA_CONTROLLER_PORT=str(_free_port()),
             KAFKA_RUN_DIR=str(tmp_path_factory.mktemp('kafka')), KAFKA_PARTITIONS=str(PARTITIONS))
  _script('kafka.sh', 'start', env, timeout=120)
  try:
    yield f'127.0.0.1:{port}'
  finally:
    _script('kafka.sh', 'stop', env, timeout=60)


@pytest.fixture(scope='session')
def flink_rest(tmp_path_factory):
  """A standalone session cluster (scripts/flink_cluster.sh) on free ports; yields host:port."""
  _require_jvm_side()
  port = _free_port()
  env = dict(os.environ, FLINK_REST_PORT=str(port), FLINK_RPC_PORT=str(_free_port()),
             FLINK_RUN_DIR=str(tmp_path_factory.mktemp('flink')), FLINK_TM_SLOTS='2')
  _script('flink_cluster.sh', 'start', env, timeout=150)
  try:
    yield f'localhost:{port}'
  finally:
    _script('flink_cluster.sh', 'stop', env, timeout=90)


class S3Server:
  """A running S3-compatible server: its endpoint and (test-only) credentials."""

  def __init__(self, endpoint: str, access_key: str, secret_key: str):
    self.endpoint, self.access_key, self.secret_key = endpoint, access_key, secret_key
    self.region = 'us-east-1'

  def flags(self) -> list[str]:
    """Beam's own S3 options, as the jobs take them on the command line."""
    return [f'--s3_endpoint_url={self.endpoint}', f'--s3_access_key_id={self.access_key}',
            f'--s3_secret_access_key={self.secret_key}', f'--s3_region_name={self.region}']

  def env(self) -> dict[str, str]:
    """The standard AWS environment boto3 reads when no flag is given."""
    return {'AWS_ENDPOINT_URL': self.endpoint, 'AWS_ACCESS_KEY_ID': self.access_key,
            'AWS_SECRET_ACCESS_KEY': self.secret_key, 'AWS_DEFAULT_REGION': self.region}

  def client(self):
    import boto3  # pylint: disable=import-outside-toplevel
    return boto3.client('s3', endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                        aws_secret_access_key=self.secret_key, region_name=self.region)

  def make_bucket(self, name: str) -> str:
    self.client().create_bucket(Bucket=name)
    return name


@pytest.fixture(scope='session')
def s3_server(tmp_path_factory):
  """A MinIO server (scripts/s3_server.sh) on a free port, with fresh credentials; builds
  MinIO first if the cache has none (needs Go; skipped, with the reason, without it)."""
  port = _free_port()
  secret = f'it-{os.urandom(8).hex()}'
  env = dict(os.environ, S3_PORT=str(port), S3_RUN_DIR=str(tmp_path_factory.mktemp('s3')),
             S3_ACCESS_KEY='it-access', S3_SECRET_KEY=secret)
  try:
    _script('s3_server.sh', 'start', env, timeout=900)
  except RuntimeError as e:
    if 'go not found' in str(e):
      pytest.skip(str(e).splitlines()[-1])
    raise
  try:
    yield S3Server(f'http://127.0.0.1:{port}', 'it-access', secret)
  finally:
    _script('s3_server.sh', 'stop', env, timeout=60)


def make_topics(bootstrap, *topics, partitions=PARTITIONS):
  from confluent_kafka.admin import AdminClient, NewTopic  # pylint: disable=import-outside-toplevel
  admin = AdminClient({'bootstrap.servers': bootstrap})
  futures = admin.create_topics([NewTopic(t, num_partitions=partitions, replication_factor=1)
                                 for t in topics])
  for f in futures.values():
    f.result(timeout=30)
