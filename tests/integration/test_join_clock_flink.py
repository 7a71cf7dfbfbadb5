"""A producer clock far ahead, on the real KafkaIO and Flink: its CreateTime drives the
watermark years ahead (KafkaIO's CreateTime policy), yet no host record the join should have
paired vanishes: each pair of the archived records is in attacks/, or one of its records is a
dead letter of stage ``join``. (TestStream versions of this: tests/test_join.py.)"""

from __future__ import annotations

import collections
import json
import time
import uuid

import pytest
from confluent_kafka import Producer

from generator.sinks import KafkaSink
from generator.source import SourceConfig, generate_messages
from pipelines import stream as stream_job
from harness.kafka import PARTITIONS, make_topics
from tests.helpers import host_records, read_output
from transforms.ids import attack_event_id, row_identity
from transforms.join import is_joinable, reference_join

pytestmark = [
    pytest.mark.integration,
    pytest.mark.long,  # the TestStream versions in tests/test_join.py run in CI
    pytest.mark.filterwarnings('ignore::pytest.PytestUnhandledThreadExceptionWarning'),
]

FAR_AHEAD_MS = 10 * 365 * 86_400 * 1000


def test_a_create_time_years_ahead_makes_late_records_dead_letters_not_lost(
    kafka_bootstrap, synthetic_model_dir, tmp_path):
  suffix = uuid.uuid4().hex[:8]
  topics = {s: f'{s}_{suffix}' for s in ('network', 'process', 'memory')}
  make_topics(kafka_bootstrap, topics.values())
  now_ms = int(time.time() * 1000)
  before = SourceConfig(streams=('process', 'memory'), duration_s=60, seed=3, machines=4,
                        attack_fraction=0.2, start_ms=now_ms - 300_000, topics=topics)
  after = SourceConfig(streams=('process', 'memory'), duration_s=60, seed=4, machines=4,
                       attack_fraction=0.2, start_ms=now_ms - 120_000, topics=topics)
  sink = KafkaSink(kafka_bootstrap)
  sent_before = sum(len(host_records(m.value)) for m in _send(sink, before))
  # One message on every partition of every topic (the source's watermark is the least of
  # its partitions'), whose CreateTime is ten years ahead; its bytes are no record at all.
  forger = Producer({'bootstrap.servers': kafka_bootstrap})
  for topic in topics.values():
    for partition in range(PARTITIONS):
      forger.produce(topic, value=b'clock far ahead', partition=partition,
                     timestamp=now_ms + FAR_AHEAD_MS)
  assert forger.flush(30) == 0
  output = str(tmp_path / 'out')

  def archived() -> int:
    return len(read_output(output, 'archive/process')) + len(read_output(output, 'archive/memory'))

  def settled() -> bool:
    late = [d for d in read_output(output, 'dead_letter') if d['stage'] == 'join']
    return (bool(late) and archived() == sent_before + sent_after and _accounted(
        read_output(output, 'archive/process'), read_output(output, 'archive/memory'), late,
        output))

  sent_after = 0
  with stream_job.running([
      '--runner=FlinkRunner', '--flink_master=[local]', f'--bootstrap_servers={kafka_bootstrap}',
      *[f'--{s}_topic={t}' for s, t in topics.items()], f'--output={output}',
      f'--model_dir={synthetic_model_dir}', '--roll_seconds=5', f'--job_name=it-clock-{suffix}']):
    # The records after the forged clock are sent once the job has read it (everything before
    # it archived, and a few watermark intervals more): then they are behind the watermark.
    deadline = time.monotonic() + 240
    while archived() < sent_before and time.monotonic() < deadline:
      time.sleep(2)
    time.sleep(10)
    sent_after = sum(len(host_records(m.value)) for m in _send(sink, after))
    sink.close()
    assert sink.stats()['failed'] == 0
    deadline = time.monotonic() + 180
    while not settled() and time.monotonic() < deadline:
      time.sleep(3)
    time.sleep(6)

  process = read_output(output, 'archive/process')
  memory = read_output(output, 'archive/memory')
  dead = read_output(output, 'dead_letter')
  late = [d for d in dead if d['stage'] == 'join']
  assert late, 'the far-ahead watermark made some host records late for the join'
  assert all(d['error'].startswith('late for the join by ') for d in late)
  assert sum(d['payload'] == b'clock far ahead' for d in dead) == 3 * PARTITIONS
  assert len(process) + len(memory) == sent_before + sent_after
  assert _accounted(process, memory, late, output)
  print(f'[accounting] archived process {len(process)}, memory {len(memory)}; late for the '
        f'join {len(late)}; attacks {len(read_output(output, "attacks"))}')


def _send(sink: KafkaSink, config: SourceConfig) -> list:
  messages = list(generate_messages(config))
  for message in messages:
    sink.send(message)
  sink.flush()
  return messages


def _accounted(process: list, memory: list, late: list, output: str) -> bool:
  """Every pair the brute-force join finds among the archived records is in attacks/ or has a
  record among the late dead letters; attacks/ has nothing else."""
  late_ids = {row_identity(json.loads(d['payload'])) for d in late}
  joined = {a['event_id'] for a in read_output(output, 'attacks')}
  memory_by_key = collections.defaultdict(list)
  for m in memory:
    if m['prediction'] == 1:
      memory_by_key[(m['machine'], m['CMD_PID'])].append(m)
  pairs = {attack_event_id(p, m): (row_identity(p), row_identity(m))
           for p in process if p['prediction'] == 1
           for m in memory_by_key[(p['machine'], p['CMD_PID'])] if is_joinable(p, m)}
  assert set(pairs) == reference_join(process, memory)
  missing = [e for e, ids in pairs.items() if e not in joined and not set(ids) & late_ids]
  return not missing and joined <= set(pairs)
