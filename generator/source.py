"""The generator's message sequence: network records and host samples merged on one clock.

The clock is event time. Message k is scheduled at ``start_ms + k * 1000 / rate`` (``rate``
is messages/s; when unlimited, ``event_rate``, by default 1000/s); a host sample is sent at the first slot at
or after its ``ts`` with its own ``ts`` as event time, network records fill the other slots
with the slot time as ``utc``. Without a network stream the clock jumps from one host sample
to the next. Everything drawn at random comes from generators seeded from ``seed``, one per
purpose, so changing e.g. the malformed fraction does not change the records or their uuids.

>>> config = SourceConfig(count=3, seed=1, start_ms=1_700_000_000_000)
>>> [m.topic for m in generate_messages(config)]       # doctest: +SKIP
['process_activity', 'memory_activity', 'sensor_messages']
"""

from __future__ import annotations

import dataclasses
import random
import time
from typing import Iterator, Mapping, Optional

import numpy as np
import pandas as pd

from schemas.kdd import read_kdd_csv
from generator.messages import (Message, host_message, malform, network_json_rows,
                                network_message_from_json)
from generator.synthetic_host import DEFAULT_ATTACK_FRACTION, HostSimulator
from generator.synthetic_network import generate_network
from schemas.records import KDD_FEATURES, SCHEMAS

STREAMS = tuple(SCHEMAS)  # network, process, memory
DEFAULT_TOPICS = {stream: schema.default_topic for stream, schema in SCHEMAS.items()}
NOMINAL_RATE = 1000.0  # messages/s of event time when the send rate is unlimited
_CHUNK = 4096


@dataclasses.dataclass
class SourceConfig:
  """What to generate. ``count`` (messages), ``duration_s`` (event time) and, for a file,
  ``one_sequential_pass`` end the sequence, whichever comes first; with none it is endless."""
  streams: tuple[str, ...] = STREAMS
  source: str = 'synthetic'  # or 'kdd'
  kdd_file: Optional[str] = None
  frame: Optional[pd.DataFrame] = None  # an already loaded KDD frame (tests, benchmarks)
  one_sequential_pass: bool = False
  count: Optional[int] = None
  duration_s: Optional[float] = None
  rate: float = 0.0
  event_rate: Optional[float] = None  # event-time spacing when rate is 0 (unlimited)
  seed: int = 0
  malformed_fraction: float = 0.0
  start_ms: Optional[int] = None  # default: now
  site: Optional[str] = 'site-1'
  machines: int = 20
  attack_fraction: float = DEFAULT_ATTACK_FRACTION
  network_mix: Optional[Mapping[str, float]] = None
  with_labels: bool = True
  topics: Mapping[str, str] = dataclasses.field(default_factory=lambda: dict(DEFAULT_TOPICS))

  def validate(self) -> None:
    unknown = set(self.streams) - set(STREAMS)
    if unknown or not self.streams:
      raise ValueError(f'streams must be a non-empty subset of {STREAMS}, got {self.streams}')
    if self.source not in ('synthetic', 'kdd'):
      raise ValueError(f"source must be 'synthetic' or 'kdd', got {self.source!r}")
    if self.source == 'kdd' and self.frame is None and not self.kdd_file:
      raise ValueError('source kdd needs a KDD CSV file')
    if self.one_sequential_pass and self.source != 'kdd':
      raise ValueError('one_sequential_pass needs source kdd')
    if self.one_sequential_pass and 'network' not in self.streams:
      raise ValueError('one_sequential_pass sends the network file: include the network stream')
    if not 0 <= self.malformed_fraction <= 1:
      raise ValueError('malformed_fraction must be in [0, 1]')
    if self.rate < 0 or (self.event_rate is not None and self.event_rate <= 0):
      raise ValueError('rate must be >= 0 and event_rate > 0')
    if self.count is not None and self.count < 0:
      raise ValueError('count must be >= 0')
    topics = [self.topics[s] for s in self.streams]
    if len(set(topics)) != len(topics):
      raise ValueError(f'each stream needs its own topic, got {topics}')


