"""Bounded server-side aggregation behind the dashboard. No I/O here: the feeds in
:mod:`dashboard.sources` call ``add``, the HTTP server calls ``snapshot``.

Every structure has a fixed bound whatever the alert rate or content: ring buffers of the
latest rows, per-minute counters over the last hour (one small dict per minute), top-k counters
whose candidate keys per minute are capped (a count-min sketch decides which newcomer may evict
the weakest candidate, so a flood of distinct names cannot lock real ones out), an LRU set of
recent row digests to drop repeats. Strings from the data are truncated; they are never
interpreted here (the page inserts them as text).

Whoever can produce to the alerts topic or write into the output folders can forge rows, so
every row is validated before it is counted (:class:`Bounds`): a JSON object of bounded size and
nesting, each field of its type and range, times within a window of now. A row that fails is
not aggregated; it is counted by reason and the latest few are kept for the health panel
(:class:`Rejections`).

Times are Unix seconds (float) inside; the JSON snapshot carries them as numbers too, and the
page formats them in UTC.
"""

from __future__ import annotations

import array
import collections
import collections.abc
import dataclasses
import datetime
import hashlib
import heapq
import itertools
import json
import math
import threading
import time
from typing import Any, Iterable, Mapping, Optional

from schemas.outputs import ALERT_KINDS
from schemas.records import STREAMS

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
TIME_TEXT_LIMIT = 64  # an ISO-8601 time is about 32 characters
MAX_DEPTH = 32  # nesting of a JSON alert (the stream job's are 3 deep)
MAX_VALUES = 20_000  # values in one JSON alert


class Rejected(ValueError):
  """A row the dashboard does not aggregate; ``reason`` is short and from a fixed vocabulary
  (field names of the schema and a few problems), so counting by reason stays bounded."""

  def __init__(self, reason: str):
    super().__init__(reason)
    self.reason = reason


@dataclasses.dataclass(frozen=True)
class Bounds:
  """What the dashboard accepts: times within [now - max_age_s, now + max_future_s] (a clock
  ahead, or a forged year 9999, would otherwise sit at the top of every "latest" list; epoch 0
  and year 1 mean a missing or forged time)."""
  max_age_s: float = 7 * 86400.0
  max_future_s: float = 300.0

  def check_time(self, field: str, value: Any, now: float) -> Optional[float]:
    """``value`` (any time format :func:`to_epoch` reads; None stays None) -> Unix seconds,
    or Rejected."""
    if value is None:
      return None
    when = to_epoch(value)
    if when is None:
      raise Rejected(f'{field}: not a time')
    if not now - self.max_age_s <= when <= now + self.max_future_s:
      raise Rejected(f'{field}: outside the time window')
    return when


DEFAULT_BOUNDS = Bounds()


class Rejections:
  """Counts of rejected rows by reason and the latest few, for the health panel. Not
  thread-safe by itself: the stores call it under their lock."""

  def __init__(self, keep: int = 10, max_reasons: int = 64):
    self.total = 0
    self.by_reason = CappedCounter(max_reasons)
    self.recent: collections.deque = collections.deque(maxlen=keep)

  def add(self, reason: str, source: str, when: float, raw: Any = None) -> None:
    self.total += 1
    self.by_reason.add(reason)
    self.recent.append({'at': when, 'source': source, 'reason': text(reason, 120),
                        'preview': preview(raw)})

  def add_error(self, error: Exception, source: str, when: float, raw: Any = None) -> None:
    """A row its normalizer refused (:class:`Rejected`: its reason) or failed on."""
    reason = error.reason if isinstance(error, Rejected) else f'unreadable: {type(error).__name__}'
    self.add(reason, source, when, raw)

  def snapshot(self) -> dict[str, Any]:
    return {'total': self.total, 'by_reason': self.by_reason.most_common(20),
            'recent': list(self.recent)[::-1]}


