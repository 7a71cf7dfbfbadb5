"""The host attack join under TestStream: window boundaries, lateness, exactly-once, and a
property test against the brute-force reference join."""

from __future__ import annotations

import argparse
import io
import json
import re

import apache_beam as beam
import pytest
from apache_beam.metrics.execution import MetricKey, MetricsContainer
from apache_beam.metrics.metric import MetricResult
from apache_beam.metrics.metricbase import MetricName
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.worker import statesampler
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.counters import CounterFactory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.summary import print_summary
from transforms.dead_letter import DEAD_LETTER
from transforms.join import (EARLY_FIRING_S, JOIN_GAP_S, LATE_NAMESPACE, LATE_SUFFIX,
                             JoinHostAttacks, _counted, attack_event_id, clock_hint, late_row,
                             reference_join)

T0 = 1_700_000_000 - 1_700_000_000 % 60  # a multiple of the window period, to aim at edges


def scored(stream: str, machine: int, cmd_pid: str, ts: int, attack: bool = True) -> dict:
  return {'machine': machine, 'CMD_PID': cmd_pid, 'ts': ts, 'prediction': int(attack),
          'uuid': f'{stream}-{machine}-{cmd_pid}-{ts}', 'score': 0.9 if attack else 0.1,
          'model_version': 'v1'}


def keyed(record: dict) -> TimestampedValue:
  """A scored record -> its TestStream element: (its stream, (join key, record)) at its ts."""
  stream = record['uuid'].split('-', 1)[0]
  return TimestampedValue((stream, ((record['machine'], record['CMD_PID']), record)),
                          record['ts'])


def hint(stream: str, earliest: int, newest: int) -> TimestampedValue:
  """The TestStream element of a clock hint: a batch of ``stream`` spanning the two times."""
  return TimestampedValue((stream, clock_hint(earliest, newest).value), newest)


def assert_join_emits(arrivals: list[tuple[str, dict, int]], expected_ids) -> None:
  """Feeds (stream, record, watermark before it) in order through JoinHostAttacks, each record
  after its clock hint as the pipeline sends them (transforms/detect.py), and checks that the
  emitted event ids are exactly ``expected_ids``: each once, none missing."""
  stream, current = TestStream(), None
  for kind, record, watermark in arrivals:
    if current is None or watermark > current:  # TestStream wants it strictly increasing
      stream, current = stream.advance_watermark_to(watermark), watermark
    stream = stream.add_elements([hint(kind, record['ts'], record['ts']), keyed(record)])
  assert_stream_joins_to(stream.advance_watermark_to_infinity(), expected_ids)


def assert_stream_joins_to(stream: TestStream, expected_ids, late_uuids=()) -> None:
  """Runs a TestStream of (stream, keyed record or clock hint) through JoinHostAttacks (a
  ``network`` stream's hints on its ``clock`` input): exactly ``expected_ids`` come out, and
  exactly the records of ``late_uuids`` are dead letters (stage ``join``)."""
  options = PipelineOptions()
  options.view_as(StandardOptions).streaming = True
  streams = ('process', 'memory', 'network')
  with TestPipeline(options=options) as pipeline:
    tagged = pipeline | stream
    process, memory, network = tagged | beam.Partition(
        lambda e, n: streams.index(e[0]), len(streams))
    joined = ({'process': process | 'P' >> beam.Values(),
               'memory': memory | 'M' >> beam.Values(),
               'clock': network | 'N' >> beam.Values()} | JoinHostAttacks())
    assert_that(joined['attacks'] | beam.Map(lambda row: row['event_id']),
                equal_to(list(expected_ids)))
    # Their count: test_each_late_record_is_counted_under_its_stream.
    assert_that(joined[DEAD_LETTER] | beam.Map(late_summary),
                equal_to([(u.split('-', 1)[0], u) for u in late_uuids]), label='LateRecords')


def late_summary(row: dict) -> tuple:
  """A late dead letter -> (stream, uuid of the record), checking the rest of the row."""
  assert row['stage'] == 'join' and row['error'].startswith('late for the join by ')
  record = json.loads(row['payload'])
  assert row['stream'] == record['uuid'].split('-', 1)[0]
  return row['stream'], record['uuid']