def _seed(seed: int, purpose: int) -> int:
  return int(np.random.SeedSequence([seed, purpose]).generate_state(1)[0])


def _kdd_rows(frame: pd.DataFrame, seed: int, sequential: bool
              ) -> Iterator[tuple[int, str]]:
  """(file row index, row JSON) in file order once, or in random order epoch after epoch."""
  rng = np.random.default_rng(_seed(seed, 1))
  while True:
    order = np.arange(len(frame)) if sequential else rng.permutation(len(frame))
    for begin in range(0, len(order), _CHUNK):
      index = order[begin:begin + _CHUNK]
      yield from zip(index.tolist(), network_json_rows(frame.take(index)))
    if sequential or len(frame) == 0:
      return


def _synthetic_rows(seed: int, mix, columns: list[str]) -> Iterator[tuple[int, str]]:
  index = 0
  for chunk in range(2**62):
    frame = generate_network(_CHUNK, _seed(seed, 100 + chunk), mix)
    for row in network_json_rows(frame[columns]):
      yield index, row
      index += 1


def network_source(config: SourceConfig) -> Iterator[tuple[int, str]]:
  """(row index, JSON text of the record's features and label) of the network stream."""
  columns = list(KDD_FEATURES) + (['label'] if config.with_labels else [])
  if config.source == 'synthetic':
    return _synthetic_rows(config.seed, config.network_mix, columns)
  frame = config.frame if config.frame is not None else read_kdd_csv(config.kdd_file)
  return _kdd_rows(frame[columns], config.seed, config.one_sequential_pass)


def generate_messages(config: SourceConfig) -> Iterator[Message]:
  """The messages of a run, in send order, each with its event time as ``timestamp_ms``."""
  config.validate()
  start_ms = int(time.time() * 1000) if config.start_ms is None else int(config.start_ms)
  step_ms = 1000.0 / (config.rate or config.event_rate or NOMINAL_RATE)
  end_ms = None if config.duration_s is None else start_ms + config.duration_s * 1000
  uuid_rng = random.Random(_seed(config.seed, 2))
  messy_rng = random.Random(_seed(config.seed, 3))
  # Which messages break does not depend on their content; how they break does.
  malformed_pick = random.Random(_seed(config.seed, 4))
  malformed_rng = random.Random(_seed(config.seed, 6))

  network = network_source(config) if 'network' in config.streams else None
  host_streams = [s for s in ('process', 'memory') if s in config.streams]
  host = None
  if host_streams:
    simulator = HostSimulator(config.machines, _seed(config.seed, 5), start_ms // 1000,
                              config.attack_fraction)
    host = (s for s in simulator.samples() if s.stream in host_streams)
  pending = next(host) if host else None

  sent, sequence_id, clock = 0, 0, float(start_ms)
  while config.count is None or sent < config.count:
    if network is None and pending is not None:
      clock = max(clock, pending.ts * 1000.0)  # nothing to fill the gap with: jump
    if end_ms is not None and clock >= end_ms:
      return
    if pending is not None and pending.ts * 1000 <= clock:
      message = host_message(pending, topic=config.topics[pending.stream], rng=messy_rng)
      pending = next(host)
    else:
      try:
        index, row = next(network)
      except StopIteration:
        return  # the one sequential pass is over
      message = network_message_from_json(
          row, topic=config.topics['network'], timestamp_ms=int(clock), sequence_id=sequence_id,
          index=index, site=config.site, rng=uuid_rng)
      sequence_id += 1
    if config.malformed_fraction and malformed_pick.random() < config.malformed_fraction:
      message = message._replace(value=malform(message.value, malformed_rng), malformed=True)
    yield message
    sent += 1
    clock += step_ms