def preview(raw: Any, limit: int = 160) -> Optional[str]:
  """A short, safe look at a rejected value: never encodes or walks more than ``limit``."""
  if raw is None:
    return None
  if isinstance(raw, (str, bytes)):
    return text(raw, limit)
  if isinstance(raw, _MAPPINGS):
    return text('{' + ', '.join(text(k, 40) or '' for k in itertools.islice(raw, 20)) + '}',
                limit)
  return text(type(raw).__name__, limit)


def check_shape(value: Any, max_depth: int = MAX_DEPTH, max_values: int = MAX_VALUES) -> None:
  """Rejected when ``value`` nests deeper than ``max_depth`` or holds more than ``max_values``
  values. Iterative, so a 10,000-deep document cannot overflow the recursion limit here, and
  what passes can be re-encoded safely."""
  if not isinstance(value, _CONTAINERS):
    return
  stack = [(value, 1)]
  seen = 1
  while stack:
    item, depth = stack.pop()
    if depth > max_depth:
      raise Rejected('nested too deep')
    for child in (item.values() if isinstance(item, _MAPPINGS) else item):
      seen += 1
      kind = type(child)
      if kind is dict or kind is list or (kind not in _LEAVES and isinstance(child, _CONTAINERS)):
        stack.append((child, depth + 1))
    if seen > max_values:
      raise Rejected('too many values')


_MAPPINGS = (dict, collections.abc.Mapping)
_CONTAINERS = (dict, list, tuple, collections.abc.Mapping)
_LEAVES = frozenset((str, int, float, bool, type(None), bytes))


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
    value = number(value)  # an int beyond float's range is None, not OverflowError
    if value is None:
      return None
    return value / 1000.0 if abs(value) > 1e11 else value
  if isinstance(value, bytes):
    value = value[:TIME_TEXT_LIMIT + 1].decode('utf-8', errors='replace')
  if isinstance(value, str):
    text = value.strip()
    if not text or len(text) > TIME_TEXT_LIMIT:
      return None
    if text.endswith(('Z', 'z')):
      text = text[:-1] + '+00:00'
    try:
      return to_epoch(datetime.datetime.fromisoformat(text))
    except (ValueError, OverflowError):
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
    # Cut before decoding: a payload may be megabytes (4 bytes at most per character).
    value = value[:4 * limit + 4].decode('utf-8', errors='replace')
  elif isinstance(value, (list, tuple, dict, set)) or not isinstance(value, str):
    # str() of a container walks all of it (and recurses): only its type is shown.
    value = (f'({type(value).__name__})' if isinstance(value, (list, tuple, dict, set))
             else _short_str(value))
  return value if len(value) <= limit else value[:limit - 1] + '\u2026'


def _short_str(value: Any) -> str:
  try:
    return str(value)
  except (ValueError, RecursionError):  # an int too long to print, a self-referencing object
    return f'({type(value).__name__})'


def number(value: Any) -> Optional[float]:
  if isinstance(value, bool) or value is None:
    return None
  if isinstance(value, (str, bytes)) and len(value) > TIME_TEXT_LIMIT:
    return None
  try:
    result = float(value)
  except (TypeError, ValueError, OverflowError):
    return None
  return result if math.isfinite(result) else None


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
    bucket = self._buckets.get(minute)
    if bucket is None:
      bucket = self._buckets[minute] = collections.Counter()
    bucket[series] += count
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


class CountMinSketch:
  """Approximate counts of many keys in fixed memory (``depth`` rows of ``width`` counters,
  conservative update). Python's salted ``hash`` picks the cells, so a producer cannot
  precompute colliding names."""

  def __init__(self, width: int = 2048, depth: int = 4):
    self.width = width
    self.depth = depth
    self._cells = array.array('l', bytes(8 * width * depth))

  def add(self, key: Any) -> int:
    """Counts one ``key``; returns its estimate (never below its true count)."""
    slots = [row * self.width + hash((row, key)) % self.width for row in range(self.depth)]
    estimate = min(self._cells[i] for i in slots) + 1
    for i in slots:
      if self._cells[i] < estimate:
        self._cells[i] = estimate
    return estimate


