"""Background feeds of the dashboard, each a daemon thread that never raises: a failure is kept
in its ``status`` (shown on the page) and retried at the next tick.

* :class:`AlertFeed`: a confluent-kafka consumer on the alerts topic. It assigns itself every
  partition (no group membership: several dashboards each see every alert, and it never commits
  offsets, so it changes nothing on the cluster), from the end of each partition by default or
  from the beginning (``from_beginning``). Partitions that appear after start-up (the topic did
  not exist yet) are read from their beginning: all they hold is new.
* :class:`KafkaHealth`: end offsets of the input topics every few seconds (input rate), and the
  lag of the stream job's consumer group when its id is known.
* :class:`ParquetScanner`: new files under ``<output>/{alerts,attacks,dead_letter}/dt=<date>/``
  for the dates the time window allows, each read once (the sink renames complete files into
  place, so a listed file is whole).
* :class:`ModelWatcher`: the newest version and manifest of each detector in the registry.

What they read may be forged (a producer on the alerts topic, a writer into the output folders):
a message is bounded in bytes before it is parsed, a Parquet file in bytes, rows and
uncompressed size before it is read, its columns are read only when of a plain type, and
timestamps and text are converted here, cell by cell, so one bad cell rejects one row (counted
by the store) instead of the whole file.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import stat
import threading
import time
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from dashboard.aggregate import (ATTACK_COLUMNS, DEAD_LETTER_COLUMNS, DETAILS_LIMIT,
                                 INCIDENT_COLUMNS, AlertStore, AttackStore, Bounds,
                                 DeadLetterStore, IncidentStore, RateTracker, number, text)
from model import registry, signing
from schemas.layout import (ALERTS, ATTACKS, DEAD_LETTERS, INCIDENTS, finished_files,
                            output_folder)
from schemas.outputs import ALERT_SCHEMA
from transforms.redaction import scrub

log = logging.getLogger('dashboard')
KAFKA_LOG = logging.getLogger('dashboard.librdkafka')

MAX_ALERT_BYTES = 64 * 1024  # the stream job's alerts are a few kB


def parse_alert_message(store: AlertStore, value: Optional[bytes], source: str,
                        received_at: float, max_bytes: int = MAX_ALERT_BYTES) -> str:
  """One Kafka message value -> ``store`` ('added', 'duplicate' or 'invalid'). The size is
  checked before parsing; what does not parse (bad UTF-8, not JSON, nested past the decoder's
  recursion limit) is rejected with its reason, never raised."""
  if value is None:
    return store.reject('empty', source, None, received_at)
  if len(value) > max_bytes:
    return store.reject('too large', source, value, received_at)
  try:
    parsed = json.loads(value)
  except (ValueError, TypeError, RecursionError):
    return store.reject('not JSON', source, value, received_at)
  return store.add(parsed, source, received_at)


class Scrubber:
  """Error text fit to log or show: the client config's secret values masked (the rules are
  transforms/redaction.py's), cut to what the page shows."""

  def __init__(self, config: Mapping[str, Any]):
    self._config = {k: v for k, v in config.items() if not callable(v)}

  def __call__(self, message: Any) -> str:
    return text(scrub(message, self._config), 300)


