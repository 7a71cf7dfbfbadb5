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
"""

from __future__ import annotations

import typing
from typing import Any, Iterable

import apache_beam as beam
from apache_beam.coders import BooleanCoder
from apache_beam.transforms import trigger, userstate, window

from schemas.outputs import ARCHIVE_SCHEMAS
from transforms.dead_letter import utc_now
from transforms.ids import attack_event_id

JOIN_GAP_S = 30
MAX_LATENESS_S = 20
EARLY_FIRING_S = 30
_PROCESS_COLUMNS = ARCHIVE_SCHEMAS['process'].names
_MEMORY_COLUMNS = ARCHIVE_SCHEMAS['memory'].names


def is_joinable(process: dict[str, Any], memory: dict[str, Any], gap_s: int = JOIN_GAP_S) -> bool:
  return abs(memory['ts'] - process['ts']) < gap_s


def attack_row(process: dict[str, Any], memory: dict[str, Any]) -> dict[str, Any]:
  """One ``attacks/`` row: the two records side by side, prefixed by their stream."""
  row = {f'Process_{c}': process.get(c) for c in _PROCESS_COLUMNS}
  row.update({f'Memory_{c}': memory.get(c) for c in _MEMORY_COLUMNS})
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


class JoinHostAttacks(beam.PTransform):
  """{'process': keyed scored records, 'memory': keyed scored records} -> attack event rows.

  Keys are ``(machine, CMD_PID)``; element timestamps are the records' ``ts``.
  """

  def __init__(self, gap_s: int = JOIN_GAP_S, allowed_lateness_s: int = MAX_LATENESS_S,
               early_firing_s: float = EARLY_FIRING_S):
    super().__init__()
    self._gap_s = gap_s
    self._lateness_s = allowed_lateness_s
    self._early_firing_s = early_firing_s

  def _windowed_attacks(self, records, stream: str):
    # Early firings need a processing clock, which a bounded (batch) input does not have.
    early = None if records.is_bounded else trigger.AfterProcessingTime(self._early_firing_s)
    return (
        records
        | f'{stream}Attacks' >> beam.Filter(lambda kv: kv[1]['prediction'] == 1)
        | f'{stream}Windows' >> beam.WindowInto(
            window.SlidingWindows(size=2 * self._gap_s, period=self._gap_s),
            trigger=trigger.AfterWatermark(early=early, late=trigger.AfterCount(1)),
            accumulation_mode=trigger.AccumulationMode.ACCUMULATING,
            allowed_lateness=self._lateness_s))

  def expand(self, host_records):
    grouped = {
        stream: self._windowed_attacks(host_records[stream], stream)
        for stream in ('process', 'memory')} | beam.CoGroupByKey()
    return (
        grouped
        | 'PairsInCanonicalWindow' >> beam.FlatMap(
            pairs_in_window, self._gap_s).with_output_types(beam.typehints.KV[str, typing.Any])
        | 'EmitEachPairOnce' >> beam.ParDo(EmitOncePerKey())
        # Downstream (alerts, files) is not windowed by event time.
        | 'Unwindow' >> beam.WindowInto(window.GlobalWindows()))


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
