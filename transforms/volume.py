"""DetectVolumeAnomalies: floods are anomalies of rate, not of one record.

    scored network RecordBatches
      -> per (site, event-time window): connections per protocol/service/flag, per
         protocol/*/flag (across services), per protocol/service/flag/size (src_bytes in
         half-octave classes), and in all
      -> per site, in event-time order: each window's count (a size key: its share of its
         protocol/service/flag) against the recent baseline of its key -> a
         ``volume_anomaly`` alert per surging key and window

Four kinds of key, for four shapes of attack: a flood of one service (protocol/service/flag);
any surge of the site (its whole traffic); a scan that touches many services, each too few
times to surge (protocol/*/flag, judged on what the services that surged on their own leave
over); a flood of one request size inside a busy service, which changes the service's mix and
not its count (protocol/service/flag/size, judged by its share, and not in a window where its
protocol/service/flag surges: when a flood elsewhere ends, a service's traffic comes back in
every size class at once).

A smurf or neptune flood is made of records that each look ordinary once the flood is most of
the traffic (a density model learns them as normal); what gives it away is how many there are.
Counts are taken in fixed event-time windows of ``window_s`` seconds; per key the baseline is
the median and median absolute deviation of its last ``baseline_windows`` counts, kept by
Beam's own online trackers (apache_beam.ml.anomaly.univariate: MadTracker over a sliding
median). A window surges when its count is at least ``min_count`` and more than ``ratio`` times
the baseline's upper bound (median + ``z`` scaled MADs).

Why Beam's AnomalyDetection transform itself is not used here (docs/detection.md): it learns
every value it scores, so a flood that lasts longer than its window becomes the baseline and is
no longer flagged; its RobustZScore scores 0 when the MAD is 0, which is the usual case of a
service that normally sees no traffic at all (a flood from silence would never be flagged); it
scores in arrival order, not event-time order; and a key without traffic in a window sends no
value, so silence never enters the baseline. This detector keeps Beam's trackers but learns only
from windows that did not surge, fills windows without traffic with zeros, and processes each
site's windows in event-time order (buffered until the watermark passes them, so a batch run,
where windows arrive in any order, gives the same alerts as a stream).

A site's first ``warmup_windows`` windows only teach the baseline: at the start every key would
otherwise look new. A key first seen later starts from a baseline of zeros (it had no traffic).
Records are counted whatever the model said of them; a record that reaches this stage has a
site, an event time and the three required categorical fields (the cleaning stage refused the
others, to the dead letters), so none is left uncounted. A window's count that arrives after the
site's windows were evaluated (records later than the watermark) is evaluated on its own against
the baseline, never learned, and counted in ``volume_late_windows``.
"""

from __future__ import annotations

import collections
import datetime
import math
from typing import Any, Iterator, Optional

import apache_beam as beam
from apache_beam.coders import PickleCoder
from apache_beam.metrics.metric import Metrics
from apache_beam.ml.anomaly.univariate.mad import MadTracker
from apache_beam.ml.anomaly.univariate.median import MedianTracker
from apache_beam.ml.anomaly.univariate.quantile import BufferedSlidingQuantileTracker
from apache_beam.transforms import userstate, window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import PaneInfoTiming

from transforms.alerts import to_json
from transforms.batch import RecordBatch
from transforms.dead_letter import utc_now
from transforms.ids import uuid5

VOLUME_KIND = 'volume_anomaly'
ALL_TRAFFIC = '*'  # the key of a site's whole traffic
ANY_SERVICE = '*'  # the service part of a protocol/*/flag key: all of the site's services
# Size classes of src_bytes: half octaves (a class's upper bound is 1.41 times its lower).
SIZE_CLASSES_PER_OCTAVE = 2
# The MAD of a normal distribution is 0.6745 sigma: this scales it to one sigma.
MAD_TO_SIGMA = 1.4826
UTC = datetime.timezone.utc


def volume_key(protocol_type: Any, service: Any, flag: Any) -> str:
  """A key of the counts: ``tcp/http/SF``."""
  return f'{protocol_type}/{service}/{flag}'


