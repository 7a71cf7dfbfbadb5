"""The stream job end to end on the real JVM side: generated traffic (with malformed messages)
through a real Kafka broker into ``python -m pipelines.stream --runner=FlinkRunner``, on an
embedded Flink and on a standalone session cluster, checked against what was sent.

* the archive holds exactly the valid records sent (by uuid), dead_letter/ every malformed one;
* alerts/ and the Kafka topic ``alerts`` hold the same alerts: one per anomalous network record
  plus one per attack event;
* attacks/ holds exactly the pairs a brute-force join of the archived host records predicts.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import time
import uuid

import pytest

from generator.messages import Message
from generator.sinks import KafkaSink
from generator.source import SourceConfig, generate_messages
from pipelines import scratch, startup, stream as stream_job
from harness.kafka import make_topics
from tests.helpers import host_records, read_output
from transforms.join import reference_join

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings('ignore::pytest.PytestUnhandledThreadExceptionWarning'),
]

N_NETWORK = 2000
MALFORMED = 0.02


def _consume_all(bootstrap: str, topic: str, idle_s: float = 5.0) -> list[dict]:
  from confluent_kafka import Consumer
  consumer = Consumer({'bootstrap.servers': bootstrap, 'group.id': f'check-{uuid.uuid4().hex}',
                       'auto.offset.reset': 'earliest', 'enable.auto.commit': False})
  consumer.subscribe([topic])
  values, last = [], time.monotonic()
  try:
    while time.monotonic() - last < idle_s:
      msg = consumer.poll(0.5)
      if msg is not None and not msg.error():
        values.append(json.loads(msg.value()))
        last = time.monotonic()
  finally:
    consumer.close()
  return values


def assert_dead_letters_match(dead: list[dict], malformed: list[Message]) -> None:
  """Each malformed message is dead-lettered, whole (its bytes) or, when only records inside a
  host array are bad, record by record; and nothing else is."""
  whole = collections.Counter(d['payload'] for d in dead if d['record_index'] is None)
  per_record = collections.defaultdict(list)
  for d in dead:
    if d['record_index'] is not None:
      per_record[(d['source'], d['offset'])].append(d)
  unmatched_messages = []
  for message in malformed:
    if whole[message.value]:
      whole[message.value] -= 1
    else:
      unmatched_messages.append(message)
  assert not +whole, 'dead letters of messages that were not malformed'
  assert len(per_record) == len(unmatched_messages)
  for message in unmatched_messages:
    records = json.loads(message.value)
    assert any(all(json.loads(d['payload']) == records[d['record_index']] for d in letters)
               for letters in per_record.values()), message.value[:80]


@pytest.fixture(params=['embedded', pytest.param('cluster', marks=pytest.mark.long)])
def flink_master(request):
  """Flink embedded in the job server ([local]), and a standalone session cluster (long: CI
  runs the standalone cluster in tests/integration/test_kafka_flink.py)."""
  if request.param == 'embedded':
    return '[local]'
  return request.getfixturevalue('flink_rest')


def test_stream_job_on_flink_accounts_for_every_message(kafka_bootstrap, flink_master,
                                                        synthetic_model_dir, tmp_path, caplog):
  caplog.set_level(logging.INFO, logger='pipelines.startup')
  suffix = uuid.uuid4().hex[:8]
  topics = {s: f'{s}_{suffix}' for s in ('network', 'process', 'memory')}
  alerts_topic = f'alerts_{suffix}'
  make_topics(kafka_bootstrap, [*topics.values(), alerts_topic])

  # Network records, then two minutes of host activity, event times a few minutes back (so the
  # join's windows can close as soon as the data is read and the watermark catches up with the
  # clock).
  start_ms = int((time.time() - 600) * 1000)
  configs = [
      SourceConfig(streams=('network',), count=N_NETWORK, seed=7, malformed_fraction=MALFORMED,
                   event_rate=500.0, start_ms=start_ms, topics=topics),
      SourceConfig(streams=('process', 'memory'), duration_s=120, seed=7, machines=6,
                   attack_fraction=0.1, malformed_fraction=MALFORMED, start_ms=start_ms,
                   topics=topics),
  ]
  sink = KafkaSink(kafka_bootstrap)
  sent: list[Message] = []
  for config in configs:
    for message in generate_messages(config):
      sink.send(message)
      sent.append(message)
  sink.close()
  assert sink.stats()['acknowledged'] == len(sent)
  malformed = [m for m in sent if m.malformed]
  valid_uuids = {u for m in sent if not m.malformed and m.topic == topics['network']
                 for u in m.uuids}
  assert malformed and valid_uuids

  output = str(tmp_path / 'out')
  sent_host_records = sum(len(host_records(m.value)) for m in sent
                          if m.topic != topics['network'])
  milestones = {}
  started = time.monotonic()

  def reached(name: str, done: bool) -> bool:
    if done and name not in milestones:
      milestones[name] = time.monotonic() - started
    return done

  def outputs_complete() -> bool:
    """Everything sent is archived or dead-lettered, and the join has written every attack
    event the archived host records make (a window fires when the watermark passes it, or
    at the latest the join's early firing, 30 s after its records: well after the archive)."""
    network_rows = read_output(output, 'archive/network')
    network = reached('network archived', {r['uuid'] for r in network_rows} == valid_uuids)
    process = read_output(output, 'archive/process')
    memory = read_output(output, 'archive/memory')
    per_record_dead = sum(1 for d in read_output(output, 'dead_letter')
                          if d['record_index'] is not None)
    if not (network and reached('host archived', len(process) + len(memory) +
                                per_record_dead == sent_host_records)):
      return False
    expected = reference_join(process, memory)
    if not reached('attacks written', len(read_output(output, 'attacks')) >= len(expected) > 0):
      return False
    anomalies = sum(r['prediction'] for r in network_rows)
    return reached('alerts written',
                   len(read_output(output, 'alerts')) >= anomalies + len(expected))

  # The job runs until its outputs are complete, not for a fixed time: SDK worker start-up and
  # the watermark's catching up vary from seconds to a minute on a busy machine.
  with stream_job.running([
      '--runner=FlinkRunner', f'--flink_master={flink_master}',
      f'--bootstrap_servers={kafka_bootstrap}',
      *[f'--{s}_topic={t}' for s, t in topics.items()], f'--alerts_topic={alerts_topic}',
      f'--output={output}', f'--model_dir={synthetic_model_dir}', '--roll_seconds=5',
      f'--job_name=it-stream-{suffix}']):
    deadline = time.monotonic() + 240
    while not outputs_complete() and time.monotonic() < deadline:
      time.sleep(2)
    time.sleep(6)  # one more roll of the files: anything written twice would show now
    forked = _fork_server_children()
    owners = {os.getpid(), *(pid for children in forked for pid in children)}
    during = _scratch_folders(owners)
    server_files = [entry for folder in during if folder.startswith('flink-job-server-')
                    for entry in os.listdir(os.path.join(scratch.private_root(), folder))]
  # The job server's and the workers' scratch files were in the user's private folder
  # (pipelines/scratch.py); the job's own are gone with it, its workers' at the next start.
  assert [f for f in during if f.startswith('flink-job-server-')], during
  if flink_master == '[local]':
    assert any(e.startswith('minicluster_') for e in server_files), server_files
    assert sum(f.startswith('sdk-worker-') for f in during) == len(forked[0]), (during, forked)
  left = _scratch_folders(owners)
  assert not [f for f in left if scratch.owner(f) == os.getpid()], left
  scratch.sweep(scratch.private_root())
  assert not _scratch_folders(owners), (during, left)
  # On the job's own embedded Flink its SDK workers are forked from its fork server
  # (pipelines/fork_server.py), which stops with the job; elsewhere there is none.
  if flink_master == '[local]':
    assert len(forked) == 1 and forked[0], forked
    assert not any(os.path.exists(f'/proc/{pid}') for pid in forked[0])  # reaped by the server
  else:
    assert not forked
  assert not _fork_server_children()
  print(f'[timing] stream job on Flink {flink_master}: {time.monotonic() - started:.1f} s; ' +
        ', '.join(f'{k} after {v:.1f} s' for k, v in milestones.items()))

  # The job's startup line: every phase seen, in order, the first output last; no expansion
  # service JVM of its own (the job server serves the expansion).
  lines = [r.getMessage() for r in caplog.records if r.name == 'pipelines.startup']
  assert len(lines) == 1 and lines[0].startswith('startup: first archived row'), lines
  assert list(startup.parse_summary(lines[0])) == [
      startup.JOB_SERVER, startup.EXPANSION, startup.SUBMISSION,
      startup.FLINK_DEPLOYMENT, startup.SDK_WORKERS, startup.FIRST_OUTPUT]

  network = read_output(output, 'archive/network')
  assert sorted(r['uuid'] for r in network) == sorted(valid_uuids)
  dead = read_output(output, 'dead_letter')
  assert_dead_letters_match(dead, malformed)
  assert all(d['source'] in topics.values() and d['offset'] >= 0 for d in dead)

  process = read_output(output, 'archive/process')
  memory = read_output(output, 'archive/memory')
  assert len(process) + len(memory) + sum(
      1 for d in dead if d['record_index'] is not None) == sent_host_records
  attacks = read_output(output, 'attacks')
  expected_attacks = reference_join(process, memory)
  assert expected_attacks, 'the models flag some synthetic attack on both streams'
  assert sorted(a['event_id'] for a in attacks) == sorted(expected_attacks)

  alerts = read_output(output, 'alerts')
  expected_alerts = ({f'network:{r["uuid"]}' for r in network if r['prediction'] == 1} |
                     {f'attack:{a["event_id"]}' for a in attacks})
  assert len(alerts) == len(expected_alerts)
  published = _consume_all(kafka_bootstrap, alerts_topic)
  assert sorted(a['event_id'] for a in published) == sorted(a['event_id'] for a in alerts)
  print(f'[accounting] sent {len(sent)} (malformed {len(malformed)}): archived network '
        f'{len(network)}, process {len(process)}, memory {len(memory)}; dead letters '
        f'{len(dead)}; attacks {len(attacks)}; alerts {len(alerts)}')


def _scratch_folders(owners: set[int]) -> list[str]:
  """The folders in the private scratch root of the processes ``owners``."""
  return sorted(f for f in os.listdir(scratch.private_root()) if scratch.owner(f) in owners)


def _fork_server_children() -> list[list[int]]:
  """For each fork server this process started: the pids of its children (forked workers)."""
  stats = {}
  for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
      with open(f'/proc/{pid}/stat', encoding='ascii') as f:
        ppid = int(f.read().rsplit(')', 1)[1].split()[1])
      with open(f'/proc/{pid}/cmdline', 'rb') as f:
        stats[int(pid)] = (ppid, f.read())
    except (OSError, ValueError):
      pass
  servers = [pid for pid, (ppid, cmd) in stats.items()
             if ppid == os.getpid() and b'pipelines.fork_server\0serve' in cmd]
  return [[pid for pid, (ppid, _) in stats.items() if ppid == server] for server in servers]