def in_order(records: list[tuple[str, dict]]) -> list[tuple[str, dict, int]]:
  """Arrival in event-time order, the watermark just behind each record."""
  return [(kind, r, r['ts']) for kind, r in sorted(records, key=lambda kr: kr[1]['ts'])]


def test_pairs_within_the_gap_join_once_even_across_window_edges():
  records = [
      ('process', scored('process', 1, 'miner_7', T0 + 5)),
      ('memory', scored('memory', 1, 'miner_7', T0 + 20)),  # same window
      ('process', scored('process', 2, 'nc_9', T0 + 59)),
      ('memory', scored('memory', 2, 'nc_9', T0 + 61)),  # straddles the edge at T0 + 60
      ('process', scored('process', 3, 'sh_1', T0 + 100)),
      ('memory', scored('memory', 3, 'sh_1', T0 + 100 + JOIN_GAP_S)),  # exactly 30 s: no
      ('process', scored('process', 4, 'xm_2', T0 + 150)),
      ('memory', scored('memory', 4, 'xm_2', T0 + 151, attack=False)),  # one side benign: no
      ('process', scored('process', 5, 'a_1', T0 + 200)),
      ('memory', scored('memory', 5, 'b_1', T0 + 200)),  # another program: no
  ]
  expected = reference_join([r for k, r in records if k == 'process'],
                            [r for k, r in records if k == 'memory'])
  assert len(expected) == 2
  assert_join_emits(in_order(records), expected)


def test_a_record_up_to_20s_late_still_joins_and_nothing_is_repeated():
  p1 = scored('process', 1, 'miner_7', T0 + 65)
  m1 = scored('memory', 1, 'miner_7', T0 + 70)
  p2 = scored('process', 1, 'miner_7', T0 + 72)
  late_m2 = scored('memory', 1, 'miner_7', T0 + 101)
  arrivals = [
      ('process', p1, T0 + 65), ('memory', m1, T0 + 70), ('process', p2, T0 + 72),
      # The watermark passes the end of [T0 + 60, T0 + 120), the canonical window of (p2, m2),
      # which fires on time with p1, m1, p2; m2 then arrives 19 s behind the watermark. The
      # late pane holds all four and must add (p2, m2) without repeating (p1, m1), (p2, m1).
      ('memory', late_m2, T0 + 120),
  ]
  expected = reference_join([p1, p2], [m1, late_m2])
  assert attack_event_id(p2, late_m2) in expected and len(expected) == 3
  assert_join_emits(arrivals, expected)


# A record: (stream, machine, program, ts offset, attack?, arrival delay 0..19 s).
record_strategy = st.tuples(
    st.sampled_from(['process', 'memory']), st.integers(1, 2), st.sampled_from(['a_1', 'b_2']),
    st.integers(0, 150), st.booleans(), st.integers(0, 19))


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(record_strategy, min_size=2, max_size=14, unique_by=lambda r: r[:4]))
def test_join_equals_brute_force_reference_on_out_of_order_late_streams(drawn):
  records = [(kind, scored(kind, machine, program, T0 + offset, attack), delay)
             for kind, machine, program, offset, attack, delay in drawn]
  # Records arrive in order of ts + delay; the watermark follows the newest ts seen, so a
  # delayed record arrives up to 19 s behind the watermark: late, but within the 20 s.
  arrivals, newest = [], 0
  for kind, record, delay in sorted(records, key=lambda r: (r[1]['ts'] + r[2], r[0])):
    arrivals.append((kind, record, newest))
    newest = max(newest, record['ts'])
  expected = reference_join([r for k, r, _ in records if k == 'process'],
                            [r for k, r, _ in records if k == 'memory'])
  assert_join_emits(arrivals, expected)


def test_a_pair_in_an_early_pane_and_the_on_time_pane_is_emitted_once():
  """Processing time passes while the watermark stands still, so the window fires early with
  the pair; it fires again on time (TestStream's end) with the same accumulated pair: one
  event. That the early pane alone gets the pair out, with the watermark stuck for good, is
  what the Flink stream test shows (tests/integration/test_stream_flink.py)."""
  p = scored('process', 1, 'miner_7', T0 + 5)
  m = scored('memory', 1, 'miner_7', T0 + 9)
  stream = (TestStream()
            .advance_watermark_to(T0)
            .add_elements([keyed(p)])
            .add_elements([keyed(m)])
            .advance_processing_time(EARLY_FIRING_S + 1)
            .add_elements([keyed(scored('process', 2, 'x_1', T0 + 6, attack=False))])
            .advance_processing_time(EARLY_FIRING_S + 1))
  assert_stream_joins_to(stream, [attack_event_id(p, m)])