class Feed(threading.Thread):
  """A polling thread: ``tick()`` every ``interval`` seconds until ``stop()``."""

  label = 'feed'

  def __init__(self, interval: float, scrub: Optional[Callable[[Any], str]] = None):
    super().__init__(daemon=True, name=f'dashboard-{self.label}')
    self.interval = interval
    self._stopping = threading.Event()
    self._scrub = scrub or (lambda m: text(str(m), 300))
    self._status_lock = threading.Lock()
    self._status: dict[str, Any] = {'state': 'starting', 'last_ok': None, 'last_error': None,
                                    'last_error_at': None}

  @property
  def status(self) -> dict[str, Any]:
    with self._status_lock:
      return dict(self._status)

  def update_status(self, **values) -> None:
    with self._status_lock:
      self._status.update(values)

  def ok(self, state: str = 'ok', **values) -> None:
    self.update_status(state=state, last_ok=time.time(), **values)

  def failed(self, error: Any, state: str = 'error') -> None:
    message = self._scrub(f'{type(error).__name__}: {error}' if isinstance(error, BaseException)
                          else error)
    with self._status_lock:
      repeated = self._status.get('last_error') == message
      self._status.update(state=state, last_error=message, last_error_at=time.time())
    if not repeated:
      log.warning('%s: %s', self.label, message)

  def stop(self) -> None:
    self._stopping.set()

  @property
  def stopping(self) -> bool:
    return self._stopping.is_set()

  def tick(self) -> None:
    raise NotImplementedError

  def close(self) -> None:
    pass

  def run(self) -> None:
    try:
      while not self._stopping.is_set():
        try:
          self.tick()
        except Exception as e:  # pylint: disable=broad-except
          self.failed(e)
        self._stopping.wait(self.interval)
    finally:
      try:
        self.close()
      except Exception:  # pylint: disable=broad-except
        pass


def kafka_base_config(bootstrap_servers: str, client_config: Mapping[str, str],
                      scrub: Scrubber) -> dict[str, Any]:
  config: dict[str, Any] = {'bootstrap.servers': bootstrap_servers,
                            'client.id': 'alerts-dashboard',
                            'socket.connection.setup.timeout.ms': 10000,
                            'reconnect.backoff.max.ms': 5000,
                            'log.connection.close': False}
  config.update(client_config)
  logged: dict[Any, float] = {}

  def on_error(err):
    # librdkafka repeats a lasting error (broker down) every few seconds, with varying text:
    # each kind of error is logged once a minute at most.
    kind = err.code() if hasattr(err, 'code') else str(err)
    now = time.monotonic()
    if now - logged.get(kind, -1e9) >= 60:
      logged[kind] = now
      log.warning('kafka: %s', scrub(err.str() if hasattr(err, 'str') else err))

  config['error_cb'] = on_error
  # librdkafka's own log lines (the same failures, verbosely) only with --log_level DEBUG.
  config['logger'] = KAFKA_LOG
  return config


