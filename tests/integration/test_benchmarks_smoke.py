"""The benchmarks at tiny size, so that they do not rot: each runs end to end against the
session broker and writes its table, JSON and PNG (to tmp_path, never benchmarks/results/).
Numbers are not checked, only that everything was measured and accounted for."""

from __future__ import annotations

import glob
import json
import os

import pytest

from harness.kafka import fresh_topics, make_topics
from pipelines import stage_cpu

pytestmark = pytest.mark.integration


@pytest.mark.long  # a benchmark's smoke run
def test_throughput_benchmark_smoke(kafka_bootstrap, synthetic_model_dir, tmp_path):
  from benchmarks import throughput
  result = throughput.main([
      '--streams=network', '--network_messages=3000', f'--bootstrap_servers={kafka_bootstrap}',
      f'--model_dir={synthetic_model_dir}', f'--results_dir={tmp_path}', '--timeout_s=150',
      '--stall_s=45', '--stage_cpu', '--idle_s=5', f'--work_dir={tmp_path / "work"}'])
  phase = result['phases']['network']
  assert phase['job']['status'] == 'complete', phase['job']
  # The workers timed their DoFns (pipelines/stage_cpu.py) and the job still archived all.
  folder, = glob.glob(str(tmp_path / 'work' / 'network-*' / 'stage-cpu'))
  last = [rows[-1] for rows in stage_cpu.read_snapshots(folder).values()]
  parse = [row['methods'].get('transforms.parse.ParseAndCleanFn.process') for row in last]
  assert sum(p[1] for p in parse if p) > 0 and sum(p[2] for p in parse if p) <= 3000, parse
  assert any('ParseAndCleanFn' in key for row in last for key in row['methods']
             if key.startswith('bundle ')), last
  assert phase['job']['records_archived'] == 3000
  assert phase['job']['first_output_s'] > 0
  # With nothing left to read, the job's JVM still runs its timers.
  idle = phase['job']['idle_cpu']
  assert idle['seconds'] >= 5 and idle['cores']['flink_job_server_jvm'] > 0, idle
  assert phase['baseline']['records'] == 3000 and phase['baseline']['complete']
  roles = phase['job']['memory']['peak_rss_mb']
  assert roles['python_job'] > 0 and roles['flink_job_server_jvm'] > 0
  saved = json.loads((tmp_path / 'throughput.json').read_text())
  assert saved['phases']['network']['job']['records_archived'] == 3000
  assert saved['machine']['cores'] and 'table' in saved
  assert os.path.getsize(tmp_path / 'throughput.png') > 1000


def test_host_prefill_and_baseline_smoke(kafka_bootstrap, synthetic_model_dir, tmp_path):
  """The host phase's own parts (the job side is the same code as the network phase's)."""
  from benchmarks import baseline, common, throughput
  topics = fresh_topics('smoke_host')
  make_topics(kafka_bootstrap, topics.values(), partitions=2)
  filled = throughput.prefill(kafka_bootstrap, 'host', topics, network_messages=0,
                              host_records=2000, machines=5, seed=3)
  assert filled['records'] >= 2000
  result = baseline.run(kafka_bootstrap, 'host', f"{topics['process']},{topics['memory']}",
                        synthetic_model_dir, str(tmp_path / 'out'), timeout_s=60)
  assert result['complete'] and result['messages'] == filled['messages']
  assert result['records'] + result['dead_letters'] == filled['records']
  assert common.ArchiveCounter(str(tmp_path / 'out' / 'archive')).rows() == result['records']


@pytest.mark.long  # a benchmark's smoke run
def test_latency_benchmark_smoke(kafka_bootstrap, synthetic_model_dir, tmp_path):
  from benchmarks import latency
  result = latency.main([
      '--rates=300', '--warmup_s=2', '--initial_warmup_s=0', '--measure_s=4', '--drain_s=15', '--pool=1000',
      f'--bootstrap_servers={kafka_bootstrap}', f'--model_dir={synthetic_model_dir}',
      f'--results_dir={tmp_path}', '--max_bundle_time_ms=200'])
  level, = result['levels']
  assert level['alerts_expected'] > 0
  assert level['alerts_received'] == level['alerts_expected'], level
  assert 0 < level['p50_ms'] <= level['p99_ms'] < 60_000
  saved = json.loads((tmp_path / 'latency.json').read_text())
  assert saved['settings']['job_flags'] == ['--max_bundle_time_mills=200']
  assert os.path.getsize(tmp_path / 'latency.png') > 1000