def test_a_record_later_than_allowed_is_a_counted_dead_letter_not_lost():
  """The watermark passes the canonical window of (p, late_m) by more than 20 s: the runner
  would drop late_m at the CoGroupByKey without a trace; the gate makes it a dead letter
  (stage join) and counts it, while the on-time pair still joins once."""
  p = scored('process', 1, 'miner_7', T0 + 65)
  m = scored('memory', 1, 'miner_7', T0 + 70)
  late_m = scored('memory', 1, 'miner_7', T0 + 66)
  stream = (TestStream()
            .advance_watermark_to(T0 + 60)
            .add_elements([keyed(p)])
            .add_elements([keyed(m)])
            # [T0 + 60, T0 + 120) + 20 s lateness is over at T0 + 140.
            .advance_watermark_to(T0 + 145)
            .add_elements([keyed(late_m)])
            .advance_watermark_to_infinity())
  assert_stream_joins_to(stream, [attack_event_id(p, m)], late_uuids=[late_m['uuid']])


def test_a_producer_clock_far_ahead_cannot_make_correct_records_vanish():
  """A Kafka CreateTime years ahead drives the watermark there (KafkaIO's CreateTime policy);
  every host record after it, correct as it is, is behind the watermark. None may vanish:
  each is a dead letter of stage join and counted, and what joined before still joined."""
  p1 = scored('process', 1, 'miner_7', T0 + 5)
  m1 = scored('memory', 1, 'miner_7', T0 + 9)
  after = [scored('process', 2, 'nc_9', T0 + 12), scored('memory', 2, 'nc_9', T0 + 14),
           scored('process', 3, 'sh_1', T0 + 20)]
  stream = (TestStream()
            .advance_watermark_to(T0)
            .add_elements([keyed(p1)])
            .add_elements([keyed(m1)])
            .advance_watermark_to(T0 + 10)
            .advance_watermark_to(T0 + 30 * 365 * 86_400))  # thirty years ahead
  for record in after:
    stream = stream.add_elements([keyed(record)])
  assert_stream_joins_to(stream.advance_watermark_to_infinity(), [attack_event_id(p1, m1)],
                         late_uuids=[r['uuid'] for r in after])


def test_the_gate_never_passes_what_the_windows_would_drop():
  """A record behind the watermark by more than its window and the 20 s is a dead letter,
  and exactly the others join (the brute-force reference over them): nothing in between."""
  records = [scored('process', 1, 'a_1', T0 + 10), scored('memory', 1, 'a_1', T0 + 12),
             scored('process', 1, 'a_1', T0 + 40), scored('memory', 1, 'a_1', T0 + 70),
             scored('process', 1, 'a_1', T0 + 75)]
  # The first two on time; the third 45 s behind the watermark (its window [T0, T0 + 60)
  # closed for good at T0 + 80): late; the last two 15 s and 10 s behind: they join.
  arrivals = [('process', records[0], T0), ('memory', records[1], T0 + 5),
              ('process', records[2], T0 + 85), ('memory', records[3], T0 + 85),
              ('process', records[4], T0 + 85)]
  late = {records[2]['uuid']}
  stream, current = TestStream(), None
  for kind, record, watermark in arrivals:
    if current is None or watermark > current:
      stream, current = stream.advance_watermark_to(watermark), watermark
    stream = stream.add_elements([keyed(record)])
  passed = [r for r in records if r['uuid'] not in late]
  expected = reference_join([r for r in passed if r['uuid'].startswith('process')],
                            [r for r in passed if r['uuid'].startswith('memory')])
  assert len(expected) == 2  # (T0 + 10, T0 + 12) and (T0 + 75, T0 + 70)
  assert_stream_joins_to(stream.advance_watermark_to_infinity(), expected, late_uuids=late)


