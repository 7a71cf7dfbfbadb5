"""Archive and models on a real S3 server (MinIO on loopback, scripts/s3_server.sh):

* two sites run the stream job at the same time, reading their input from S3 and archiving
  to one bucket: every record is archived exactly once, each site's files carry its name,
  and no temporary object is left behind;
* the retrain job reads both sites' archive from S3 together and publishes a model to S3;
* a stream running on embedded Flink (Kafka in, archive on S3) picks up a model that the
  retrain job publishes to S3, from that very archive, while the stream runs.

The jobs get their S3 settings either from Beam's --s3_* flags with no AWS_* variable set, or
from the AWS_* environment alone: both ways are exercised. Objects are checked with boto3 and
pyarrow, not with the code under test.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from generator.sinks import KafkaSink
from generator.source import DEFAULT_TOPICS, SourceConfig, generate_messages
from apache_beam.options.pipeline_options import PipelineOptions

from model import registry
from pipelines import retrain, storage
from pipelines import stream as stream_job
from pipelines.runners import flink_job_server, with_flink_defaults
from harness.kafka import make_topics
from tests.helpers import ROOT, train_factory_models

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings('ignore::pytest.PytestUnhandledThreadExceptionWarning'),
]

AWS_VARS = ('AWS_ENDPOINT_URL', 'AWS_ENDPOINT_URL_S3', 'AWS_ACCESS_KEY_ID',
            'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_DEFAULT_REGION', 'AWS_REGION',
            'AWS_PROFILE')
STREAM_OF_TOPIC = {topic: stream for stream, topic in DEFAULT_TOPICS.items()}


@pytest.fixture
def s3_flags_only(s3_server, monkeypatch):
  """This process reaches S3 through Beam's flags only: no AWS_* variable to fall back on."""
  for name in AWS_VARS:
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setenv('AWS_CONFIG_FILE', os.devnull)
  monkeypatch.setenv('AWS_SHARED_CREDENTIALS_FILE', os.devnull)
  storage.configure(PipelineOptions(s3_server.flags()))
  return s3_server.flags()


def keys(client, bucket: str, prefix: str) -> list[str]:
  pages = client.get_paginator('list_objects_v2').paginate(Bucket=bucket, Prefix=prefix)
  return [o['Key'] for page in pages for o in page.get('Contents', [])]


def read_rows(client, bucket: str, prefix: str, columns=None) -> list[dict]:
  """Rows of every finished Parquet object under ``prefix``."""
  rows = []
  for key in keys(client, bucket, prefix):
    if key.endswith('.parquet') and not key.rsplit('/', 1)[-1].startswith('.'):
      body = client.get_object(Bucket=bucket, Key=key)['Body'].read()
      rows += pq.read_table(pa.BufferReader(body), columns=columns).to_pylist()
  return rows


def site_traffic(site: str, seed: int, network: int) -> list:
  """Valid network and host messages of one site (files hold one message per line, so no
  malformed ones: the dead-letter accounting is tests/integration/test_stream_flink.py's)."""
  start_ms = int((time.time() - 3600) * 1000)
  configs = [
      SourceConfig(streams=('network',), count=network, seed=seed, site=site,
                   event_rate=500.0, start_ms=start_ms),
      SourceConfig(streams=('process', 'memory'), duration_s=60, seed=seed, machines=4,
                   site=site, start_ms=start_ms),
  ]
  return [m for config in configs for m in generate_messages(config)]


def host_record_count(messages) -> int:
  return sum(len(json.loads(m.value)) for m in messages
             if STREAM_OF_TOPIC[m.topic] != 'network')


def upload_jsonl(client, bucket: str, prefix: str, messages) -> None:
  lines = collections.defaultdict(list)
  for m in messages:
    lines[STREAM_OF_TOPIC[m.topic]].append(m.value)
  for stream, values in lines.items():
    client.put_object(Bucket=bucket, Key=f'{prefix}/{stream}.jsonl',
                      Body=b'\n'.join(values) + b'\n')


