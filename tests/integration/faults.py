"""Helpers for the fault tests (the broker, traffic and processes are in ``harness/``): the
stream job started and stopped at will, SDK workers killed, and the accounting of what arrived.

Accounting is by the uuids the broker acknowledged (acks=all delivery reports of the
generator's KafkaSink): each must be in archive/network/ at least once. Repeats of a uuid are
the duplicates a replay may write (at-least-once output); they are counted, bounded by the
test, and removable by uuid.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import time

from confluent_kafka import Consumer, TopicPartition

from harness.kafka import PARTITIONS, offset_consumer
from harness.procs import cmdline, cpu_ticks, descendants
from pipelines import stream as stream_job
from tests.helpers import read_output


def stream_args(bootstrap: str, topics: dict[str, str], output: str, model_dir: str,
                flink_master: str = '[local]', *extra: str) -> list[str]:
  return ['--runner=FlinkRunner', f'--flink_master={flink_master}',
          f'--bootstrap_servers={bootstrap}',
          *[f'--{s}_topic={t}' for s, t in topics.items()], '--alerts_topic=',
          f'--output={output}', f'--model_dir={model_dir}', '--roll_seconds=3',
          '--model_refresh_s=0', *extra]


@contextlib.contextmanager
def running_stream_job(argv: list[str]):
  """The stream job submitted with its own job server; cancelled when the block ends."""
  started = time.monotonic()
  with stream_job.running(argv) as result:
    print(f'[timing] stream job submitted in {time.monotonic() - started:.1f} s', flush=True)
    yield result


def sdk_workers() -> list[int]:
  """The Python SDK worker processes (PROCESS environment) of the jobs this test started."""
  return sorted(p for p in descendants(os.getpid()) if 'pipelines.sdk_worker' in cmdline(p))


def kill_sdk_worker() -> int:
  """``kill -9`` of the busiest Python SDK worker of the running job; returns its pid.

  The busiest: Flink notices a dead worker only when it next sends it a bundle, and a worker
  may hold only stages that get no input (the host join, with network traffic alone)."""
  workers = sdk_workers()
  assert workers, 'the job has no Python SDK worker process'
  busiest = max(workers, key=cpu_ticks)
  os.kill(busiest, signal.SIGKILL)
  return busiest


def archived_uuids(output: str) -> collections.Counter:
  return collections.Counter(r['uuid'] for r in read_output(output, 'archive/network'))


def wait_until_archived(output: str, uuids, timeout_s: float, job=None) -> collections.Counter:
  """Polls archive/network/ until it holds every uuid of ``uuids`` (or the time is up)."""
  wanted = set(uuids)
  deadline = time.monotonic() + timeout_s
  while True:
    archived = archived_uuids(output)
    if wanted <= archived.keys() or time.monotonic() > deadline:
      return archived
    if job is not None and job.state in ('FAILED', 'CANCELLED', 'DONE'):
      raise AssertionError(f'the stream job ended ({job.state}) before archiving everything')
    time.sleep(2)


def wait_until(predicate, timeout_s: float, what: str, interval_s: float = 1.0) -> None:
  deadline = time.monotonic() + timeout_s
  while not predicate():
    if time.monotonic() > deadline:
      raise AssertionError(f'timed out after {timeout_s} s waiting for {what}')
    time.sleep(interval_s)


def account(scenario: str, stats: dict, acked_uuids, output: str) -> dict:
  """Prints the scenario's accounting line and returns its numbers."""
  archived = archived_uuids(output)
  acked = set(acked_uuids)
  line = {
      'sent': stats['sent'], 'acknowledged': stats['acknowledged'],
      'archived': len(archived.keys() & acked),
      'duplicates': sum(archived.values()) - len(archived),
      'lost': len(acked - archived.keys()),
      'unexpected': len(archived.keys() - acked),
  }
  print(f'[accounting] {scenario}: ' + ', '.join(f'{k} {v}' for k, v in line.items()),
        flush=True)
  return line


def locate_lost(bootstrap: str, topic: str, output: str, acked_uuids) -> list:
  """(partition, offset, uuid) of acknowledged records missing from the archive: where to
  look when a test fails."""
  lost = set(acked_uuids) - archived_uuids(output).keys()
  consumer = Consumer({'bootstrap.servers': bootstrap, 'group.id': f'locate-{time.time()}',
                       'auto.offset.reset': 'earliest', 'enable.auto.commit': False})
  consumer.subscribe([topic])
  found, last = [], time.monotonic()
  try:
    while time.monotonic() - last < 5 and len(found) < len(lost):
      msg = consumer.poll(0.5)
      if msg is not None and not msg.error():
        last = time.monotonic()
        record_uuid = json.loads(msg.value()).get('uuid')
        if record_uuid in lost:
          found.append((msg.partition(), msg.offset(), record_uuid))
  finally:
    consumer.close()
  return sorted(found)


def report_lost(bootstrap: str, topic: str, group: str, output: str, acked_uuids) -> None:
  """Prints, per partition, the offsets of the lost records, the job's committed offset and
  the end of the partition: a reader that stopped reading shows a committed offset below the
  lost ones; records lost after reading show it past them."""
  lost = collections.defaultdict(list)
  for partition, offset, _ in locate_lost(bootstrap, topic, output, acked_uuids):
    lost[partition].append(offset)
  consumer = offset_consumer(bootstrap, group)
  try:
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    committed = {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=10)}
    for p in range(PARTITIONS):
      _, end = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
      offsets = lost.get(p, [])
      where = f'{len(offsets)} lost at {min(offsets)}..{max(offsets)}' if offsets else 'none lost'
      print(f'[lost] {topic}-{p}: {where}; committed {committed.get(p)}; end {end}', flush=True)
  finally:
    consumer.close()


def assert_nothing_lost(line: dict, max_duplicates: int) -> None:
  assert line['acknowledged'] == line['sent'], line
  assert line['lost'] == 0, line
  assert line['unexpected'] == 0, line
  assert line['duplicates'] <= max_duplicates, line


def alerts_dedupe_by_event_id(output: str) -> None:
  """Alerts written twice by a replay carry the same event_id and the same content; after
  dropping repeats by event_id there is one alert per anomalous archived record."""
  alerts = read_output(output, 'alerts')
  by_id = collections.defaultdict(set)
  for a in alerts:
    by_id[a['event_id']].add((a['kind'], a['event_time'], a['details']))
  assert all(len(v) == 1 for v in by_id.values()), 'a repeated event_id with other content'
  network = read_output(output, 'archive/network')
  anomalous = {r['uuid'] for r in network if r['prediction'] == 1}
  assert len(by_id) == len(anomalous), (len(by_id), len(anomalous))
  print(f'[accounting] alerts: rows {len(alerts)}, distinct event ids {len(by_id)}, '
        f'duplicates {len(alerts) - len(by_id)}', flush=True)

