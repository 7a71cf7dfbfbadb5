"""A local Kafka broker (``scripts/kafka.sh``: KRaft, one node) on free ports, and the client
helpers tests and benchmarks share: topics, a fast producer, consumer lag."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import time
import uuid
from typing import Any, Iterable, Iterator, Optional

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from harness.ports import free_port
from harness.procs import find_pid
from harness.scripts import run_script

PARTITIONS = 4
STREAMS = ('network', 'process', 'memory')


class Broker:
  """``scripts/kafka.sh`` on free ports in ``run_dir`` (a temporary one, removed with its data
  by :meth:`stop`, when none is given). ``extra_env``: more settings for the script (a SASL
  listener, ...). It can be stopped and started again on the same port with the same data."""

  def __init__(self, partitions: int = PARTITIONS, run_dir: Optional[str] = None,
               extra_env: Optional[dict[str, str]] = None):
    self._own_dir = run_dir is None
    self.run_dir = run_dir or tempfile.mkdtemp(prefix='harness-kafka-')
    self.port = free_port()
    self.env = dict(os.environ, KAFKA_PORT=str(self.port),
                    KAFKA_CONTROLLER_PORT=str(free_port()), KAFKA_RUN_DIR=self.run_dir,
                    KAFKA_PARTITIONS=str(partitions), **(extra_env or {}))
    self.bootstrap = f'127.0.0.1:{self.port}'

  def _script(self, action: str) -> None:
    run_script('kafka.sh', action, self.env, timeout=120)

  def start(self) -> 'Broker':
    try:
      self._script('start')
    except BaseException:  # interrupted or failed half-way: the broker may be up already
      with contextlib.suppress(Exception):
        self._script('stop')
      raise
    print(f'[harness] Kafka broker on {self.bootstrap}, data in {self.run_dir}', file=sys.stderr,
          flush=True)
    return self

  def stop(self) -> None:
    """Stops the broker; a temporary run dir goes with it."""
    self._script('stop')
    if self._own_dir:
      shutil.rmtree(self.run_dir, ignore_errors=True)

  def restart(self, down_s: float = 5.0) -> None:
    """Stops the broker and starts it again on the same port with the same data (a broker
    restart as clients see it: connections refused for ``down_s``, then back)."""
    self._script('stop')
    time.sleep(down_s)
    self._script('start')

  def pid(self) -> Optional[int]:
    with contextlib.suppress(OSError, ValueError):
      with open(os.path.join(self.run_dir, 'kafka.pid'), encoding='utf-8') as f:
        return int(f.read().strip())
    return None


@contextlib.contextmanager
def running_broker(partitions: int = PARTITIONS, run_dir: Optional[str] = None,
                   extra_env: Optional[dict[str, str]] = None) -> Iterator[Broker]:
  """A started :class:`Broker` for the block."""
  broker = Broker(partitions, run_dir, extra_env).start()
  try:
    yield broker
  finally:
    broker.stop()


@contextlib.contextmanager
def broker_for(bootstrap: Optional[str], partitions: int) -> Iterator[tuple[str, Optional[int]]]:
  """(bootstrap, broker pid or None): the given broker, or our own for the block."""
  if bootstrap:
    yield bootstrap, local_broker_pid(bootstrap)
    return
  with running_broker(partitions) as broker:
    yield broker.bootstrap, broker.pid()


def local_broker_pid(bootstrap: str) -> Optional[int]:
  """The pid of a scripts/kafka.sh broker on this host listening on ``bootstrap``'s port (for
  its memory), else None."""
  port = bootstrap.split(',')[0].rsplit(':', 1)[-1]

  def ours(cmd: str) -> bool:
    if 'kafka.Kafka ' not in cmd:
      return False
    config = cmd.split('kafka.Kafka ', 1)[1].split(' ')[0]
    with contextlib.suppress(OSError):
      with open(config, encoding='utf-8') as f:
        return f'PLAINTEXT://127.0.0.1:{port}\n' in f.read().replace(',', '\n')
    return False

  return find_pid(ours)


def make_topics(bootstrap: str, topics: Iterable[str], partitions: int = PARTITIONS) -> None:
  """Creates ``topics`` (``partitions`` each, one replica); raises when one cannot be made."""
  admin = AdminClient({'bootstrap.servers': bootstrap})
  futures = admin.create_topics([NewTopic(t, num_partitions=partitions, replication_factor=1)
                                 for t in topics], operation_timeout=30)
  for f in futures.values():
    f.result(timeout=60)


def delete_topics(bootstrap: str, topics: Iterable[str]) -> None:
  """Deletes ``topics``, best effort (a clean-up: failures are ignored)."""
  admin = AdminClient({'bootstrap.servers': bootstrap})
  for future in admin.delete_topics(list(topics)).values():
    with contextlib.suppress(Exception):
      future.result(30)


def topics_for(suffix: str, streams: Iterable[str] = STREAMS) -> dict[str, str]:
  """``{stream: '<stream>_<suffix>'}``: topic names of one test."""
  return {s: f'{s}_{suffix}' for s in streams}


def fresh_topics(prefix: str, streams: Iterable[str] = STREAMS + ('alerts',)) -> dict[str, str]:
  """Fresh topic names for one run: ``{'network': '<prefix>_network_<random>', ...}`` (a
  fresh name means 'earliest' reads only this run's data)."""
  suffix = uuid.uuid4().hex[:8]
  return {s: f'{prefix}_{s}_{suffix}' for s in streams}


def producer(bootstrap: str, **extra: Any) -> Producer:
  """A producer tuned for filling topics fast (large batches, lz4, acks=all)."""
  config = {'bootstrap.servers': bootstrap, 'linger.ms': 50, 'batch.num.messages': 10000,
            'compression.type': 'lz4', 'queue.buffering.max.messages': 500000,
            'queue.buffering.max.kbytes': 1048576, 'acks': 'all'}
  config.update(extra)
  return Producer(config)


def produce_all(bootstrap: str, messages: Iterable[Any]) -> int:
  """Sends generator ``Message`` objects as fast as the broker takes them; returns the count
  acknowledged (raises when any failed)."""
  prod = producer(bootstrap)
  failed = []

  def on_delivery(err, _msg):
    if err is not None:
      failed.append(err)

  sent = 0
  for m in messages:
    while True:
      try:
        prod.produce(m.topic, value=m.value, key=m.key, timestamp=m.timestamp_ms,
                     on_delivery=on_delivery)
        break
      except BufferError:
        prod.poll(0.05)
    sent += 1
    if sent % 1000 == 0:
      prod.poll(0)
  left = prod.flush(120)
  if failed or left:
    raise RuntimeError(f'pre-fill: {len(failed)} failed, {left} unconfirmed of {sent}')
  return sent


def offset_consumer(bootstrap: str, group: str) -> Consumer:
  """A consumer of ``group`` that never commits: for reading its committed offsets."""
  return Consumer({'bootstrap.servers': bootstrap, 'group.id': group,
                   'enable.auto.commit': False})


class Lag:
  """End offsets minus the group's committed offsets, over a topic's partitions. Uses a plain
  consumer (committed()): the admin client's group-offset call can crash on a fresh broker."""

  def __init__(self, bootstrap: str, topic: str, group: str, partitions: int = PARTITIONS):
    self._consumer = offset_consumer(bootstrap, group)
    self._partitions = [TopicPartition(topic, p) for p in range(partitions)]

  def offsets(self) -> tuple[int, int]:
    """(committed, end), each summed over the partitions; raises KafkaException when the
    broker does not answer within 10 s."""
    committed = end = 0
    for tp in self._consumer.committed(self._partitions, timeout=10):
      _, high = self._consumer.get_watermark_offsets(tp, timeout=10)
      committed += max(tp.offset, 0)
      end += high
    return committed, end

  def __call__(self) -> int:
    committed, end = self.offsets()
    return end - committed

  def close(self):
    self._consumer.close()
