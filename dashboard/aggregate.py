"""Bounded server-side aggregation behind the dashboard. No I/O here: the feeds in
:mod:`dashboard.sources` call ``add``, the HTTP server calls ``snapshot``.

Every structure has a fixed bound whatever the alert rate: ring buffers of the latest rows,
per-minute counters over the last hour (one small dict per minute), top-k counters whose keys
per minute are capped, an LRU set of recent event ids to drop repeats. Strings from the data are
truncated; they are never interpreted here (the page inserts them as text).

Times are Unix seconds (float) inside; the JSON snapshot carries them as numbers too, and the
page formats them in UTC.
"""

from __future__ import annotations

import collections
import datetime
import hashlib
import heapq
import json
import math
import re
import threading
import time
from typing import Any, Iterable, Mapping, Optional

from schemas.outputs import ALERT_KINDS

WINDOW_MINUTES = 60
OTHER = '(other)'
UNKNOWN = '(none)'

# Severity from the detector score (an anomaly probability in [0, 1]). A host attack event is at
# least "high": two detectors (process and memory) agreed on the same program within 30 s.
SEVERITIES = ('critical', 'high', 'medium', 'low', 'unknown')
SEVERITY_THRESHOLDS = (('critical', 0.95), ('high', 0.85), ('medium', 0.7))

FIELD_LIMIT = 256  # characters kept of a key field (machine, program, service, ...)
DETAILS_LIMIT = 8192  # characters kept of an alert's details JSON
PREVIEW_LIMIT = 400  # characters of details / payload / error sent with each table row


def severity(score: Optional[float], kind: Optional[str] = None) -> str:
  if score is None:
    return 'high' if kind == 'host_attack' else 'unknown'
  level = 'low'
  for name, threshold in SEVERITY_THRESHOLDS:
    if score >= threshold:
      level = name
      break
  if kind == 'host_attack' and SEVERITIES.index(level) > SEVERITIES.index('high'):
    level = 'high'
  return level


def to_epoch(value: Any) -> Optional[float]:
  """datetime (naive = UTC), pandas Timestamp, ISO-8601 text or a number (s or ms) -> Unix s."""
  if value is None:
    return None
  if isinstance(value, datetime.datetime):
    if value.tzinfo is None:
      value = value.replace(tzinfo=datetime.timezone.utc)
    return value.timestamp()
  if isinstance(value, bool):
    return None
  if isinstance(value, (int, float)):
    if not math.isfinite(value):
      return None
    return float(value) / 1000.0 if abs(value) > 1e11 else float(value)
  if isinstance(value, str):
    text = value.strip()
    if not text:
      return None
    if text.endswith(('Z', 'z')):
      text = text[:-1] + '+00:00'
    try:
      return to_epoch(datetime.datetime.fromisoformat(text))
    except ValueError:
      try:
        return to_epoch(float(text))
      except ValueError:
        return None
  return None


def text(value: Any, limit: int = FIELD_LIMIT) -> Optional[str]:
  """A display string of at most ``limit`` characters (None stays None)."""
  if value is None:
    return None
  if isinstance(value, float) and math.isnan(value):
    return None
  if isinstance(value, bytes):
    value = value.decode('utf-8', errors='replace')
  elif not isinstance(value, str):
    value = str(value)
  return value if len(value) <= limit else value[:limit - 1] + '\u2026'


def number(value: Any) -> Optional[float]:
  if isinstance(value, bool) or value is None:
    return None
  try:
    result = float(value)
  except (TypeError, ValueError):
    return None
  return result if math.isfinite(result) else None


def machine_value(value: Any):
  """Machines are integers in the schema; anything else is shown as text."""
  num = number(value)
  if num is not None and num.is_integer() and abs(num) < 2 ** 53:
    return int(num)
  return text(value)