class _TopBucket:
  """One minute of a :class:`WindowedTopK`: at most ``capacity`` keys counted exactly, the
  rest in ``(other)``; once full, a sketch of the newcomers decides which may evict the weakest
  key."""

  __slots__ = ('counts', 'sketch', 'floor')

  def __init__(self):
    self.counts: collections.Counter = collections.Counter()
    self.sketch: Optional[CountMinSketch] = None
    self.floor = 0  # a lower bound of the smallest count among the kept keys

  def __len__(self) -> int:
    """Keys kept, not counting ``(other)``."""
    return len(self.counts) - (OTHER in self.counts)


class WindowedTopK:
  """The most frequent keys over the last ``minutes`` minutes: one bucket per minute (at most
  ``max_keys_per_minute`` keys each, the rest count as ``(other)``) and a running total that
  buckets leaving the window are subtracted from.

  A new key in a full bucket counts as ``(other)`` until the bucket's count-min sketch says it
  was seen more often than the weakest kept key; it then takes that key's place (whose count
  moves to ``(other)``) with the count it brings from ``(other)``. A flood of distinct names
  therefore cannot keep a frequent name out of the list, and totals stay exact. Only the newest
  ``sketch_minutes`` buckets keep a sketch (late rows for older minutes are rare)."""

  def __init__(self, minutes: int = WINDOW_MINUTES, max_keys_per_minute: int = 500,
               sketch_minutes: int = 2, sketch_width: int = 2048):
    self.minutes = minutes
    self.max_keys = max_keys_per_minute
    self.sketch_minutes = sketch_minutes
    self.sketch_width = sketch_width
    self._buckets: dict[int, _TopBucket] = {}
    self._total: collections.Counter = collections.Counter()

  def _expire(self, now_minute: int) -> None:
    oldest = now_minute - self.minutes + 1
    for minute in [m for m in self._buckets if m < oldest]:
      for key, count in self._buckets.pop(minute).counts.items():
        self._move(key, -count)
    for minute, bucket in self._buckets.items():
      if bucket.sketch is not None and minute <= now_minute - self.sketch_minutes:
        bucket.sketch = None

  def _move(self, key: Any, count: int) -> None:
    left = self._total[key] + count
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
    bucket = self._buckets.get(minute)
    if bucket is None:
      bucket = self._buckets[minute] = _TopBucket()
    counts = bucket.counts
    if key in counts or len(bucket) < self.max_keys:
      counts[key] += 1
      self._total[key] += 1
      return
    if bucket.sketch is None:
      if minute <= now_minute - self.sketch_minutes:
        counts[OTHER] += 1
        self._total[OTHER] += 1
        return
      bucket.sketch = CountMinSketch(self.sketch_width)
    estimate = bucket.sketch.add(key)
    if estimate > bucket.floor:
      weakest = min((k for k in counts if k != OTHER), key=counts.__getitem__)
      bucket.floor = counts[weakest]
      if estimate > bucket.floor:
        # The newcomer's earlier sightings were counted in (other): they move with it.
        brought = min(estimate - 1, counts[OTHER])
        moved = counts.pop(weakest)
        self._move(weakest, -moved)
        counts[OTHER] += moved - brought
        self._move(OTHER, moved - brought)
        if counts[OTHER] <= 0:
          del counts[OTHER]
        counts[key] = brought + 1
        self._total[key] += brought + 1
        bucket.floor = min(counts[k] for k in counts if k != OTHER)
        return
    counts[OTHER] += 1
    self._total[OTHER] += 1

  def top(self, k: int = 10, now: Optional[float] = None) -> list[list[Any]]:
    now = time.time() if now is None else now
    self._expire(int(now // 60))
    return [[key, count] for key, count in
            heapq.nsmallest(k, self._total.items(), key=lambda item: (-item[1], str(item[0])))]

  def __len__(self) -> int:
    return len(self._total)


class CappedCounter:
  """Counts of at most ``capacity`` keys for the whole run (Space-Saving: a new key when full
  replaces the smallest, inheriting its count, so a key seen often is never locked out by many
  seen once; counts of late-comers are upper bounds)."""

  def __init__(self, capacity: int = 50):
    self.capacity = capacity
    self._counts: collections.Counter = collections.Counter()

  def add(self, key: Any, count: int = 1) -> None:
    if key not in self._counts and len(self._counts) >= self.capacity:
      weakest, inherited = min(self._counts.items(), key=lambda item: item[1])
      del self._counts[weakest]
      self._counts[key] = inherited
    self._counts[key] += count

  def most_common(self, n: int) -> list[tuple[Any, int]]:
    return self._counts.most_common(n)

  def __len__(self) -> int:
    return len(self._counts)


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


def program_name(program: Optional[str]) -> Optional[str]:
  """A host alert's program is ``CMD_PID``; the top list merges the PIDs of one command."""
  if not program:
    return program
  head, sep, pid = program.rpartition('_')
  return head if sep and head and pid.isascii() and pid.isdigit() else program


def _known_kind(kind: Optional[str]) -> str:
  return kind if kind in ALERT_KINDS else OTHER


def _field_text(raw: Mapping[str, Any], field: str, limit: int = FIELD_LIMIT) -> Optional[str]:
  """A text field: text, a number (shown as text) or absent; a list or object is Rejected."""
  value = raw.get(field)
  if value is None or isinstance(value, str):
    return text(value, limit)
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise Rejected(f'{field}: wrong type')
  if isinstance(value, float) and not math.isfinite(value):
    raise Rejected(f'{field}: not finite')
  return text(value, limit)


def _field_score(raw: Mapping[str, Any], field: str = 'score') -> Optional[float]:
  """A detector score: a probability in [0, 1], or absent."""
  value = raw.get(field)
  if value is None:
    return None
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise Rejected(f'{field}: wrong type')
  score = number(value)
  if score is None or not 0.0 <= score <= 1.0:
    raise Rejected(f'{field}: out of range')
  return score


def _field_number(raw: Mapping[str, Any], field: str, low: float, high: float
                  ) -> Optional[float]:
  """A measure shown as a number; absent, NaN or outside [low, high] is None (not a reason to
  reject the row: the stream job's own Parquet has nulls)."""
  value = raw.get(field)
  if isinstance(value, bool):
    return None
  result = number(value)
  return result if result is not None and low <= result <= high else None


def _field_machine(raw: Mapping[str, Any], field: str = 'machine') -> Optional[int]:
  """Machines are non-negative integers in the schema (as text too: ``"7"``); "NaN", "1e999"
  or a name would take a place in the top machines, so they are Rejected."""
  value = raw.get(field)
  if value is None:
    return None
  if isinstance(value, str):
    digits = value.strip()
    if not (digits.isascii() and digits.isdigit() and len(digits) <= 16):
      raise Rejected(f'{field}: not an integer')
    value = int(digits)
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise Rejected(f'{field}: wrong type')
  num = number(value)
  if num is None or not num.is_integer() or not 0 <= num < 2 ** 53:
    raise Rejected(f'{field}: out of range')
  return int(num)


def _row_digest(row: Mapping[str, Any]) -> str:
  """What makes two rows the same alert: the whole content, not the producer's id. A replay
  (the same message twice, or the Kafka and Parquet copies of one alert) has the same digest;
  a forged row that reuses a real id does not, so it cannot hide the real one."""
  times = [None if row[k] is None else round(row[k] * 1e6)
           for k in ('event_time', 'processing_time')]
  content = (row['event_id'], row['kind'], row['score'], *times, row['site'],
             row['model_version'], row['machine'], row['program'], row['service'],
             row['protocol_type'], row['details'])
  # repr of str / int / float / None is exact and stable (floats round-trip).
  return hashlib.sha1(repr(content).encode('utf-8', errors='surrogatepass')).hexdigest()


def normalize_alert(raw: Mapping[str, Any], received_at: float, source: str,
                    bounds: Bounds = DEFAULT_BOUNDS, now: Optional[float] = None
                    ) -> dict[str, Any]:
  """An alert as published (``transforms.alerts.alert_message``) or read back from Parquet ->
  the bounded row the dashboard keeps. Raises :class:`Rejected` (a ValueError) for something
  that is not a valid alert: not an object, too deep, a field of the wrong type or range, a
  time outside ``bounds``."""
  now = received_at if now is None else now
  if not isinstance(raw, _MAPPINGS):
    raise Rejected('not an object')
  check_shape(raw)
  kind = raw.get('kind')
  if kind is None:
    raise Rejected('kind: missing')
  if not isinstance(kind, str):
    raise Rejected('kind: wrong type')
  kind = text(kind, 64)
  details = raw.get('details')
  if details is not None and not isinstance(details, str):
    if isinstance(details, (bool, int, float)):
      details = _field_text(raw, 'details')
    else:
      details = json.dumps(details, default=_short_str, sort_keys=True)
  event_id = raw.get('event_id')
  if event_id is not None and not isinstance(event_id, str):
    raise Rejected('event_id: wrong type')
  if event_id is not None and len(event_id) > 128:
    raise Rejected('event_id: too long')
  row = {
      'event_id': event_id or None,
      'kind': kind or UNKNOWN,
      'score': _field_score(raw),
      'event_time': bounds.check_time('event_time', raw.get('event_time'), now),
      'processing_time': bounds.check_time('processing_time', raw.get('processing_time'), now),
      'received_at': received_at,
      'site': _field_text(raw, 'site'),
      'model_version': _field_text(raw, 'model_version'),
      'machine': _field_machine(raw),
      'program': _field_text(raw, 'program'),
      'service': _field_text(raw, 'service'),
      'protocol_type': _field_text(raw, 'protocol_type'),
      'flag': _field_text(raw, 'flag'),
      'details': text(details, DETAILS_LIMIT),
      'reasons': normalize_reasons(raw.get('reasons')),
      'source': source,
  }
  row['severity'] = severity(row['score'], kind)
  row['key'] = _row_digest(row)
  if not row['event_id']:
    # No id: the content's, so the same message read twice is still one alert.
    row['event_id'] = 'sha1:' + row['key']
  return row


MAX_REASONS = 8  # an alert carries 3, a host attack 6


def normalize_reasons(raw: Any) -> list[dict[str, Any]]:
  """An alert's or incident's ``reasons`` (a JSON text or a list, schemas/outputs.py) -> a
  bounded list of {feature, value, normal, normal_low, normal_high, deviation}, texts cut and
  numbers finite; anything else in it is left out (an empty list: none given, or unreadable)."""
  if isinstance(raw, str):
    if len(raw) > DETAILS_LIMIT:
      return []
    try:
      raw = json.loads(raw)
    except ValueError:
      return []
  if not isinstance(raw, (list, tuple)):
    return []
  reasons = []
  for item in raw[:MAX_REASONS]:
    if not isinstance(item, _MAPPINGS):
      continue
    value = item.get('value')
    reasons.append({
        'feature': _field_text(item, 'feature') if isinstance(item.get('feature'), str)
        else None,
        'value': number(value) if isinstance(value, (int, float)) and not isinstance(
            value, bool) else text(value, 100) if isinstance(value, str) else None,
        'normal': text(item.get('normal'), 200) if isinstance(item.get('normal'), str)
        else None,
        'normal_low': number(item.get('normal_low')),
        'normal_high': number(item.get('normal_high')),
        'deviation': number(item.get('deviation')),
    })
  return [r for r in reasons if r['feature']]


def _row_for_table(row: Mapping[str, Any], drop: tuple[str, ...] = ('details',)) -> dict:
  out = {k: v for k, v in row.items() if k not in drop}
  if 'details' in drop and row.get('details') is not None:
    out['details_preview'] = text(row['details'], PREVIEW_LIMIT)
  return out


class AlertStore:
  """The latest alerts and their per-minute / top-k aggregates. Thread-safe."""

  def __init__(self, capacity: int = 1000, minutes: int = WINDOW_MINUTES,
               dedup_capacity: int = 100_000, bounds: Bounds = DEFAULT_BOUNDS):
    self._lock = threading.Lock()
    self.bounds = bounds
    self._recent: collections.deque = collections.deque(maxlen=capacity)
    self._ids = RecentIds(dedup_capacity)
    self._per_kind = MinuteCounter(minutes)
    self._per_severity = MinuteCounter(minutes)
    self._top = {name: WindowedTopK(minutes) for name in ('machine', 'program', 'service')}
    self._model_versions: dict[str, dict[str, Any]] = {}
    self.counts = collections.Counter()  # added, duplicate, invalid, by source
    self.rejections = Rejections()
    self.totals_by_kind: collections.Counter = collections.Counter()
    self.last_received_at: Optional[float] = None
    self.last_processing_time: Optional[float] = None

  def reject(self, reason: str, source: str, raw: Any = None,
             when: Optional[float] = None) -> str:
    """Counts a row that was refused before it reached :meth:`add` (too large, not JSON)."""
    with self._lock:
      self.counts['invalid'] += 1
      self.rejections.add(reason, source, time.time() if when is None else when, raw)
    return 'invalid'

  def add(self, raw: Any, source: str = 'kafka', received_at: Optional[float] = None,
          now: Optional[float] = None) -> str:
    """'added', 'duplicate' or 'invalid' (counted by reason in ``rejections``)."""
    received_at = time.time() if received_at is None else received_at
    now = received_at if now is None else now
    try:
      row = normalize_alert(raw, received_at, source, self.bounds, now)
    except Rejected as e:
      return self.reject(e.reason, source, raw, now)
    except Exception as e:  # pylint: disable=broad-except
      # Last resort: whatever a row can do to the checks above, it is one rejected row.
      return self.reject(f'unreadable: {type(e).__name__}', source, raw, now)
    with self._lock:
      if not self._ids.add(row['key']):
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
    """The newest buffered alert with this id (ids can repeat: see :func:`_row_digest`)."""
    with self._lock:
      for row in reversed(self._recent):
        if row['event_id'] == event_id:
          return dict(row)
    return None

  def get_by_key(self, key: str) -> Optional[dict[str, Any]]:
    with self._lock:
      for row in reversed(self._recent):
        if row['key'] == key:
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
          'rejected': self.rejections.snapshot(),
          'buffered': len(self._recent),
          'last_received_at': self.last_received_at,
          'last_processing_time': self.last_processing_time,
      }


def normalize_attack(row: Mapping[str, Any], bounds: Bounds = DEFAULT_BOUNDS,
                     now: Optional[float] = None) -> dict[str, Any]:
  """An ``attacks/`` Parquet row (Process_* / Memory_* fields) -> the row the page shows, or
  :class:`Rejected`."""
  now = time.time() if now is None else now
  times = [t for t in (bounds.check_time('Process_event_time', row.get('Process_event_time'), now),
                       bounds.check_time('Memory_event_time', row.get('Memory_event_time'), now))
           if t is not None]
  versions = [text(row.get(f'{d}_model_version'), 100) for d in ('Process', 'Memory')]
  return {
      'event_id': text(row.get('event_id'), 128),
      'processing_time': bounds.check_time('processing_time', row.get('processing_time'), now),
      'event_time': min(times) if times else None,
      'machine': _field_machine(row, 'Process_machine'),
      'program': _field_text(row, 'Process_CMD_PID'),
      'command': _field_text(row, 'Process_CMD'),
      'process_score': _field_score(row, 'Process_score'),
      'memory_score': _field_score(row, 'Memory_score'),
      'delta_time': _field_number(row, 'delta_time', -1e6, 1e6),
      'cpu': _field_number(row, 'Process_CPU', 0, 1e6),
      'mem': _field_number(row, 'Memory_MEM', 0, 1e6),
      'site': _field_text(row, 'Process_site'),
      'model_version': f'process:{versions[0]},memory:{versions[1]}',
  }


ATTACK_COLUMNS = ('event_id', 'processing_time', 'Process_event_time', 'Memory_event_time',
                  'Process_machine', 'Process_CMD_PID', 'Process_CMD', 'Process_score',
                  'Memory_score', 'delta_time', 'Process_CPU', 'Memory_MEM', 'Process_site',
                  'Process_model_version', 'Memory_model_version')


class AttackStore:
  """Joined host attack events read from ``attacks/``: the latest ones and counts per minute."""

  def __init__(self, capacity: int = 200, minutes: int = WINDOW_MINUTES,
               bounds: Bounds = DEFAULT_BOUNDS):
    self._lock = threading.Lock()
    self.bounds = bounds
    self._recent: collections.deque = collections.deque(maxlen=capacity)
    self._ids = RecentIds(50_000)
    self._per_minute = MinuteCounter(minutes, max_series=1)
    self._top_programs = WindowedTopK(minutes)
    self.rejections = Rejections()
    self.total = 0

  def add(self, raw: Mapping[str, Any], now: Optional[float] = None) -> bool:
    """True when counted; False for a repeat or a rejected row (see ``rejections``)."""
    now = time.time() if now is None else now
    try:
      if not isinstance(raw, _MAPPINGS):
        raise Rejected('not an object')
      row = normalize_attack(raw, self.bounds, now)
    except Exception as e:  # pylint: disable=broad-except
      with self._lock:
        self.rejections.add_error(e, 'parquet', now, raw)
      return False
    with self._lock:
      if row['event_id'] and not self._ids.add(_attack_digest(row)):
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
              'rejected': self.rejections.snapshot(),
              'total': self.total}