class AlertFeed(Feed):
  """Consumes the alerts topic into an :class:`AlertStore`."""

  label = 'alerts consumer'

  def __init__(self, store: AlertStore, bootstrap_servers: str, topic: str,
               client_config: Mapping[str, str], *, group_id: str = 'alerts-dashboard',
               from_beginning: bool = False, metadata_interval: float = 5.0,
               batch: int = 500, max_message_bytes: int = MAX_ALERT_BYTES):
    scrub = Scrubber(client_config)
    super().__init__(0.0, scrub)
    self.store = store
    self.max_message_bytes = max_message_bytes
    self.topic = topic
    self.from_beginning = from_beginning
    self.metadata_interval = metadata_interval
    self.batch = batch
    self._config = kafka_base_config(bootstrap_servers, client_config, scrub)
    self._config.update({
        'group.id': group_id,
        'enable.auto.commit': False,
        'enable.auto.offset.store': False,
        'auto.offset.reset': 'earliest' if from_beginning else 'latest',
        # Bounded prefetch: at most ~8 MB of messages wait in the client's queue, and a fetch
        # answer is at most 8 MB (one larger message still comes alone, so nothing stalls).
        'queued.max.messages.kbytes': 8192,
        'fetch.max.bytes': 8 * 1024 * 1024,
        'enable.partition.eof': False,
    })
    self._consumer = None
    self._assigned: dict[int, Any] = {}
    self._first_metadata = True
    self._next_metadata = 0.0
    self._next_lag = 0.0
    self.update_status(topic=topic, partitions=0, lag=None, messages=0, invalid=0,
                       from_beginning=from_beginning)

  def _refresh_partitions(self) -> None:
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, TopicPartition
    metadata = self._consumer.list_topics(self.topic, timeout=5)
    topic = metadata.topics.get(self.topic)
    if topic is None or topic.error is not None or not topic.partitions:
      # An absent topic: every partition it gets later is read from its beginning.
      self._first_metadata = False
      if not self._assigned:
        self.ok('waiting for topic', partitions=0)
      return
    new = sorted(set(topic.partitions) - set(self._assigned))
    if new:
      from_start = self.from_beginning or not self._first_metadata
      parts = []
      for p in new:
        offset = OFFSET_BEGINNING
        if not from_start:
          # The end now, as an absolute offset: a logical OFFSET_END would be resolved later,
          # when the fetcher starts, and skip what was published in between.
          offset = self._consumer.get_watermark_offsets(
              TopicPartition(self.topic, p), timeout=5, cached=False)[1]
          offset = offset if offset >= 0 else OFFSET_END
        parts.append(TopicPartition(self.topic, p, offset))
      self._consumer.incremental_assign(parts)
      for p in parts:
        self._assigned[p.partition] = p
      log.info('alerts consumer: reading %s partitions %s from the %s', self.topic, new,
               'beginning' if from_start else 'end')
    self._first_metadata = False
    self.ok('consuming', partitions=len(self._assigned))

  def _update_lag(self) -> None:
    from confluent_kafka import TopicPartition
    if not self._assigned:
      return
    parts = [TopicPartition(self.topic, p) for p in self._assigned]
    lag = 0
    for tp in self._consumer.position(parts):
      low, high = self._consumer.get_watermark_offsets(tp, cached=True) or (None, None)
      if high is None or high < 0:
        continue
      position = tp.offset if tp.offset >= 0 else high
      lag += max(0, high - max(position, low or 0))
    self.update_status(lag=lag)

  def poll_once(self, timeout: float) -> int:
    now = time.time()
    if now >= self._next_metadata:
      self._next_metadata = now + (self.metadata_interval if self._assigned else 1.0)
      try:
        self._refresh_partitions()
      except Exception as e:  # pylint: disable=broad-except
        self.failed(e, 'broker unreachable')
    if not self._assigned:
      self._stopping.wait(min(timeout, 0.5))
      return 0
    messages = self._consumer.consume(num_messages=self.batch, timeout=timeout)
    received_at = time.time()
    added = invalid = 0
    for message in messages:
      error = message.error()
      if error is not None:
        self.failed(error, 'consuming')
        continue
      if parse_alert_message(self.store, message.value(), 'kafka', received_at,
                             self.max_message_bytes) == 'invalid':
        invalid += 1
      else:
        added += 1
    if messages:
      status = self.status
      self.update_status(messages=status['messages'] + added, invalid=status['invalid'] + invalid,
                         last_message_at=received_at)
    if received_at >= self._next_lag:
      self._next_lag = received_at + 2.0
      self._update_lag()
    return len(messages)

  def run(self) -> None:
    # confluent-kafka is imported where a feed starts, here and below: it is an optional
    # dependency (the tools extra), and the dashboard's Parquet and registry views run without it.
    from confluent_kafka import Consumer
    try:
      self._consumer = Consumer(self._config)
    except Exception as e:  # pylint: disable=broad-except
      self.failed(e, 'misconfigured')
      return
    self.update_status(state='connecting')
    try:
      while not self.stopping:
        try:
          self.poll_once(0.5)
        except Exception as e:  # pylint: disable=broad-except
          self.failed(e)
          self._stopping.wait(1.0)
    finally:
      try:
        self._consumer.close()
      except Exception:  # pylint: disable=broad-except
        pass