def test_each_late_record_is_counted_under_its_stream():
  """The step on the late branch counts into JoinHostAttacks/<stream>_late_for_join. (Run
  directly in a metrics container: with TestStream this DirectRunner commits only the first
  bundle's counts of a step.)"""
  container = MetricsContainer('CountLate')
  sampler = statesampler.StateSampler('', CounterFactory())
  statesampler.set_current_tracker(sampler)
  sampler.start()
  try:
    with sampler.scoped_state('CountLate', 'process', metrics_container=container):
      rows = [late_row('memory', scored('memory', 1, 'a_1', T0), 30.0) for _ in range(3)]
      assert [_counted(row, 'memory') for row in rows] == rows
      _counted(late_row('process', scored('process', 1, 'a_1', T0), 30.0), 'process')
  finally:
    sampler.stop()
    statesampler.set_current_tracker(None)
  counters = {key.metric.name: value for key, value in container.get_cumulative().counters.items()}
  assert counters == {f'memory{LATE_SUFFIX}': 3, f'process{LATE_SUFFIX}': 1}
  assert LATE_NAMESPACE == 'JoinHostAttacks'


def test_the_run_summary_shows_records_late_for_the_join():
  class Counted:  # what a runner's result reports, reduced to the counters
    state = 'DONE'

    def metrics(self):
      return self

    def query(self, _):
      key = lambda name: MetricKey('step', MetricName(LATE_NAMESPACE, name))
      return {'counters': [MetricResult(key(f'memory{LATE_SUFFIX}'), 4, 4),
                           MetricResult(key(f'process{LATE_SUFFIX}'), 2, 2)]}

  out = io.StringIO()
  print_summary(Counted(), argparse.Namespace(output='/tmp/out'), out=out)
  assert 'late for the host join (dead letters, stage join): memory 4, process 2' in (
      out.getvalue())
  assert re.search(r'memory\s+0\s+0\s+4\n', out.getvalue())


def test_a_fast_catch_up_with_rare_attacks_keeps_the_clock_at_the_watermark():
  """A replay moves the watermark ten minutes in moments while no attack is flagged; the
  stream's other records tell the clock where they are (one hint per batch), so it climbs in
  fine steps instead of doubling past the watermark, and the next attacks, on time, join."""
  p1 = scored('process', 1, 'miner_7', T0 + 5)
  m1 = scored('memory', 1, 'miner_7', T0 + 9)
  p2 = scored('process', 1, 'miner_7', T0 + 595)
  m2 = scored('memory', 1, 'miner_7', T0 + 597)
  stream = TestStream().advance_watermark_to(T0).add_elements([keyed(p1), keyed(m1)])
  for k in range(1, 21):  # batches of unflagged records, 30 s of event time each
    stream = (stream.add_elements([hint(kind, T0 + 30 * k - 30, T0 + 30 * k)
                                   for kind in ('process', 'memory')])
              .advance_watermark_to(T0 + 30 * k - 5))
  stream = stream.add_elements([keyed(p2), keyed(m2)]).advance_watermark_to_infinity()
  assert_stream_joins_to(stream, [attack_event_id(p1, m1), attack_event_id(p2, m2)])


@pytest.mark.parametrize('mover', ['memory', 'network'])
def test_a_stream_quiet_while_another_moves_the_watermark_still_takes_late_records(mover):
  """All streams share one watermark. While the host streams are quiet, another stream's
  batches (memory's or the network's, flagged or not) move it three minutes on in moments;
  their hints keep the process clock in fine steps, so a process record 5 s behind the watermark
  still joins (without them the clock doubled past the watermark and dead-lettered it)."""
  p1 = scored('process', 1, 'miner_7', T0 + 5)
  m1 = scored('memory', 1, 'miner_7', T0 + 9)
  p2 = scored('process', 1, 'miner_7', T0 + 175)
  m2 = scored('memory', 1, 'miner_7', T0 + 177)
  stream = TestStream().advance_watermark_to(T0).add_elements([keyed(p1), keyed(m1)])
  for k in range(1, 7):  # 30 s of event time per batch
    stream = (stream.add_elements([hint(mover, T0 + 30 * k - 30, T0 + 30 * k)])
              .advance_watermark_to(T0 + 30 * k))
  stream = stream.add_elements([keyed(p2), keyed(m2)]).advance_watermark_to_infinity()
  assert_stream_joins_to(stream, [attack_event_id(p1, m1), attack_event_id(p2, m2)])