class MinuteCounter:
  """Counts per (minute, series) over the last ``minutes`` minutes, at most ``max_series``
  series (further names count as ``(other)``)."""

  def __init__(self, minutes: int = WINDOW_MINUTES, max_series: int = 16):
    self.minutes = minutes
    self.max_series = max_series
    self._buckets: dict[int, collections.Counter] = {}
    self._names: dict[str, None] = {}  # insertion-ordered set of series names

  def _prune(self, now_minute: int) -> None:
    oldest = now_minute - self.minutes + 1
    for minute in [m for m in self._buckets if m < oldest]:
      del self._buckets[minute]

  def add(self, when: float, series: str, count: int = 1, now: Optional[float] = None) -> bool:
    """Counts ``count`` at time ``when`` (clamped to now: clocks skew). False when older than
    the window."""
    now = time.time() if now is None else now
    now_minute = int(now // 60)
    minute = min(int(when // 60), now_minute)
    self._prune(now_minute)
    if minute <= now_minute - self.minutes:
      return False
    if series not in self._names:
      if len(self._names) >= self.max_series:
        series = OTHER
      self._names.setdefault(series, None)
    self._buckets.setdefault(minute, collections.Counter())[series] += count
    return True

  def snapshot(self, now: Optional[float] = None, series: Iterable[str] = ()) -> dict[str, Any]:
    """{'minutes': [start of each minute, oldest first], 'series': {name: [counts]}}; the named
    ``series`` are always present, in that order, then any others seen."""
    now = time.time() if now is None else now
    now_minute = int(now // 60)
    self._prune(now_minute)
    minutes = list(range(now_minute - self.minutes + 1, now_minute + 1))
    names = list(dict.fromkeys([*series, *self._names]))
    empty = collections.Counter()
    return {'minutes': [m * 60 for m in minutes],
            'series': {name: [self._buckets.get(m, empty)[name] for m in minutes]
                       for name in names}}

  def total(self, now: Optional[float] = None, last_minutes: Optional[int] = None,
            series: Optional[str] = None) -> int:
    now = time.time() if now is None else now
    now_minute = int(now // 60)
    self._prune(now_minute)
    oldest = now_minute - (last_minutes or self.minutes) + 1
    return sum((c[series] if series is not None else sum(c.values()))
               for m, c in self._buckets.items() if m >= oldest)


class WindowedTopK:
  """The most frequent keys over the last ``minutes`` minutes: one counter per minute (at most
  ``max_keys_per_minute`` keys each, the rest count as ``(other)``) and a running total that
  buckets leaving the window are subtracted from."""

  def __init__(self, minutes: int = WINDOW_MINUTES, max_keys_per_minute: int = 2000):
    self.minutes = minutes
    self.max_keys = max_keys_per_minute
    self._buckets: dict[int, collections.Counter] = {}
    self._total: collections.Counter = collections.Counter()

  def _expire(self, now_minute: int) -> None:
    oldest = now_minute - self.minutes + 1
    for minute in [m for m in self._buckets if m < oldest]:
      for key, count in self._buckets.pop(minute).items():
        left = self._total[key] - count
        if left > 0:
          self._total[key] = left
        else:
          del self._total[key]

  def add(self, when: float, key: Any, now: Optional[float] = None) -> None:
    now = time.time() if now is None else now
    now_minute = int(now // 60)
    minute = min(int(when // 60), now_minute)
    self._expire(now_minute)
    if minute <= now_minute - self.minutes:
      return
    bucket = self._buckets.setdefault(minute, collections.Counter())
    if key not in bucket and len(bucket) >= self.max_keys:
      key = OTHER
    bucket[key] += 1
    self._total[key] += 1

  def top(self, k: int = 10, now: Optional[float] = None) -> list[list[Any]]:
    now = time.time() if now is None else now
    self._expire(int(now // 60))
    return [[key, count] for key, count in
            heapq.nsmallest(k, self._total.items(), key=lambda item: (-item[1], str(item[0])))]

  def __len__(self) -> int:
    return len(self._total)


class RecentIds:
  """An LRU set of the last ``capacity`` ids: replays re-send the same deterministic ids."""

  def __init__(self, capacity: int = 100_000):
    self.capacity = capacity
    self._ids: collections.OrderedDict = collections.OrderedDict()

  def add(self, key: str) -> bool:
    """True when ``key`` is new."""
    if key in self._ids:
      self._ids.move_to_end(key)
      return False
    self._ids[key] = None
    if len(self._ids) > self.capacity:
      self._ids.popitem(last=False)
    return True

  def __len__(self) -> int:
    return len(self._ids)


_PID_SUFFIX = re.compile(r'_\d+$')


def program_name(program: Optional[str]) -> Optional[str]:
  """A host alert's program is ``CMD_PID``; the top list merges the PIDs of one command."""
  if not program:
    return program
  return _PID_SUFFIX.sub('', program) or program


def _known_kind(kind: Optional[str]) -> str:
  return kind if kind in ALERT_KINDS else OTHER


def normalize_alert(raw: Mapping[str, Any], received_at: float, source: str) -> dict[str, Any]:
  """An alert as published (``transforms.alerts.alert_message``) or read back from Parquet ->
  the bounded row the dashboard keeps. Raises ValueError for something that is not an alert."""
  if not isinstance(raw, Mapping):
    raise ValueError('an alert is a JSON object')
  kind = text(raw.get('kind'), 64)
  score = number(raw.get('score'))
  details = raw.get('details')
  if details is not None and not isinstance(details, str):
    details = json.dumps(details, default=str, sort_keys=True)
  event_id = text(raw.get('event_id'), 128)
  if not event_id:
    # No id: one from the content, so the same message read twice is still one alert.
    event_id = 'sha1:' + hashlib.sha1(
        json.dumps(raw, default=str, sort_keys=True).encode('utf-8')).hexdigest()
  processing_time = to_epoch(raw.get('processing_time'))
  return {
      'event_id': event_id,
      'kind': kind or UNKNOWN,
      'severity': severity(score, kind),
      'score': score,
      'event_time': to_epoch(raw.get('event_time')),
      'processing_time': processing_time,
      'received_at': received_at,
      'site': text(raw.get('site')),
      'model_version': text(raw.get('model_version')),
      'machine': machine_value(raw.get('machine')),
      'program': text(raw.get('program')),
      'service': text(raw.get('service')),
      'protocol_type': text(raw.get('protocol_type')),
      'details': text(details, DETAILS_LIMIT),
      'source': source,
  }


def _row_for_table(row: Mapping[str, Any], drop: tuple[str, ...] = ('details',)) -> dict:
  out = {k: v for k, v in row.items() if k not in drop}
  if 'details' in drop and row.get('details') is not None:
    out['details_preview'] = text(row['details'], PREVIEW_LIMIT)
  return out


class AlertStore:
  """The latest alerts and their per-minute / top-k aggregates. Thread-safe."""

  def __init__(self, capacity: int = 1000, minutes: int = WINDOW_MINUTES,
               dedup_capacity: int = 100_000):
    self._lock = threading.Lock()
    self._recent: collections.deque = collections.deque(maxlen=capacity)
    self._ids = RecentIds(dedup_capacity)
    self._per_kind = MinuteCounter(minutes)
    self._per_severity = MinuteCounter(minutes)
    self._top = {name: WindowedTopK(minutes) for name in ('machine', 'program', 'service')}
    self._model_versions: dict[str, dict[str, Any]] = {}
    self.counts = collections.Counter()  # added, duplicate, invalid, by source
    self.totals_by_kind: collections.Counter = collections.Counter()
    self.last_received_at: Optional[float] = None
    self.last_processing_time: Optional[float] = None

  def add(self, raw: Any, source: str = 'kafka', received_at: Optional[float] = None,
          now: Optional[float] = None) -> str:
    """'added', 'duplicate' or 'invalid'."""
    received_at = time.time() if received_at is None else received_at
    now = received_at if now is None else now
    try:
      row = normalize_alert(raw, received_at, source)
    except ValueError:
      with self._lock:
        self.counts['invalid'] += 1
      return 'invalid'
    with self._lock:
      if not self._ids.add(row['event_id']):
        self.counts['duplicate'] += 1
        return 'duplicate'
      self.counts['added'] += 1
      self.counts[f'from_{source}'] += 1
      self._recent.append(row)
      kind = _known_kind(row['kind'])
      self.totals_by_kind[kind] += 1
      when = row['processing_time'] if row['processing_time'] is not None else received_at
      self._per_kind.add(when, kind, now=now)
      self._per_severity.add(when, row['severity'], now=now)
      for name, counter in self._top.items():
        value = program_name(row[name]) if name == 'program' else row[name]
        if value is not None and value != '':
          counter.add(when, value, now=now)
      if row['model_version']:
        seen = self._model_versions.get(kind)
        if seen is None or (when or 0) >= (seen['seen_at'] or 0):
          self._model_versions[kind] = {'version': row['model_version'], 'seen_at': when}
      self.last_received_at = max(self.last_received_at or 0, received_at)
      if row['processing_time'] is not None:
        self.last_processing_time = max(self.last_processing_time or 0, row['processing_time'])
      return 'added'

  def get(self, event_id: str) -> Optional[dict[str, Any]]:
    with self._lock:
      for row in reversed(self._recent):
        if row['event_id'] == event_id:
          return dict(row)
    return None

  def __len__(self) -> int:
    return len(self._recent)

  def snapshot(self, now: Optional[float] = None, limit: int = 100, top_k: int = 10) -> dict:
    now = time.time() if now is None else now
    with self._lock:
      recent = [_row_for_table(r) for r in list(self._recent)[-limit:]][::-1]
      return {
          'recent': recent,
          'per_minute': self._per_kind.snapshot(now, ALERT_KINDS),
          'per_minute_severity': self._per_severity.snapshot(now, SEVERITIES),
          'last_minute': self._per_kind.total(now, 1),
          'last_5_minutes': self._per_kind.total(now, 5),
          'last_hour': self._per_kind.total(now),
          'last_hour_by_severity': {s: self._per_severity.total(now, series=s)
                                    for s in SEVERITIES},
          'top': {name: counter.top(top_k, now) for name, counter in self._top.items()},
          'model_versions': dict(self._model_versions),
          'totals_by_kind': dict(self.totals_by_kind),
          'counts': dict(self.counts),
          'buffered': len(self._recent),
          'last_received_at': self.last_received_at,
          'last_processing_time': self.last_processing_time,
      }


def normalize_attack(row: Mapping[str, Any]) -> dict[str, Any]:
  """An ``attacks/`` Parquet row (Process_* / Memory_* fields) -> the row the page shows."""
  times = [t for t in (to_epoch(row.get('Process_event_time')),
                       to_epoch(row.get('Memory_event_time'))) if t is not None]
  return {
      'event_id': text(row.get('event_id'), 128),
      'processing_time': to_epoch(row.get('processing_time')),
      'event_time': min(times) if times else None,
      'machine': machine_value(row.get('Process_machine')),
      'program': text(row.get('Process_CMD_PID')),
      'command': text(row.get('Process_CMD')),
      'process_score': number(row.get('Process_score')),
      'memory_score': number(row.get('Memory_score')),
      'delta_time': number(row.get('delta_time')),
      'cpu': number(row.get('Process_CPU')),
      'mem': number(row.get('Memory_MEM')),
      'site': text(row.get('Process_site')),
      'model_version': text(f"process:{row.get('Process_model_version')},"
                            f"memory:{row.get('Memory_model_version')}"),
  }


ATTACK_COLUMNS = ('event_id', 'processing_time', 'Process_event_time', 'Memory_event_time',
                  'Process_machine', 'Process_CMD_PID', 'Process_CMD', 'Process_score',
                  'Memory_score', 'delta_time', 'Process_CPU', 'Memory_MEM', 'Process_site',
                  'Process_model_version', 'Memory_model_version')


class AttackStore:
  """Joined host attack events read from ``attacks/``: the latest ones and counts per minute."""

  def __init__(self, capacity: int = 200, minutes: int = WINDOW_MINUTES):
    self._lock = threading.Lock()
    self._recent: collections.deque = collections.deque(maxlen=capacity)
    self._ids = RecentIds(50_000)
    self._per_minute = MinuteCounter(minutes, max_series=1)
    self._top_programs = WindowedTopK(minutes)
    self.total = 0

  def add(self, raw: Mapping[str, Any], now: Optional[float] = None) -> bool:
    now = time.time() if now is None else now
    row = normalize_attack(raw)
    with self._lock:
      if row['event_id'] and not self._ids.add(row['event_id']):
        return False
      self.total += 1
      self._recent.append(row)
      when = row['processing_time'] if row['processing_time'] is not None else now
      self._per_minute.add(when, 'attacks', now=now)
      if row['program']:
        self._top_programs.add(when, program_name(row['program']), now=now)
      return True

  def snapshot(self, now: Optional[float] = None, limit: int = 25) -> dict:
    now = time.time() if now is None else now
    with self._lock:
      recent = sorted(self._recent, key=lambda r: r['processing_time'] or 0)[-limit:][::-1]
      return {'recent': recent,
              'per_minute': self._per_minute.snapshot(now, ('attacks',)),
              'last_hour': self._per_minute.total(now),
              'top_programs': self._top_programs.top(10, now),
              'total': self.total}


DEAD_LETTER_COLUMNS = ('stream', 'source', 'partition', 'offset', 'record_index', 'stage',
                       'error', 'payload', 'failed_at')


class DeadLetterStore:
  """Records the job could not process: counts per minute by stream, by (stream, stage) since
  the dashboard started, and the latest few with their error."""

  def __init__(self, capacity: int = 50, minutes: int = WINDOW_MINUTES, max_stages: int = 50):
    self._lock = threading.Lock()
    self._recent: collections.deque = collections.deque(maxlen=capacity)
    self._per_minute = MinuteCounter(minutes)
    self._by_stage: collections.Counter = collections.Counter()
    self._max_stages = max_stages
    self.total = 0

  def add(self, raw: Mapping[str, Any], now: Optional[float] = None) -> None:
    now = time.time() if now is None else now
    failed_at = to_epoch(raw.get('failed_at'))
    stream = text(raw.get('stream'), 64) or UNKNOWN
    stage = text(raw.get('stage'), 64) or UNKNOWN
    row = {'failed_at': failed_at, 'stream': stream, 'stage': stage,
           'source': text(raw.get('source')), 'partition': number(raw.get('partition')),
           'offset': number(raw.get('offset')), 'error': text(raw.get('error'), PREVIEW_LIMIT),
           'payload_preview': text(raw.get('payload'), PREVIEW_LIMIT)}
    with self._lock:
      self.total += 1
      self._recent.append(row)
      self._per_minute.add(failed_at if failed_at is not None else now, stream, now=now)
      key = f'{stream} / {stage}'
      if key not in self._by_stage and len(self._by_stage) >= self._max_stages:
        key = OTHER
      self._by_stage[key] += 1

  def snapshot(self, now: Optional[float] = None, limit: int = 10) -> dict:
    now = time.time() if now is None else now
    with self._lock:
      recent = sorted(self._recent, key=lambda r: r['failed_at'] or 0)[-limit:][::-1]
      return {'recent': recent,
              'per_minute': self._per_minute.snapshot(now),
              'last_hour': self._per_minute.total(now),
              'last_5_minutes': self._per_minute.total(now, 5),
              'by_stage': self._by_stage.most_common(10),
              'total': self.total}


class RateTracker:
  """Messages per second per topic from successive samples of the topics' end offsets, with a
  bounded history for the input-rate chart."""

  def __init__(self, history: int = 450):
    self._lock = threading.Lock()
    self._last: Optional[tuple[float, dict[str, int]]] = None
    self._history: collections.deque = collections.deque(maxlen=history)
    self.rates: dict[str, float] = {}
    self.end_offsets: dict[str, int] = {}

  def record(self, when: float, end_offsets: Mapping[str, int]) -> dict[str, float]:
    with self._lock:
      rates = {}
      if self._last is not None and when > self._last[0]:
        t0, previous = self._last
        for topic, offset in end_offsets.items():
          before = previous.get(topic)
          # A topic that is new, or went back (recreated), has no rate for this sample.
          rates[topic] = ((offset - before) / (when - t0)
                          if before is not None and offset >= before else 0.0)
        self._history.append((when, rates))
        self.rates = rates
      self._last = (when, dict(end_offsets))
      self.end_offsets = dict(end_offsets)
      return rates

  def snapshot(self, max_points: int = 180) -> dict:
    with self._lock:
      history = list(self._history)
    step = max(1, math.ceil(len(history) / max_points))
    # Averages of `step` consecutive samples keep the chart's shape when it is thinned.
    points = []
    for i in range(0, len(history), step):
      chunk = history[i:i + step]
      topics = {t for _, r in chunk for t in r}
      points.append([chunk[-1][0], {t: sum(r.get(t, 0.0) for _, r in chunk) / len(chunk)
                                    for t in topics}])
    return {'rates': dict(self.rates), 'end_offsets': dict(self.end_offsets),
            'history': points}