class KafkaHealth(Feed):
  """Input rate (end offsets of the input topics over time) and consumer lag."""

  label = 'kafka health'

  def __init__(self, rates: RateTracker, bootstrap_servers: str, input_topics: Sequence[str],
               client_config: Mapping[str, str], *, stream_group_id: Optional[str] = None,
               interval: float = 2.0, request_timeout: float = 5.0):
    scrub = Scrubber(client_config)
    super().__init__(interval, scrub)
    self.rates = rates
    self.input_topics = list(dict.fromkeys(input_topics))
    self.stream_group_id = stream_group_id
    self.request_timeout = request_timeout
    self._config = kafka_base_config(bootstrap_servers, client_config, scrub)
    self._config.pop('log.connection.close', None)
    self._admin = None
    self._group_consumer = None
    self.update_status(topics={}, stream_group_id=stream_group_id, stream_lag=None,
                       brokers=None)

  def tick(self) -> None:
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec
    if self._admin is None:
      self._admin = AdminClient(self._config)
    metadata = self._admin.list_topics(timeout=self.request_timeout)
    partitions: dict[str, list[int]] = {}
    missing = []
    for topic in self.input_topics:
      found = metadata.topics.get(topic)
      if found is None or found.error is not None:
        missing.append(topic)
      else:
        partitions[topic] = sorted(found.partitions)
    ends: dict[str, int] = {t: 0 for t in partitions}
    per_partition: dict[tuple[str, int], int] = {}
    if partitions:
      request = {TopicPartition(t, p): OffsetSpec.latest()
                 for t, ps in partitions.items() for p in ps}
      futures = self._admin.list_offsets(request, request_timeout=self.request_timeout)
      for tp, future in futures.items():
        offset = future.result().offset
        per_partition[(tp.topic, tp.partition)] = offset
        ends[tp.topic] += max(0, offset)
    now = time.time()
    rates = self.rates.record(now, ends)
    stream_lag = (self._stream_lag(per_partition) if self.stream_group_id and per_partition
                  else None)
    topics = {t: {'partitions': len(partitions[t]), 'end_offset': ends[t],
                  'rate': rates.get(t), 'lag': (stream_lag or {}).get(t)}
              for t in partitions}
    for topic in missing:
      topics[topic] = {'missing': True}
    lag_total = (None if stream_lag is None or not stream_lag
                 else sum(v for v in stream_lag.values() if v is not None))
    self.ok('ok', topics=topics, brokers=len(metadata.brokers), stream_lag=lag_total)

  def close(self) -> None:
    if self._group_consumer is not None:
      self._group_consumer.close()

  def _stream_lag(self, ends: Mapping[tuple[str, int], int]) -> Optional[dict[str, int]]:
    # The group's committed offsets through a consumer carrying its group.id, which never
    # subscribes nor commits (it does not join the group). Not AdminClient's
    # list_consumer_group_offsets: librdkafka crashes the process (SIGSEGV in rd_kafka_cgrp_op)
    # when the group's coordinator is not ready yet, e.g. on a fresh cluster.
    from confluent_kafka import Consumer, TopicPartition
    if self._group_consumer is None:
      config = dict(self._config)
      config.update({'group.id': self.stream_group_id, 'enable.auto.commit': False,
                     'enable.auto.offset.store': False})
      self._group_consumer = Consumer(config)
    committed = self._group_consumer.committed([TopicPartition(t, p) for (t, p) in ends],
                                               timeout=self.request_timeout)
    lag: dict[str, int] = {}
    for tp in committed:
      end = ends.get((tp.topic, tp.partition))
      if end is None or tp.error is not None or tp.offset is None or tp.offset < 0:
        continue  # nothing committed for this partition
      lag[tp.topic] = lag.get(tp.topic, 0) + max(0, end - tp.offset)
    return lag


@dataclasses.dataclass(frozen=True)
class ParquetLimits:
  """What one output file may cost the dashboard. A file over a limit is not read; it is
  counted (``too_large`` in the scanner's status) and named in its last error."""
  max_file_bytes: int = 128 * 1024 * 1024
  max_rows: int = 1_000_000
  max_uncompressed_bytes: int = 256 * 1024 * 1024  # of the columns read
  max_files_listed: int = 10_000  # per folder and date
  batch_rows: int = 2_000


class TooLarge(ValueError):
  pass


_TIME_UNITS = {'s': 1.0, 'ms': 1e3, 'us': 1e6, 'ns': 1e9}