@pytest.mark.long  # the S3 archive and retrain run in CI in the test below
def test_two_sites_archive_to_one_bucket_and_retrain_reads_both(s3_server, s3_flags_only):
  client = s3_server.client()
  bucket = s3_server.make_bucket(f'sites-{uuid.uuid4().hex[:8]}')
  models = f's3://{bucket}/models'
  train_factory_models(models)
  traffic = {'site-a': site_traffic('site-a', seed=1, network=700),
             'site-b': site_traffic('site-b', seed=2, network=500)}
  for site, messages in traffic.items():
    upload_jsonl(client, bucket, f'in/{site}', messages)

  # Both sites at once, as separate processes: site-a with the flags and no AWS_* variable,
  # site-b with the AWS_* environment and no flag.
  base_env = {k: v for k, v in os.environ.items() if k not in AWS_VARS}
  runs = {}
  started = time.monotonic()
  for site in traffic:
    by_flags = site == 'site-a'
    args = [sys.executable, '-m', 'pipelines.stream', '--source=files',
            f'--input_dir=s3://{bucket}/in/{site}', f'--output=s3://{bucket}/out',
            f'--model_dir={models}', f'--site={site}', '--num_shards=2']
    env = dict(base_env, **({} if by_flags else s3_server.env()))
    runs[site] = subprocess.Popen(args + (s3_server.flags() if by_flags else []), cwd=ROOT,
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True)
  logs = {site: run.communicate(timeout=240)[0] for site, run in runs.items()}
  print(f'[timing] two concurrent stream jobs to S3: {time.monotonic() - started:.1f} s')
  for site, run in runs.items():
    assert run.returncode == 0, logs[site][-3000:]
    assert s3_server.secret_key not in logs[site]
  assert 'credentials from --s3_access_key_id' in logs['site-a']
  assert 'credentials from AWS_ACCESS_KEY_ID' in logs['site-b']

  network = read_rows(client, bucket, 'out/archive/network/', ['uuid', 'site'])
  sent = sorted(u for messages in traffic.values() for m in messages for u in m.uuids)
  assert sorted(r['uuid'] for r in network) == sent  # none lost, none twice
  assert collections.Counter(r['site'] for r in network) == {'site-a': 700, 'site-b': 500}
  for stream in ('process', 'memory'):
    rows = read_rows(client, bucket, f'out/archive/{stream}/', ['site'])
    assert len(rows) == sum(
        sum(len(json.loads(m.value)) for m in messages if DEFAULT_TOPICS[stream] == m.topic)
        for messages in traffic.values())
  written = keys(client, bucket, 'out/')
  names = [k.rsplit('/', 1)[-1] for k in written]
  assert not [n for n in names if n.startswith('.')], 'temporary objects left behind'
  for site in traffic:  # each site wrote its own files; neither overwrote the other's
    assert any(n.startswith(f'{site}-') for n in names)
  assert all(n.startswith(('site-a-', 'site-b-')) for n in names)

  # The retrain reads both sites' archive (S3) and publishes to the registry (S3).
  started = time.monotonic()
  outcome = retrain.run(['--detector=network', f'--input=s3://{bucket}/out',
                         f'--model_dir={models}', '--method=isolation_forest', '--grid=none',
                         '--force', *s3_flags_only])
  print(f'[timing] retrain from S3 to S3: {time.monotonic() - started:.1f} s')
  assert outcome.result.stats['rows'] == 1200
  version = outcome.decision.version
  assert version and registry.latest_version(models, 'network') == version
  published = sorted(keys(client, bucket, f'models/network/{version}/'))
  assert [k.rsplit('/', 1)[-1] for k in published] == ['manifest.json', 'manifest.sig',
                                                       'model.skops', 'normal_profile.json',
                                                       'report.html']
  manifest = json.loads(client.get_object(
      Bucket=bucket, Key=f'models/network/{version}/manifest.json')['Body'].read())
  assert manifest['training_rows'] > 0 and manifest['parameters']['input'].startswith('s3://')
  assert registry.load(models, 'network').version == version  # signature and sha256 verified
  assert not keys(client, bucket, 'models/.staging/'), 'staging objects left behind'