def _attack_digest(row: Mapping[str, Any]) -> str:
  """An attack event's identity: its id with its content (a reused id hides nothing)."""
  return hashlib.sha1(json.dumps([row.get(k) for k in sorted(row)], default=str).encode(
      'utf-8', errors='surrogatepass')).hexdigest()


INCIDENT_STATUSES = ('open', 'updated', 'closed')


def normalize_incident(row: Mapping[str, Any], bounds: Bounds = DEFAULT_BOUNDS,
                       now: Optional[float] = None) -> dict[str, Any]:
  """An ``incidents/`` row (or an ``incidents`` topic message) -> the row the page shows, or
  :class:`Rejected`."""
  now = time.time() if now is None else now
  if not isinstance(row, _MAPPINGS):
    raise Rejected('not an object')
  check_shape(row)
  incident_id = row.get('incident_id')
  if not isinstance(incident_id, str) or not incident_id or len(incident_id) > 128:
    raise Rejected('incident_id: missing or wrong type')
  seq = row.get('update_seq')
  if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 1 << 31:
    raise Rejected('update_seq: wrong type or range')
  status = row.get('status')
  if status not in INCIDENT_STATUSES:
    raise Rejected('status: unknown')
  count = row.get('count')
  if not isinstance(count, int) or isinstance(count, bool) or count < 0:
    raise Rejected('count: wrong type or range')
  top = normalize_reasons(row.get('top_features'))  # same shape check: [{feature, ...}]
  return {
      'incident_id': incident_id,
      'update_seq': seq,
      'status': status,
      'kind': _known_kind(_field_text(row, 'kind')),
      'site': _field_text(row, 'site'),
      'service': _field_text(row, 'service'),
      'flag': _field_text(row, 'flag'),
      'protocol_type': _field_text(row, 'protocol_type'),
      'machine': _field_machine(row),
      'program': _field_text(row, 'program'),
      'first_seen': bounds.check_time('first_seen', row.get('first_seen'), now),
      'last_seen': bounds.check_time('last_seen', row.get('last_seen'), now),
      'count': count,
      'max_score': _field_score(row, 'max_score'),
      'severity': (_field_text(row, 'severity', 16) or UNKNOWN),
      'top_features': [r['feature'] for r in top],
      'reasons': normalize_reasons(row.get('reasons')),
  }


