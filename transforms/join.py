"""The host attack join: a process record and a memory record of the same program on the same
machine, both predicted as attacks, less than ``JOIN_GAP_S`` apart, make one attack event.

How every pair comes out exactly once, whatever the window boundaries and however late:

* Windows slide by the gap G and are 2G long, so each element lies in two windows, and for
  any pair with ``|t_p - t_m| < G`` the window starting at ``floor(min(t_p, t_m) / G) * G``
  holds both. Only that window (the pair's *canonical* window) emits the pair.
* Late elements (up to the allowed lateness) re-fire the window with ACCUMULATING panes, so a
  late record meets every partner already seen; the pairs of earlier panes come again too,
  and a stateful step keyed by event id lets each through once. Its state lives in the
  canonical window and is freed when that window expires.
* The canonical window of a pair whose later member is L late ends after ``t + L``, so it
  is still open when any record within the allowed lateness arrives.
* Windows also fire early, ``EARLY_FIRING_S`` of processing time after an element arrives,
  before the watermark passes them. A pair is final as soon as both records are in (the
  dedupe above lets it through once), so its alert need not wait for the window to close;
  and a watermark held back upstream (KafkaIO's idle-partition advance did not come in some
  runs on embedded Flink, and no window ever closed) delays window cleanup, never detection.
  Not sooner than 30 s: each firing recomputes its whole accumulated pane, and with 5 s a
  catch-up replay of host traffic ran at 7,300 records/s instead of 12,500-13,000
  (benchmarks.throughput --streams host); with 30 s, windows a replay moves the watermark
  past mostly close on time first.

What the runner would drop is never dropped silently (docs/time-and-watermarks.md):

* The runner drops, at the CoGroupByKey, a record whose windows the watermark has passed by
  more than the allowed lateness, and says so only in a Java metric. So a gate,
  :class:`_JoinClockFn`, stands in front of each stream's windows: a record it cannot prove
  the windows will still take becomes a dead letter (stage ``join``, "late for the join by N
  s") and counts in ``JoinHostAttacks/<stream>_late_for_join``.
* The proof: the gate keeps one event-time timer pending, its *rung*. A pending timer holds
  the gate's output watermark at the rung (Flink keeps a watermark hold per timer and emits
  no watermark in the middle of a bundle), so the join's watermark never passes it; when it
  fires, the next rung is set from inside the callback, so a hold is always there. A record
  passes only if its earlier window, with the allowed lateness, ends after
  ``rung - CLOCK_STEP_S``; the windows allow ``CLOCK_STEP_S`` more, so the runner's rule
  cannot drop what passed.
* Rungs climb by ``CLOCK_STEP_S`` while the clock is near the records. Clock hints
  (:func:`clock_hint`, one per batch of records, flagged or not) say where those are: the
  stream's own, and those of every other stream read with it, since they all move the one
  watermark. Without them, rare attacks in a fast catch-up, or a stream quiet while the others
  move the watermark on, would look like the next case.
* A watermark far ahead of every record (a producer's CreateTime in the future drives
  KafkaIO's watermark) makes rungs fire at once, again and again: then the steps double, the
  clock catches up in a few dozen firings, and every record behind it is a counted dead
  letter, not a lost one.
* Not covered: a stream's first batch after a fresh start (no state) is decided before its
  clock's first timer fired, so it passes without that proof.
"""

from __future__ import annotations

import time
import typing
from typing import Any, Iterable

import apache_beam as beam
from apache_beam.coders import BooleanCoder, FloatCoder, TupleCoder, VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms import trigger, userstate, window
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Timestamp

from schemas.outputs import ARCHIVE_SCHEMAS
from transforms.dead_letter import DEAD_LETTER, dead_letter_row, record_payload, utc_now
from transforms.ids import attack_event_id