def size_class(src_bytes: Any) -> Optional[int]:
  """The half-octave class of a request size (``src_bytes``); None when it has none."""
  try:
    value = float(src_bytes)
  except (TypeError, ValueError):
    return None
  if not math.isfinite(value) or value < 0:
    return None
  return int(math.floor(math.log2(value + 1.0) * SIZE_CLASSES_PER_OCTAVE))


def size_range(size: int) -> tuple[int, int]:
  """The src_bytes a size class holds, [low, high]."""
  low = math.ceil(2.0 ** (size / SIZE_CLASSES_PER_OCTAVE) - 1.0)
  high = math.ceil(2.0 ** ((size + 1) / SIZE_CLASSES_PER_OCTAVE) - 1.0) - 1
  return int(low), int(max(low, high))


def parse_key(key: str) -> tuple[Optional[str], Optional[str], Optional[str], Optional[int]]:
  """(protocol_type, service, flag, size class) of a key: service None for ``tcp/*/S0``
  (every service), all None for the site's whole traffic, size None but for a size key."""
  if key == ALL_TRAFFIC:
    return None, None, None, None
  parts = key.split('/')
  protocol, service, flag = (parts + [None, None, None])[:3]
  size = int(parts[3]) if len(parts) > 3 and parts[3].lstrip('-').isdigit() else None
  return protocol, None if service == ANY_SERVICE else service, flag, size


def parent_key(key: str) -> Optional[str]:
  """The protocol/service/flag key a size key is a share of (None for other keys)."""
  parts = key.split('/')
  return '/'.join(parts[:3]) if len(parts) == 4 else None


def _kind_of(key: str) -> str:
  """'size' (protocol/service/flag/size), 'spread' (protocol/*/flag) or 'count'."""
  parts = key.split('/')
  if len(parts) == 4:
    return 'size'
  if len(parts) == 3 and parts[1] == ANY_SERVICE:
    return 'spread'
  return 'count'


def window_counts(batch: RecordBatch, window_s: float) -> Iterator[beam.window.TimestampedValue]:
  """A scored network batch -> ``(site, {key: count})`` per event-time window it touches,
  stamped with the window's start (pre-aggregated here: one element per window and site, not
  per record)."""
  columns = batch.columns
  sites = columns['site']
  sizes = columns.get('src_bytes')
  if sizes is None:
    sizes = [None] * len(sites)
  # A batch holds few distinct (site, window, protocol, service, flag, size class) records:
  # count those first, then spread each onto its keys, instead of four keys a record.
  classes: dict[Any, Optional[int]] = {}
  combos = collections.Counter(zip(
      sites, [math.floor(when.timestamp() / window_s) for when in columns['event_time']],
      columns['protocol_type'], columns['service'], columns['flag'],
      [classes[b] if b in classes else classes.setdefault(b, size_class(b)) for b in sizes]))
  counts: dict[tuple[str, float], collections.Counter] = collections.defaultdict(
      collections.Counter)
  for (site, window_index, protocol, service, flag, size), n in combos.items():
    counter = counts[(str(site), window_index * window_s)]
    key = volume_key(protocol, service, flag)
    counter[key] += n
    counter[volume_key(protocol, ANY_SERVICE, flag)] += n
    if size is not None:
      counter[f'{key}/{size}'] += n
    counter[ALL_TRAFFIC] += n
  for (site, start), counter in counts.items():
    yield window.TimestampedValue((site, dict(counter)), start)


class MergeCounts(beam.CombineFn):
  """{key: count} dicts -> their sum."""

  def create_accumulator(self):
    return collections.Counter()

  def add_input(self, accumulator, counts):
    accumulator.update(counts)
    return accumulator

  def merge_accumulators(self, accumulators):
    merged = collections.Counter()
    for a in accumulators:
      merged.update(a)
    return merged

  def extract_output(self, accumulator):
    return dict(accumulator)


class _WithWindowStart(beam.DoFn):
  """(site, {key: count}) in a fixed window -> (site, (window start s, {key: count}, is late))."""

  def process(self, element, win=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam):
    site, counts = element
    late = pane.timing == PaneInfoTiming.LATE
    yield site, (win.start.micros / 1e6, counts, late)