INCIDENT_COLUMNS = ('incident_id', 'update_seq', 'status', 'kind', 'site', 'service', 'flag',
                    'protocol_type', 'machine', 'program', 'first_seen', 'last_seen', 'count',
                    'max_score', 'severity', 'top_features', 'reasons')


class IncidentStore:
  """Incidents read from ``incidents/``: each one's newest state (highest update_seq), the
  latest ``capacity`` by last alert. Thread-safe."""

  def __init__(self, capacity: int = 200, bounds: Bounds = DEFAULT_BOUNDS):
    self._lock = threading.Lock()
    self.bounds = bounds
    self.capacity = capacity
    self._latest: collections.OrderedDict = collections.OrderedDict()
    self.rejections = Rejections()
    self.rows = 0

  def add(self, raw: Mapping[str, Any], now: Optional[float] = None) -> bool:
    """True when the row is an incident's newest state so far."""
    now = time.time() if now is None else now
    try:
      row = normalize_incident(raw, self.bounds, now)
    except Exception as e:  # pylint: disable=broad-except
      with self._lock:
        self.rejections.add_error(e, 'parquet', now, raw)
      return False
    with self._lock:
      self.rows += 1
      seen = self._latest.get(row['incident_id'])
      if seen is not None and seen['update_seq'] >= row['update_seq']:
        return False
      self._latest[row['incident_id']] = row
      self._latest.move_to_end(row['incident_id'])
      while len(self._latest) > self.capacity:
        self._latest.popitem(last=False)
      return True

  def snapshot(self, now: Optional[float] = None, limit: int = 25) -> dict:
    with self._lock:
      latest = list(self._latest.values())
    recent = sorted(latest, key=lambda r: r['last_seen'] or 0)[-limit:][::-1]
    return {'recent': recent,
            'open': sum(1 for r in latest if r['status'] != 'closed'),
            'known': len(latest), 'rows': self.rows,
            'rejected': self.rejections.snapshot()}