JOIN_GAP_S = 30
MAX_LATENESS_S = 20
EARLY_FIRING_S = 30
# The join clock's resolution: the windows allow this much lateness on top of the contract's,
# so that a clock up to one step ahead of the watermark never lets the runner drop a record.
CLOCK_STEP_S = 5
CLOCK_SHARDS = 1  # one clock per stream: only its first record precedes a hold (module doc)
LATE_STAGE = 'join'
CLOCK_HINT_KEY = None  # the key of clock_hint elements (records are keyed by host_key)
# The key of another stream's clock hints at a gate: they say where the watermark may be, but
# do not start the clock (a stream's records can lag the others').
_ELSEWHERE_KEY = 'elsewhere'
# The counter of records too late for the join: <LATE_NAMESPACE>/<stream><LATE_SUFFIX>.
LATE_NAMESPACE, LATE_SUFFIX = 'JoinHostAttacks', '_late_for_join'
_MICROS = 1_000_000
# Past this the clock stops: only the end of a stream (watermark at +inf) drives it there.
_CLOCK_END_US = MAX_TIMESTAMP.micros - 365 * 86_400 * _MICROS
_PROCESS_COLUMNS = ARCHIVE_SCHEMAS['process'].names
_MEMORY_COLUMNS = ARCHIVE_SCHEMAS['memory'].names


def is_joinable(process: dict[str, Any], memory: dict[str, Any], gap_s: int = JOIN_GAP_S) -> bool:
  return abs(memory['ts'] - process['ts']) < gap_s


def attack_row(process: dict[str, Any], memory: dict[str, Any]) -> dict[str, Any]:
  """One ``attacks/`` row: the two records side by side, prefixed by their stream."""
  row = {f'Process_{c}': process.get(c) for c in _PROCESS_COLUMNS}
  row.update({f'Memory_{c}': memory.get(c) for c in _MEMORY_COLUMNS})
  # Why each record was flagged (not an attacks/ column: read by the host alert).
  row['Process_reasons'], row['Memory_reasons'] = process.get('reasons'), memory.get('reasons')
  row['delta_time'] = float(memory['ts'] - process['ts'])
  row['processing_time'] = utc_now()
  row['event_id'] = attack_event_id(process, memory)
  return row


def pairs_in_window(element, gap_s: int, win=beam.DoFn.WindowParam) -> Iterable:
  """CoGroupByKey output -> (event_id, attack row) for the pairs this window owns."""
  _, grouped = element
  window_start = win.start.micros / 1e6
  for process in grouped['process']:
    for memory in grouped['memory']:
      if not is_joinable(process, memory, gap_s):
        continue
      earliest = min(process['ts'], memory['ts'])
      if window_start <= earliest < window_start + gap_s:
        row = attack_row(process, memory)
        yield row['event_id'], row


class EmitOncePerKey(beam.DoFn):
  """Lets the first element of each key (per window) through and drops repeats."""
  EMITTED = userstate.ReadModifyWriteStateSpec('emitted', BooleanCoder())

  def process(self, element, emitted=beam.DoFn.StateParam(EMITTED)):
    if emitted.read():
      return
    emitted.write(True)
    yield element[1]


def clock_hint(earliest_s: float, newest_s: float) -> TimestampedValue:
  """A join input element that is no record: a batch's event-time span, so the join's clock
  knows how far the stream's records (not only the few flagged ones) have come."""
  return TimestampedValue((CLOCK_HINT_KEY, Timestamp.of(earliest_s).micros), newest_s)


def late_row(stream: str, row: dict[str, Any], late_by_s: float) -> dict[str, Any]:
  """The dead letter of a host record that came too late for the join: the record as JSON."""
  return dead_letter_row(
      None, LATE_STAGE, f'late for the join by {late_by_s:.0f} s', record_index=None,
      payload=record_payload(row) or b'') | {'stream': stream}


def _counted(row: dict[str, Any], stream: str) -> dict[str, Any]:
  Metrics.counter(LATE_NAMESPACE, f'{stream}{LATE_SUFFIX}').inc()
  return row


def _hint_elsewhere(element) -> Iterable:
  """A stream's (key, record) or clock hint -> its clock hint, for another stream's gate."""
  if element[0] is CLOCK_HINT_KEY:
    yield _ELSEWHERE_KEY, element[1]