def _readable(data_type) -> bool:
  """Plain types only: a list, struct or map column would become arbitrarily nested values."""
  t = pa.types
  if t.is_dictionary(data_type):
    return _readable(data_type.value_type)
  return (t.is_null(data_type) or t.is_boolean(data_type) or t.is_integer(data_type)
          or t.is_floating(data_type) or t.is_decimal(data_type) or t.is_string(data_type)
          or t.is_large_string(data_type) or t.is_binary(data_type)
          or t.is_large_binary(data_type) or t.is_fixed_size_binary(data_type)
          or t.is_timestamp(data_type) or t.is_date(data_type))


def _is_text(data_type) -> bool:
  t = pa.types
  if t.is_dictionary(data_type):
    return False
  return (t.is_string(data_type) or t.is_large_string(data_type) or t.is_binary(data_type)
          or t.is_large_binary(data_type))


def _plain_columns(batch) -> dict[str, list[Any]]:
  """A record batch -> {column: Python values}, converting what pyarrow's to_pylist would
  raise on for the whole batch: timestamps become Unix seconds (any int64, not only the years
  Python's datetime holds), text is decoded with replacement (invalid UTF-8) and cut."""
  columns = {}
  for name, column in zip(batch.schema.names, batch.columns):
    data_type = column.type
    if pa.types.is_dictionary(data_type):
      # Text is read dictionary-encoded: a file of one huge value repeated on every row is
      # small in its pages (one dictionary entry) and stays small here, each row referring to
      # the one cut, decoded entry instead of a copy of it.
      table = _plain_columns(pa.record_batch([column.dictionary], names=[name]))[name]
      columns[name] = [None if i is None else table[i] for i in column.indices.to_pylist()]
      continue
    if pa.types.is_timestamp(data_type):
      scale = _TIME_UNITS[data_type.unit]
      columns[name] = [None if v is None else v / scale
                       for v in column.view(pa.int64()).to_pylist()]
    elif pa.types.is_date32(data_type):
      columns[name] = [None if v is None else v * 86400.0
                       for v in column.view(pa.int32()).to_pylist()]
    elif pa.types.is_date64(data_type):
      columns[name] = [None if v is None else v / 1e3
                       for v in column.view(pa.int64()).to_pylist()]
    elif pa.types.is_string(data_type) or pa.types.is_large_string(data_type):
      binary = pa.binary() if pa.types.is_string(data_type) else pa.large_binary()
      limit = 4 * DETAILS_LIMIT + 4
      columns[name] = [None if v is None else v[:limit].decode('utf-8', errors='replace')
                       for v in column.view(binary).to_pylist()]
    elif pa.types.is_decimal(data_type):
      columns[name] = pc.cast(column, pa.float64(), safe=False).to_pylist()
    else:
      columns[name] = column.to_pylist()
  return columns


def iter_parquet_rows(path: str, columns: Sequence[str],
                      limits: ParquetLimits = ParquetLimits()) -> Iterator[list[dict[str, Any]]]:
  """The rows of one Parquet file in batches, only the wanted columns that it has with a plain
  type. Raises TooLarge (before reading any row) when the file's metadata exceeds ``limits``."""
  with FileSystems.open(path, mime_type='application/octet-stream',
                        compression_type='uncompressed') as handle:
    parquet = pq.ParquetFile(handle, thrift_string_size_limit=16 * 1024 * 1024,
                             thrift_container_size_limit=100_000)
    metadata = parquet.metadata
    if metadata.num_rows > limits.max_rows:
      raise TooLarge(f'{metadata.num_rows} rows (limit {limits.max_rows})')
    schema = parquet.schema_arrow
    present = [c for c in columns
               if c in schema.names and _readable(schema.field(c).type)]
    text_columns = [c for c in present if _is_text(schema.field(c).type)]
    if text_columns:
      handle.seek(0)
      parquet = pq.ParquetFile(handle, read_dictionary=text_columns,
                               thrift_string_size_limit=16 * 1024 * 1024,
                               thrift_container_size_limit=100_000)
    wanted = set(present)
    uncompressed = 0
    for g in range(metadata.num_row_groups):
      group = metadata.row_group(g)
      for i in range(group.num_columns):
        chunk = group.column(i)
        if chunk.path_in_schema in wanted:
          uncompressed += max(0, chunk.total_uncompressed_size)
    if uncompressed > limits.max_uncompressed_bytes:
      raise TooLarge(f'{uncompressed} bytes uncompressed (limit {limits.max_uncompressed_bytes})')
    for batch in parquet.iter_batches(batch_size=limits.batch_rows, columns=present):
      values = _plain_columns(batch)
      names = list(values)
      yield [dict(zip(names, row)) for row in zip(*values.values())] if names else (
          [{} for _ in range(batch.num_rows)])