DEAD_LETTER_COLUMNS = ('stream', 'source', 'partition', 'offset', 'record_index', 'stage',
                       'error', 'payload', 'failed_at')


class DeadLetterStore:
  """Records the job could not process: counts per minute by stream, by (stream, stage) since
  the dashboard started, and the latest few with their error."""

  def __init__(self, capacity: int = 50, minutes: int = WINDOW_MINUTES, max_stages: int = 50,
               bounds: Bounds = DEFAULT_BOUNDS):
    self._lock = threading.Lock()
    self.bounds = bounds
    self._recent: collections.deque = collections.deque(maxlen=capacity)
    self._per_minute = MinuteCounter(minutes)
    self._by_stage = CappedCounter(max_stages)
    self.rejections = Rejections()
    self.total = 0

  def add(self, raw: Mapping[str, Any], now: Optional[float] = None) -> None:
    now = time.time() if now is None else now
    try:
      if not isinstance(raw, _MAPPINGS):
        raise Rejected('not an object')
      failed_at = self.bounds.check_time('failed_at', raw.get('failed_at'), now)
      # A dead letter's stream names one of the job's inputs; anything else is (other), so
      # made-up names cannot take the chart's series.
      stream = text(raw.get('stream'), 64) or UNKNOWN
      stream = stream if stream in STREAMS or stream == UNKNOWN else OTHER
      stage = _field_text(raw, 'stage', 64) or UNKNOWN
      row = {'failed_at': failed_at, 'stream': stream, 'stage': stage,
             'source': _field_text(raw, 'source'),
             'partition': _field_number(raw, 'partition', 0, 2 ** 53),
             'offset': _field_number(raw, 'offset', 0, 2 ** 63),
             'error': text(raw.get('error'), PREVIEW_LIMIT),
             'payload_preview': text(raw.get('payload'), PREVIEW_LIMIT)}
    except Exception as e:  # pylint: disable=broad-except
      with self._lock:
        self.rejections.add_error(e, 'parquet', now, raw)
      return
    with self._lock:
      self.total += 1
      self._recent.append(row)
      self._per_minute.add(failed_at if failed_at is not None else now, stream, now=now)
      self._by_stage.add(f'{stream} / {stage}')

  def snapshot(self, now: Optional[float] = None, limit: int = 10) -> dict:
    now = time.time() if now is None else now
    with self._lock:
      recent = sorted(self._recent, key=lambda r: r['failed_at'] or 0)[-limit:][::-1]
      return {'recent': recent,
              'per_minute': self._per_minute.snapshot(now),
              'last_hour': self._per_minute.total(now),
              'last_5_minutes': self._per_minute.total(now, 5),
              'by_stage': self._by_stage.most_common(10),
              'rejected': self.rejections.snapshot(),
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
