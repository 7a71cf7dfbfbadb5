"""Nothing a local run starts listens beyond loopback: the job server JVM with its embedded
Flink (Beam's job, artifact and expansion services, the Fn API servers, Flink's RPC and blob
server), the Python SDK workers, the expansion service, the Kafka broker and the standalone
cluster. A job service reachable from the network accepts pipelines, which is code execution
for whoever reaches it.

Listening sockets are read from ``/proc/net/tcp{,6}`` and matched to processes by the socket
inodes in ``/proc/<pid>/fd``; each test prints what it found (``[ports] ...``). The embedded job
also gets a secret as a ``--kafka_config`` flag: it must reach neither the job's logs nor the
pipeline options its SDK workers are provisioned with.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import struct
import uuid

import pytest
from google.protobuf import json_format

from pipelines.sdk_worker import provision_info
from harness.kafka import make_topics, topics_for
from harness.procs import cmdline, descendants
from harness.traffic import Traffic
from tests.integration.faults import (archived_uuids, running_stream_job, sdk_workers,
                                      stream_args, wait_until)
from transforms import kafka_io

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings('ignore::pytest.PytestUnhandledThreadExceptionWarning'),
]

_LISTEN = '0A'
SECRET = 'exposure-' + 'kafka-password'


def _address(hex_address: str) -> str:
  """``/proc/net/tcp`` notation (little-endian 32-bit words) -> a printable address."""
  raw = bytes.fromhex(hex_address)
  words = struct.unpack(f'<{len(raw) // 4}I', raw)
  packed = struct.pack(f'>{len(words)}I', *words)
  return socket.inet_ntop(socket.AF_INET if len(packed) == 4 else socket.AF_INET6, packed)


def listening_inodes() -> dict[str, tuple[str, int]]:
  """Every TCP socket in LISTEN state on this host: inode -> (address, port)."""
  found = {}
  for table in ('/proc/net/tcp', '/proc/net/tcp6'):
    with open(table, encoding='ascii') as f:
      next(f)
      for line in f:
        fields = line.split()
        if fields[3] == _LISTEN:
          address, port = fields[1].split(':')
          found[fields[9]] = (_address(address), int(port, 16))
  return found


def socket_inodes(pid: int) -> set[str]:
  inodes = set()
  try:
    for fd in os.listdir(f'/proc/{pid}/fd'):
      try:
        target = os.readlink(f'/proc/{pid}/fd/{fd}')
      except OSError:
        continue
      if target.startswith('socket:['):
        inodes.add(target[len('socket:['):-1])
  except OSError:
    pass  # the process ended meanwhile
  return inodes


def listening_sockets(pids) -> dict[int, list[tuple[str, int]]]:
  """pid -> the (address, port) pairs it listens on (processes without one left out)."""
  listening = listening_inodes()
  by_pid = {}
  for pid in pids:
    mine = sorted(listening[i] for i in socket_inodes(pid) if i in listening)
    if mine:
      by_pid[pid] = mine
  return by_pid


def owner_of_port(port: int) -> int:
  """The pid listening on ``port``."""
  inodes = {i for i, (_, p) in listening_inodes().items() if p == port}
  for entry in os.listdir('/proc'):
    if entry.isdigit() and socket_inodes(int(entry)) & inodes:
      return int(entry)
  raise AssertionError(f'no process of ours listens on port {port}')


def is_loopback(address: str) -> bool:
  ip = ipaddress.ip_address(address)
  if ip.version == 6 and ip.ipv4_mapped:
    ip = ip.ipv4_mapped
  return ip.is_loopback


def exposed(by_pid: dict[int, list[tuple[str, int]]]) -> dict[str, list[str]]:
  """The non-loopback listeners, by process (its command line, shortened)."""
  out = {}
  for pid, sockets in by_pid.items():
    bad = [f'{a}:{p}' for a, p in sockets if not is_loopback(a)]
    if bad:
      out[f'{pid} {cmdline(pid)[:120]}'] = bad
  return out


def report(what: str, by_pid: dict[int, list[tuple[str, int]]]) -> None:
  total = sum(len(s) for s in by_pid.values())
  wild = sum(1 for s in by_pid.values() for a, _ in s if not is_loopback(a))
  print(f'[ports] {what}: {total} listening sockets in {len(by_pid)} processes, '
        f'{wild} not on loopback', flush=True)
  for pid, sockets in sorted(by_pid.items()):
    print(f'[ports]   {pid} {cmdline(pid)[:90]}: '
          + ' '.join(f'{a}:{p}' for a, p in sockets), flush=True)


def test_the_classifier_sees_wildcards_and_loopback():
  assert is_loopback('127.0.0.1') and is_loopback('127.0.1.1') and is_loopback('::1')
  assert is_loopback('::ffff:127.0.0.1')
  assert not is_loopback('0.0.0.0') and not is_loopback('::') and not is_loopback('10.1.2.3')
  with socket.socket() as wild, socket.socket() as local:
    wild.bind(('0.0.0.0', 0))
    wild.listen()
    local.bind(('127.0.0.1', 0))
    local.listen()
    mine = listening_sockets([os.getpid()])[os.getpid()]
    assert ('0.0.0.0', wild.getsockname()[1]) in mine
    assert ('127.0.0.1', local.getsockname()[1]) in mine
    assert list(exposed({os.getpid(): mine}).values()) == [[f'0.0.0.0:{wild.getsockname()[1]}']]


def provisioned_options(pid: int) -> dict:
  """The pipeline options an SDK worker process was given, asked from the provision service
  as the worker itself asks (its ``--id`` and ``--provision_endpoint``)."""
  flags = dict(a[2:].split('=', 1) for a in cmdline(pid).split() if a.startswith('--') and '=' in a)
  info = provision_info(flags['provision_endpoint'], flags['id'])
  return json_format.MessageToDict(info.pipeline_options)


def test_embedded_flink_job_exposes_neither_ports_nor_secrets(kafka_bootstrap, synthetic_model_dir,
                                                              tmp_path, caplog, capfd):
  suffix = uuid.uuid4().hex[:8]
  topics = topics_for(suffix)
  make_topics(kafka_bootstrap, topics.values())
  output = str(tmp_path / 'out')
  # A SASL setting on a PLAINTEXT listener: the client ignores it, the job must not spread it.
  args = stream_args(kafka_bootstrap, topics, output, synthetic_model_dir, '[local]',
                     f'--job_name=exposure-{suffix}',
                     '--kafka_config=sasl.jaas.config=org.apache.kafka.common.security.plain.'
                     f'PlainLoginModule required username="u" password="{SECRET}";')
  caplog.set_level(logging.INFO)
  with Traffic(kafka_bootstrap, topics, 200, 50.0) as traffic, running_stream_job(args):
    traffic.start()
    # Archived records: the SDK workers run and Flink has opened all it opens.
    wait_until(lambda: archived_uuids(output), 120, 'the first archived records')
    # The launcher (this process) too: a LOOPBACK environment would serve from it.
    by_pid = listening_sockets({os.getpid(), *descendants(os.getpid())})
    report('stream job on embedded Flink', by_pid)
    found = exposed(by_pid)
    commands = [cmdline(pid) for pid in by_pid]
    workers = {pid: provisioned_options(pid) for pid in sdk_workers()}
    traffic.finish()
  assert any('job-server' in c for c in commands), 'the job server was not found'
  # The job service, the artifact service and the Fn API servers of the running job.
  assert sum(len(s) for s in by_pid.values()) >= 5, 'fewer sockets than the job server opens'
  assert found == {}
  assert workers, 'no SDK worker process found'
  for options in workers.values():
    text = json.dumps(options)
    assert f'exposure-{suffix}' in text, 'not the options of this job'
    assert SECRET not in text and 'kafka_config' not in text
  out, err = capfd.readouterr()
  for text in (caplog.text, out, err):
    assert SECRET not in text
  with capfd.disabled():  # the [ports] / [timing] lines printed above, consumed by the check
    print(''.join(f'{line}\n' for line in out.splitlines() if line.startswith('[')), end='')
    print(f'[secrets] options of {len(workers)} SDK workers, {len(caplog.records)} log records '
          f'and {len(out) + len(err)} console characters checked', flush=True)


def test_expansion_service_listens_on_loopback_only():
  with kafka_io.expansion_service() as service:
    assert service is not None
    by_pid = {pid: s for pid, s in listening_sockets(descendants(os.getpid())).items()
              if 'expansion-service' in cmdline(pid)}
    report('expansion service', by_pid)
    found = exposed(by_pid)
  assert by_pid, 'the expansion service JVM was not found'
  assert found == {}


def test_kafka_broker_listens_on_loopback_only(kafka_bootstrap):
  broker = owner_of_port(int(kafka_bootstrap.rsplit(':', 1)[1]))
  by_pid = listening_sockets([broker])
  report('Kafka broker (scripts/kafka.sh)', by_pid)
  assert exposed(by_pid) == {}


@pytest.mark.long  # the embedded job and the broker are checked in CI
def test_standalone_cluster_with_a_job_listens_on_loopback_only(flink_rest, kafka_bootstrap,
                                                                synthetic_model_dir, tmp_path):
  """scripts/flink_cluster.sh's JobManager and TaskManager, while a stream job runs on them:
  the TaskManager then also holds the Fn API servers of the job's SDK environments."""
  jobmanager = owner_of_port(int(flink_rest.rsplit(':', 1)[1]))
  config_dir = cmdline(jobmanager).split('--configDir ', 1)[1].split()[0]
  taskmanagers = [int(p) for p in os.listdir('/proc') if p.isdigit()
                  and 'TaskManagerRunner' in cmdline(int(p))
                  and f'--configDir {config_dir}' in cmdline(int(p))]
  assert taskmanagers, 'no TaskManager of this cluster found'
  suffix = uuid.uuid4().hex[:8]
  topics = topics_for(suffix)
  make_topics(kafka_bootstrap, topics.values())
  output = str(tmp_path / 'out')
  args = stream_args(kafka_bootstrap, topics, output, synthetic_model_dir, flink_rest,
                     f'--job_name=exposure-cluster-{suffix}')
  idle = listening_sockets([jobmanager, *taskmanagers])
  report('standalone Flink cluster (scripts/flink_cluster.sh), idle', idle)
  with Traffic(kafka_bootstrap, topics, 200, 50.0) as traffic, running_stream_job(args):
    traffic.start()
    wait_until(lambda: archived_uuids(output), 180, 'the first archived records')
    busy = listening_sockets([jobmanager, *taskmanagers, *descendants(os.getpid())])
    report('standalone Flink cluster with a stream job, and the job server', busy)
    found = exposed(busy)
    traffic.finish()
  assert exposed(idle) == {}
  assert sum(len(s) for s in busy.values()) > sum(len(s) for s in idle.values()), \
      'the running job opened no server: nothing was checked'
  assert found == {}