class Baseline:
  """The recent counts of one key that did not surge: median and MAD from Beam's trackers."""

  def __init__(self, windows: int):
    self.tracker = MadTracker(
        median_tracker=MedianTracker(BufferedSlidingQuantileTracker(windows, 0.5)),
        diff_median_tracker=MedianTracker(BufferedSlidingQuantileTracker(windows, 0.5)))
    self.last_nonzero = -math.inf  # window start of its last count above zero

  def push(self, value: float, start: float, active: Optional[bool] = None) -> None:
    """Learns ``value`` (a count, or a size key's share); ``active``: the key had traffic
    (default: the value is not 0)."""
    self.tracker.push(float(value))
    if value if active is None else active:
      self.last_nonzero = start

  def bounds(self) -> tuple[float, float]:
    median, mad = self.tracker.get_median(), self.tracker.get()
    if math.isnan(median):
      return 0.0, 0.0
    return median, 0.0 if math.isnan(mad) else mad


class VolumeParams:
  """The detector's settings (see the module docstring)."""

  def __init__(self, window_s: float = 10.0, baseline_windows: int = 30, min_count: int = 20,
               ratio: float = 3.0, z: float = 3.0, warmup_windows: int = 3,
               allowed_lateness_s: float = 60.0, min_share: float = 0.1,
               max_keys: int = 5000):
    self.window_s = float(window_s)
    # Baselines a site keeps: a producer sending a new service name with every record must
    # not grow the state without bound. A key past the cap is still judged (against an
    # empty baseline, so only a surge of min_count or more alerts), just not learned.
    self.max_keys = int(max_keys)
    self.min_share = float(min_share)
    self.baseline_windows = int(baseline_windows)
    self.min_count = int(min_count)
    self.ratio = float(ratio)
    self.z = float(z)
    self.warmup_windows = int(warmup_windows)
    self.allowed_lateness_s = float(allowed_lateness_s)

  def threshold(self, median: float, mad: float) -> tuple[float, float]:
    """(the baseline's upper bound, the count at which a window surges)."""
    high = median + self.z * MAD_TO_SIGMA * mad
    return high, max(float(self.min_count), self.ratio * max(high, 1.0))

  def share_threshold(self, median: float, mad: float) -> tuple[float, float]:
    """A size key's (upper bound of its usual share, the share at which it surges)."""
    high = median + self.z * MAD_TO_SIGMA * mad
    return high, max(self.min_share, self.ratio * high)


def volume_alert(site: str, key: str, start: float, count: int, median: float, high: float,
                 threshold: float, params: VolumeParams, late: bool = False,
                 share: Optional[float] = None, total: int = 0) -> dict[str, Any]:
  """One surging (site, key, window) -> an alert row (schemas.outputs.ALERT_SCHEMA). Its id is
  derived from the site, key and window (one alert per window and key, the same on replay);
  its score is how far above the baseline's upper bound the count (a size key: its share) is,
  in [0, 1). ``share`` and ``total``: a size key's share of its parent key's ``total``."""
  protocol, service, flag, size = parse_key(key)
  window_text = f'{params.window_s:g} s'
  extra: dict[str, Any] = {}
  if size is not None:
    low, top = size_range(size)
    parent = parent_key(key)
    share = float(share or 0.0)
    reason = {
        'feature': f'share of {parent} connections with src_bytes {low:,}-{top:,}',
        'value': round(share, 4), 'normal_low': 0.0, 'normal_high': round(high, 4),
        'normal': f'usually {median:.1%} (up to {high:.1%}) of them',
        'deviation': round(share / max(high, 0.01), 3)}
    what = (f'{count:,} of {total:,} {parent} connections in {window_text} with src_bytes '
            f'{low:,}-{top:,}')
    score = 1.0 - (max(high, 0.01) / share) if share > max(high, 0.01) else 0.0
    extra = {'size_class': size, 'src_bytes_low': low, 'src_bytes_high': top,
             'share': share, 'parent_count': int(total)}
  else:
    if key == ALL_TRAFFIC:
      what = 'connections'
    elif service is None:
      what = f'{protocol} {flag} connections across services (beyond any that surged alone)'
    else:
      what = f'{key} connections'
    reason = {
        'feature': f'connections per {window_text}', 'value': int(count),
        'normal_low': 0.0, 'normal_high': round(high, 3),
        'normal': f'usually {median:,.0f} (up to {high:,.0f}) per {window_text}',
        'deviation': round(count / max(high, 1.0), 3)}
    what = f'{count:,} {what} in {window_text}'
    score = 1.0 - (max(high, 1.0) / float(count)) if count > max(high, 1.0) else 0.0
  begins = datetime.datetime.fromtimestamp(start, UTC)
  details = {'key': key, 'window_start': begins,
             'window_end': datetime.datetime.fromtimestamp(start + params.window_s, UTC),
             'window_s': params.window_s, 'count': int(count), 'baseline_median': median,
             'baseline_high': high, 'threshold': threshold, 'late': late,
             'what': what, **extra}
  return {
      'event_id': uuid5(f'volume|{site}|{key}|{start!r}|{"late" if late else ""}'),
      'kind': VOLUME_KIND,
      'event_time': begins,
      'processing_time': utc_now(),
      'site': site,
      'score': score,
      'model_version': None,
      'machine': None,
      'program': None,
      'service': service,
      'protocol_type': protocol,
      'flag': flag,
      'details': to_json(details).decode(),
      'reasons': to_json([reason]).decode(),
  }