def read_parquet_rows(path: str, columns: Sequence[str],
                      limits: ParquetLimits = ParquetLimits()) -> list[dict[str, Any]]:
  """All rows of one Parquet file (see :func:`iter_parquet_rows`)."""
  return [row for rows in iter_parquet_rows(path, columns, limits) for row in rows]


def _is_regular_local_file(path: str) -> bool:
  """A local path that is a FIFO or a device would block or never end: only regular files."""
  if '://' in path:
    return True
  try:
    return stat.S_ISREG(os.stat(path).st_mode)
  except OSError:
    return False


def window_dates(now: float, bounds: Bounds, lookback_s: float) -> list[str]:
  """The dt=YYYY-MM-DD folder names that can hold rows inside the time window: the only ones
  listed, so made-up folders (or thousands of dates) cost nothing."""
  oldest = now - max(bounds.max_age_s, lookback_s)
  day = datetime.datetime.fromtimestamp(oldest, datetime.timezone.utc).date()
  last = datetime.datetime.fromtimestamp(now + bounds.max_future_s,
                                         datetime.timezone.utc).date()
  dates = []
  while day <= last:
    dates.append(day.isoformat())
    day += datetime.timedelta(days=1)
  return dates


class ParquetScanner(Feed):
  """Reads each new Parquet file of the stream job's outputs once."""

  label = 'parquet scanner'

  def __init__(self, output: str, alerts: AlertStore, attacks: AttackStore,
               dead_letters: DeadLetterStore, *, interval: float = 5.0,
               lookback_minutes: float = 60.0, max_files_per_scan: int = 100,  # per folder
               limits: ParquetLimits = ParquetLimits(),
               incidents: Optional[IncidentStore] = None):
    super().__init__(interval)
    self.output = output
    self.lookback_s = lookback_minutes * 60
    self.max_files = max_files_per_scan
    self.limits = limits
    self.bounds = alerts.bounds
    self.started = time.time()
    self._seen: dict[str, set[str]] = {}
    self._folders = {
        ALERTS: (ALERT_SCHEMA.names, lambda row: alerts.add(row, 'parquet')),
        ATTACKS: (ATTACK_COLUMNS, attacks.add),
        DEAD_LETTERS: (DEAD_LETTER_COLUMNS, dead_letters.add),
    }
    if incidents is not None:
      self._folders[INCIDENTS] = (INCIDENT_COLUMNS, incidents.add)
    self.update_status(output=output, files={f: 0 for f in self._folders},
                       rows={f: 0 for f in self._folders}, unreadable=0, too_large=0)

  def _listing(self, folder: str) -> list[tuple[str, Optional[float], Optional[int]]]:
    dates = window_dates(time.time(), self.bounds, self.lookback_s)
    return [(m.path, m.last_updated_in_seconds, m.size_in_bytes) for m in finished_files(
        output_folder(self.output, folder), dates, self.limits.max_files_listed)]

  def tick(self) -> None:
    status = self.status
    files, rows = dict(status['files']), dict(status['rows'])
    unreadable, too_large = status['unreadable'], status['too_large']
    for folder, (columns, add) in self._folders.items():
      # A budget per folder: a flood of files in one cannot starve the others.
      budget = self.max_files
      listed = self._listing(folder)
      seen = self._seen.setdefault(folder, set())
      fresh = sorted(((mtime or 0, path, size) for path, mtime, size in listed
                      if path not in seen))
      for mtime, path, size in fresh:
        if mtime and mtime < self.started - self.lookback_s:
          seen.add(path)  # older than the look-back window: not worth reading
          continue
        if budget <= 0:
          break
        budget -= 1
        seen.add(path)
        try:
          if not _is_regular_local_file(path):
            raise TooLarge('not a regular file')
          if size is not None and size > self.limits.max_file_bytes:
            raise TooLarge(f'{size} bytes (limit {self.limits.max_file_bytes})')
          count = 0
          for batch in iter_parquet_rows(path, columns, self.limits):
            for row in batch:
              add(row)
            count += len(batch)
            if self.stopping:
              break
        except TooLarge as e:
          too_large += 1
          self.failed(f'not read {path}: {e}', 'ok')
          continue
        except Exception as e:  # pylint: disable=broad-except
          unreadable += 1
          self.failed(f'cannot read {path}: {type(e).__name__}: {e}', 'ok')
          continue
        files[folder] += 1
        rows[folder] += count
      # Forget files that are gone, so the set stays the size of the listing.
      if len(seen) > len(listed):
        seen.intersection_update(p for p, _, _ in listed)
    self.ok('ok', files=files, rows=rows, unreadable=unreadable, too_large=too_large,
            last_scan=time.time())