class _JoinClockFn(beam.DoFn):
  """(shard, (key, row)) stamped with the row's ts -> (key, row) the join's windows will take,
  or a dead letter (tagged ``DEAD_LETTER``) for a row they could drop as late.

  One clock per shard, in the global window: ``rung`` is the pending timer's time (and so the
  hold on the output watermark), in microseconds; ``newest`` the newest record seen, which
  bounds where a fine step is worth it. Per record: one state read and two comparisons.
  """
  CLOCK = userstate.ReadModifyWriteStateSpec('clock', TupleCoder((VarIntCoder(), VarIntCoder())))
  CLIMB = userstate.ReadModifyWriteStateSpec('climb', TupleCoder((VarIntCoder(), FloatCoder())))
  TICK = userstate.TimerSpec('tick', userstate.TimeDomain.WATERMARK)

  def __init__(self, stream: str, gap_s: int, lateness_s: int, step_s: float = CLOCK_STEP_S):
    self._stream = stream
    self._period_us = int(gap_s * _MICROS)
    self._lateness_us = int(lateness_s * _MICROS)
    self._step_us = int(step_s * _MICROS)
    # A record this far behind the newest one is past its windows and their lateness.
    self._horizon_us = 2 * self._period_us + self._lateness_us

  def process(self, element, ts=beam.DoFn.TimestampParam, clock=beam.DoFn.StateParam(CLOCK),
              climb=beam.DoFn.StateParam(CLIMB), tick=beam.DoFn.TimerParam(TICK)):
    keyed = element[1]
    t = ts.micros
    state = clock.read()
    if keyed[0] == _ELSEWHERE_KEY:
      if state is not None and t > state[1] + self._step_us:
        clock.write((state[0], t))
      return
    if state is None:
      # The first element: nothing is known of the watermark yet (see the module doc).
      earliest = keyed[1] if keyed[0] is CLOCK_HINT_KEY else t
      rung = min(t, earliest) - self._horizon_us
      tick.set(Timestamp(micros=rung))
      clock.write((rung, t))
      climb.write((self._step_us, time.time()))
      if keyed[0] is not CLOCK_HINT_KEY:
        yield keyed
      return
    rung, newest = state
    if keyed[0] is CLOCK_HINT_KEY:
      if t > newest + self._step_us:
        clock.write((rung, t))
      return
    # The end of the earlier of the record's two sliding windows, plus the allowed lateness.
    deadline = t - t % self._period_us + self._period_us + self._lateness_us
    if deadline <= rung - self._step_us:
      yield TaggedOutput(DEAD_LETTER, late_row(
          self._stream, keyed[1], (rung - self._step_us - t) / _MICROS))
      return
    if t > newest + self._step_us:  # a write per step of event time, not per record
      clock.write((rung, t))
    yield keyed

  @userstate.on_timer(TICK)
  def on_tick(self, clock=beam.DoFn.StateParam(CLOCK), climb=beam.DoFn.StateParam(CLIMB),
              tick=beam.DoFn.TimerParam(TICK)):
    """The watermark reached the rung: set the next one (keeps the hold continuous)."""
    rung, newest = clock.read()
    step, set_at = climb.read()
    now = time.time()
    if rung + self._step_us <= newest + self._horizon_us:
      step = self._step_us
    elif now - set_at < step / _MICROS / 10:
      # Event time ran ten times faster than the clock on the wall, with no record near:
      # a watermark far ahead. Double the step to catch up in a few dozen firings.
      step *= 2
    else:
      step = self._step_us
    rung = min(rung + step, _CLOCK_END_US)
    clock.write((rung, newest))
    climb.write((step, now))
    if rung < _CLOCK_END_US:
      tick.set(Timestamp(micros=rung))