def _timer_time(seconds: float) -> Timestamp:
  """A timer at or just after ``seconds``, in whole milliseconds (what runners keep)."""
  return Timestamp(micros=math.ceil(round(seconds * 1e6) / 1000) * 1000)


class VolumeSurgeFn(beam.DoFn):
  """(site, (window start, {key: count}, late)) -> volume_anomaly alert rows.

  Keyed by site; each site's windows are buffered until the watermark passes them, then
  evaluated in event-time order (state: the baselines of the site's keys).
  """
  PENDING = userstate.BagStateSpec('pending', PickleCoder())
  BASELINES = userstate.ReadModifyWriteStateSpec('baselines', PickleCoder())
  FLUSH = userstate.TimerSpec('flush', TimeDomain.WATERMARK)
  FLUSH_AT = userstate.ReadModifyWriteStateSpec('flush_at', PickleCoder())

  def __init__(self, params: VolumeParams):
    self._params = params
    self._late = Metrics.counter('volume', 'volume_late_windows')
    self._surges = Metrics.counter('volume', 'volume_anomalies')
    self._untracked = Metrics.counter('volume', 'volume_keys_untracked')

  def process(self, element, pending=beam.DoFn.StateParam(PENDING),
              flush=beam.DoFn.TimerParam(FLUSH), flush_at=beam.DoFn.StateParam(FLUSH_AT)):
    site, (start, counts, late) = element
    pending.add((start, counts, late))
    # One pending timer at a time: re-setting it with every window would push it forward
    # forever under steady traffic, and nothing would be evaluated.
    if flush_at.read() is None:
      when = start + self._params.window_s
      flush.set(_timer_time(when))
      flush_at.write(when)

  @userstate.on_timer(FLUSH)
  def on_flush(self, key=beam.DoFn.KeyParam, timestamp=beam.DoFn.TimestampParam,
               pending=beam.DoFn.StateParam(PENDING),
               baselines_state=beam.DoFn.StateParam(BASELINES),
               flush=beam.DoFn.TimerParam(FLUSH), flush_at=beam.DoFn.StateParam(FLUSH_AT)):
    now = timestamp.micros / 1e6
    window_s = self._params.window_s
    items = list(pending.read())
    ready = sorted((i for i in items if i[0] + window_s <= now), key=lambda i: (i[0], i[2]))
    waiting = [i for i in items if i[0] + window_s > now]
    pending.clear()
    for item in waiting:
      pending.add(item)
    flush_at.clear()
    if waiting:
      # The newest waiting window: the ones before it are evaluated at the same time.
      when = max(i[0] for i in waiting) + window_s
      flush.set(_timer_time(when))
      flush_at.write(when)
    state = baselines_state.read() or {'next': None, 'seen': 0, 'keys': {}}
    for start, counts, late in ready:
      yield from self._evaluate(key, state, start, counts, late)
    baselines_state.write(state)

  def _evaluate(self, site: str, state: dict, start: float, counts: dict[str, int],
                late: bool) -> Iterator[dict[str, Any]]:
    params = self._params
    keys: dict[str, Baseline] = state['keys']
    warming = state['seen'] < params.warmup_windows
    if late or (state['next'] is not None and start < state['next']):
      # Its window was already evaluated: judged on its own, not learned from.
      self._late.inc()
      yield from self._judge(site, keys, start, counts, warming, learn=False)
      return
    if state['next'] is not None:
      # Windows without a single record: zeros for every count key (at most a baseline's
      # worth); a size key has no share in them.
      skipped = int(round((start - state['next']) / params.window_s))
      for i in range(min(skipped, params.baseline_windows)):
        empty = state['next'] + i * params.window_s
        for name, baseline in keys.items():
          if _kind_of(name) != 'size':
            baseline.push(0, empty)
    yield from self._judge(site, keys, start, counts, warming, learn=True)
    # A key silent for a whole baseline is forgotten: a fresh one starts from zeros too.
    horizon = start - params.baseline_windows * params.window_s
    for name in [n for n, b in keys.items() if b.last_nonzero < horizon]:
      del keys[name]
    state['seen'] += 1
    state['next'] = start + params.window_s

  def _judge(self, site: str, keys: dict[str, 'Baseline'], start: float,
             counts: dict[str, int], warming: bool, learn: bool
             ) -> Iterator[dict[str, Any]]:
    """One window of a site: each key against its baseline, learning (when ``learn``) from
    the keys that do not surge. The protocol/service/flag keys (and the site's total) first:
    a protocol/*/flag key is judged on what its services that surged on their own leave
    over (a scan: many services, each too small to surge), and a size key is not judged
    when its parent key surges (the parent's alert already covers its records)."""
    params = self._params
    names = sorted(set(keys) | set(counts), key=lambda n: (_kind_of(n) != 'count', n))
    surging: set[str] = set()
    explained: collections.Counter = collections.Counter()  # per protocol/*/flag key
    for name in names:
      kind = _kind_of(name)
      count = counts.get(name, 0)
      share, total = None, 0
      if kind == 'spread':
        count = max(0, count - explained[name])
      elif kind == 'size':
        parent = parent_key(name)
        total = counts.get(parent, 0)
        if total == 0 or parent in surging:
          continue
        share = count / total
      baseline = keys.get(name)
      if baseline is None and learn:
        if len(keys) < params.max_keys:
          baseline = keys[name] = Baseline(params.baseline_windows)
        else:
          self._untracked.inc()
      median, mad = baseline.bounds() if baseline else (0.0, 0.0)
      if kind == 'size':
        high, threshold = params.share_threshold(median, mad)
        surges = count >= params.min_count and share >= threshold
      else:
        high, threshold = params.threshold(median, mad)
        surges = count >= threshold
      if not warming and surges:
        surging.add(name)
        if kind == 'count' and name != ALL_TRAFFIC:
          protocol, service, flag, _ = parse_key(name)
          explained[volume_key(protocol, ANY_SERVICE, flag)] += count
        self._surges.inc()
        yield volume_alert(site, name, start, count, median, high, threshold, params,
                           not learn, share, total)
      elif learn and baseline is not None:
        baseline.push(count if share is None else share, start, count > 0)


class DetectVolumeAnomalies(beam.PTransform):
  """Scored network RecordBatches -> volume_anomaly alert rows (schemas.outputs.ALERT_SCHEMA)."""

  def __init__(self, params: Optional[VolumeParams] = None):
    super().__init__()
    self._params = params or VolumeParams()

  def expand(self, batches):
    params = self._params
    return (
        batches
        | 'WindowCounts' >> beam.FlatMap(window_counts, params.window_s)
        | 'FixedWindows' >> beam.WindowInto(
            window.FixedWindows(params.window_s),
            allowed_lateness=int(params.allowed_lateness_s))
        | 'CountPerSiteAndKey' >> beam.CombinePerKey(MergeCounts())
        | 'WithWindowStart' >> beam.ParDo(_WithWindowStart())
        | 'Rewindow' >> beam.WindowInto(window.GlobalWindows())
        | 'Surges' >> beam.ParDo(VolumeSurgeFn(params)))