class ModelWatcher(Feed):
  """The newest published version of each detector and the key facts of its manifest."""

  label = 'model registry'
  METRICS = ('roc_auc', 'pr_auc', 'precision', 'recall', 'f1', 'false_positive_rate')

  def __init__(self, model_dir: str, *, interval: float = 15.0,
               public_key: Optional[str] = None):
    super().__init__(interval)
    self.model_dir = model_dir
    # Only public keys: the page shows what the stream would serve, never an unsigned folder.
    # Read at every tick, so a key file created after start (or rotated) is picked up.
    self.public_key = public_key
    self.update_status(model_dir=model_dir, detectors={})

  @classmethod
  def summarize(cls, manifest: Mapping[str, Any]) -> dict[str, Any]:
    metrics = manifest.get('metrics') if isinstance(manifest.get('metrics'), Mapping) else {}
    # Metrics may be flat or nested one level (e.g. {'test': {...}}); show the flat ones.
    flat = {k: number(metrics.get(k)) for k in cls.METRICS if number(metrics.get(k)) is not None}
    threshold = number(manifest.get('threshold'))
    if threshold is None:
      threshold = number(metrics.get('threshold'))
    return {'version': text(manifest.get('version'), 64), 'created': text(manifest.get('created'), 64),
            'training_rows': number(manifest.get('training_rows')),
            'threshold': threshold, 'metrics': flat}

  def tick(self) -> None:
    try:
      keys = signing.reader_keys(self.public_key)
    except signing.KeyFileError as e:
      self.ok('ok', detectors={d: {'version': None, 'error': text(str(e), 200)}
                               for d in registry.DETECTORS})
      return
    detectors = {}
    for detector in registry.DETECTORS:
      newest = None
      try:
        # One detector's broken folder must not hide the others.
        newest = registry.latest_version(self.model_dir, detector)
        if newest is None:
          detectors[detector] = None
          continue
        verified = registry.newest_verified_manifest(self.model_dir, detector, keys)
        if verified is None:
          detectors[detector] = {
              'version': None,
              'error': text(f'no version verifies (newest folder {newest} refused)', 200)}
          continue
        version, manifest = verified
        detectors[detector] = self.summarize(manifest)
        detectors[detector]['version'] = text(version, 64)
        if version != newest:
          detectors[detector]['refused_newer'] = text(newest, 64)
      except Exception as e:  # pylint: disable=broad-except
        detectors[detector] = {'version': text(newest, 64), 'error': text(str(e), 200)}
    self.ok('ok', detectors=detectors)