def test_running_stream_picks_up_a_model_retrained_on_s3(s3_server, s3_flags_only,
                                                          kafka_bootstrap):
  """Kafka -> stream on embedded Flink -> archive on S3 -> retrain (S3 -> S3) -> the same
  running stream scores later records with the new version. The Python SDK workers (the
  stream's own processes, or LOOPBACK threads) get their S3 settings from the flags alone,
  inside the pipeline options: no AWS_* variable is set."""
  client = s3_server.client()
  bucket = s3_server.make_bucket(f'live-{uuid.uuid4().hex[:8]}')
  models, output = f's3://{bucket}/models', f's3://{bucket}/out'
  v1 = train_factory_models(models)['network']
  suffix = uuid.uuid4().hex[:8]
  topics = {s: f'{s}_{suffix}' for s in ('network', 'process', 'memory')}
  make_topics(kafka_bootstrap, topics.values())

  def send(seed: int, count: int) -> set[str]:
    sink = KafkaSink(kafka_bootstrap)
    config = SourceConfig(streams=('network',), count=count, seed=seed, topics=topics,
                          event_rate=500.0, start_ms=int((time.time() - 600) * 1000))
    uuids = set()
    for message in generate_messages(config):
      sink.send(message)
      uuids.update(message.uuids)
    sink.close()
    return uuids

  def archived() -> dict[str, str]:
    return {r['uuid']: r['model_version']
            for r in read_rows(client, bucket, 'out/archive/network/', ['uuid', 'model_version'])}

  def wait_for(uuids: set[str], what: str, timeout_s: float) -> float:
    t0 = time.monotonic()
    while not uuids <= set(archived()):
      assert time.monotonic() - t0 < timeout_s, f'{what} never reached the S3 archive'
      time.sleep(1)
    return time.monotonic() - t0

  first = send(seed=11, count=600)
  argv = with_flink_defaults([
      '--runner=FlinkRunner', '--flink_master=[local]', f'--bootstrap_servers={kafka_bootstrap}',
      *[f'--{s}_topic={t}' for s, t in topics.items()], '--alerts_topic=',
      f'--output={output}', f'--model_dir={models}', '--site=edge', '--roll_seconds=3',
      '--model_refresh_s=1', f'--job_name=it-s3-{suffix}', *s3_flags_only])
  timings = {}
  started = time.monotonic()
  # The job runs until the checks are done (no fixed --run_for_s: start-up on a loaded
  # machine varies from 20 s to over a minute).
  with flink_job_server(argv) as args:
    options = PipelineOptions(args)
    result = stream_job.submit(options)
    try:
      timings['first archived'] = wait_for(first, 'the first records', 240)
      t0 = time.monotonic()
      outcome = retrain.run(['--detector=network', f'--input={output}', f'--model_dir={models}',
                             '--method=isolation_forest', '--grid=none', '--force',
                             *s3_flags_only])
      timings['retrain'] = time.monotonic() - t0
      v2 = outcome.decision.version
      time.sleep(2)  # > --model_refresh_s
      # Workers look for a new version when a batch comes and the refresh interval has
      # passed; while one thread loads it, the others keep scoring with the old one. So the
      # first records after the publish may still get v1; once they are archived, the load
      # is done and every record after them must get v2.
      after = send(seed=12, count=200)
      timings['after archived'] = wait_for(after, 'the records sent after the publish', 120)
      later = send(seed=13, count=200)
      timings['later archived'] = wait_for(later, 'the later records', 120)
    finally:
      stream_job.stop(result, options)
  print(f'[timing] stream on Flink with a retrain on S3 mid-run: '
        f'{time.monotonic() - started:.1f} s; ' +
        ', '.join(f'{k} {v:.1f} s' for k, v in timings.items()))
  assert v2 and v2 > v1 and registry.latest_version(models, 'network') == v2
  versions = archived()
  print('[versions] sent after the publish: ' + ', '.join(
      f'{v} x{n}' for v, n in collections.Counter(versions.get(u) for u in after).items()))
  assert first | after | later == set(versions)
  assert {versions[u] for u in first} == {v1}
  assert v2 in {versions[u] for u in after} <= {v1, v2}
  assert {versions[u] for u in later} == {v2}