class JoinHostAttacks(beam.PTransform):
  """{'process': keyed scored records, 'memory': keyed scored records} ->
  ``{'attacks': attack event rows, DEAD_LETTER: records too late for the join}``.

  Keys are ``(machine, CMD_PID)``; element timestamps are the records' ``ts``. The inputs may
  also hold :func:`clock_hint` elements (one per batch of the stream's records, flagged or not),
  and an optional ``'clock'`` input the hints of streams read with these but not joined (they
  move the same watermark). Without hints the clock knows only the flagged records, and where
  those are rare a fast catch-up can run it ahead of the watermark
  (docs/time-and-watermarks.md).
  """

  def __init__(self, gap_s: int = JOIN_GAP_S, allowed_lateness_s: int = MAX_LATENESS_S,
               early_firing_s: float = EARLY_FIRING_S, clock_shards: int = CLOCK_SHARDS):
    super().__init__()
    self._gap_s = gap_s
    self._lateness_s = allowed_lateness_s
    self._early_firing_s = early_firing_s
    self._shards = max(1, clock_shards)

  def _windowed_attacks(self, records, stream: str, elsewhere: list, late: list):
    if records.is_bounded:
      # Early firings need a processing clock, which a bounded (batch) input does not have;
      # and nothing in it is late.
      early = None
      attacks = records | f'{stream}Attacks' >> beam.Filter(
          lambda kv: kv[0] is not CLOCK_HINT_KEY and kv[1]['prediction'] == 1)
    else:
      attacks = records | f'{stream}Attacks' >> beam.Filter(
          lambda kv: kv[0] is CLOCK_HINT_KEY or kv[1]['prediction'] == 1)
      early = trigger.AfterProcessingTime(self._early_firing_s)
      shards = self._shards
      if elsewhere:
        attacks = [attacks, *elsewhere] | f'{stream}AndClockElsewhere' >> beam.Flatten()
      gated = (
          attacks
          | f'{stream}ClockShard' >> beam.Map(
              (lambda kv: (0, kv)) if shards == 1 else (lambda kv: (hash(kv[0]) % shards, kv)))
          | f'{stream}LateForJoin' >> beam.ParDo(
              _JoinClockFn(stream, self._gap_s, self._lateness_s)).with_outputs(
                  DEAD_LETTER, main='records'))
      attacks = gated['records']
      # Counted apart from the gate: the DirectRunner reports no metrics of stateful steps.
      late.append(gated[DEAD_LETTER] | f'{stream}CountLate' >> beam.Map(
          _counted, stream))
    return attacks | f'{stream}Windows' >> beam.WindowInto(
        window.SlidingWindows(size=2 * self._gap_s, period=self._gap_s),
        trigger=trigger.AfterWatermark(early=early, late=trigger.AfterCount(1)),
        accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
        allowed_lateness=self._lateness_s + CLOCK_STEP_S)

  def expand(self, host_records):
    late = []
    streams = ('process', 'memory')
    hints = {}  # input -> its clock hints, for the gates of the other streams
    if not host_records['process'].is_bounded:
      hints = {name: host_records[name] | f'{name}ClockHints' >> beam.FlatMap(_hint_elsewhere)
               for name in (*streams, 'clock') if name in host_records}
    grouped = {
        stream: self._windowed_attacks(
            host_records[stream], stream, [h for name, h in hints.items() if name != stream],
            late)
        for stream in streams} | beam.CoGroupByKey()
    attacks = (
        grouped
        | 'PairsInCanonicalWindow' >> beam.FlatMap(
            pairs_in_window, self._gap_s).with_output_types(beam.typehints.KV[str, typing.Any])
        | 'EmitEachPairOnce' >> beam.ParDo(EmitOncePerKey())
        # Downstream (alerts, files) is not windowed by event time.
        | 'Unwindow' >> beam.WindowInto(window.GlobalWindows()))
    if not late:
      late = [host_records['process'] | 'NoLateRecords' >> beam.FlatMap(lambda _: ())]
    return {'attacks': attacks, DEAD_LETTER: late | 'LateForJoin' >> beam.Flatten()}


def reference_join(process_records: Iterable[dict], memory_records: Iterable[dict],
                   gap_s: int = JOIN_GAP_S) -> set[str]:
  """Brute force, for tests and audits: the event ids of every joinable attack pair."""
  memory_records = [m for m in memory_records if m['prediction'] == 1]
  return {
      attack_event_id(p, m)
      for p in process_records if p['prediction'] == 1
      for m in memory_records
      if (p['machine'], p['CMD_PID']) == (m['machine'], m['CMD_PID']) and
      is_joinable(p, m, gap_s)}
