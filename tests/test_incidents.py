"""Incident grouping (transforms/incidents.py) on the DirectRunner with TestStream: the quiet
gap's edge, bounded updates, late alerts, separate keys, and the same incidents and rows on a
replay whatever the arrival order."""

from __future__ import annotations

import datetime
import json
import random

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue

from schemas.outputs import INCIDENT_SCHEMA
from tests.factories import BASE_TS
from transforms.incidents import GroupIncidents, group_key, incident_message
from transforms.volume import VolumeParams, volume_alert

UTC = datetime.timezone.utc
T0 = BASE_TS
FOUND: list = []


def keep(row):
  FOUND.append(row)  # a module function: beam.Map(FOUND.append) would pickle a copy


def alert(t, n=0, service='http', flag='SF', kind='network_anomaly', score=0.8, reasons=None):
  """An alert row as transforms/alerts.py makes them, at T0 + t."""
  return {
      'event_id': f'{kind}-{service}-{t}-{n}', 'kind': kind,
      'event_time': datetime.datetime.fromtimestamp(T0 + t, UTC),
      'processing_time': datetime.datetime.now(UTC), 'site': 'lab', 'score': score,
      'model_version': 'v1', 'machine': 3 if kind == 'host_attack' else None,
      'program': 'miner_42' if kind == 'host_attack' else None,
      'service': service, 'protocol_type': 'tcp', 'flag': flag, 'details': '{}',
      'reasons': json.dumps(reasons if reasons is not None else [
          {'feature': 'src_bytes', 'value': 1, 'normal_low': 2, 'normal_high': 3,
           'normal': '2 - 3', 'deviation': 1.0}]),
  }


def run_streaming(stages, gap_s=60, update_s=30):
  """``stages``: (watermark, [alerts]) in order; returns the incident rows."""
  events = TestStream()
  for watermark, alerts in stages:
    events = events.add_elements(
        [TimestampedValue(a, a['event_time'].timestamp()) for a in alerts])
    events = events.advance_watermark_to(T0 + watermark)
  events = events.advance_watermark_to_infinity()
  return _run(lambda p: p | events, True, gap_s, update_s)


def run_batch(alerts, gap_s=60, update_s=30):
  return _run(lambda p: p | beam.Create(alerts, reshuffle=False), False, gap_s, update_s)


def _run(source, streaming, gap_s, update_s):
  FOUND.clear()
  options = PipelineOptions()
  options.view_as(StandardOptions).streaming = streaming
  with TestPipeline(options=options) as pipeline:
    _ = source(pipeline) | GroupIncidents(gap_s, update_s) | beam.Map(keep)
  rows = list(FOUND)
  assert all(set(r) == set(INCIDENT_SCHEMA.names) for r in rows)
  return rows


def final(rows):
  """The closed state of each incident, by first_seen."""
  closed = [r for r in rows if r['status'] == 'closed']
  return sorted(closed, key=lambda r: r['first_seen'])


def seconds(when):
  return when.timestamp() - T0


def test_the_quiet_gap_closes_an_incident_and_its_edge_joins():
  # 0, 30, 90 (exactly 60 s after 30: joins), then 151 (61 s after 90: a new incident).
  alerts = [alert(0), alert(30), alert(90), alert(151)]
  rows = run_streaming([(40, alerts[:2]), (200, alerts[2:])])
  first, second = final(rows)
  assert (seconds(first['first_seen']), seconds(first['last_seen']), first['count']) == (
      0, 90, 3)
  assert (seconds(second['first_seen']), second['count']) == (151, 1)
  assert first['incident_id'] != second['incident_id']
  assert [r['status'] for r in rows if r['incident_id'] == first['incident_id']] == [
      'open', 'updated', 'updated', 'closed']
  assert [r['update_seq'] for r in rows if r['incident_id'] == first['incident_id']] == [
      0, 1, 2, 3]
  assert json.loads(first['top_features']) == [{'feature': 'src_bytes', 'alerts': 3}]
  assert json.loads(first['reasons'])[0]['feature'] == 'src_bytes'
  assert (first['kind'], first['service'], first['flag'], first['site']) == (
      'network_anomaly', 'http', 'SF', 'lab')


def test_updates_while_open_are_bounded():
  # One alert a second for 300 s: an opening, an update per 30 s at most, a closing.
  alerts = [alert(t) for t in range(300)]
  rows = run_streaming([(t + 10, alerts[t:t + 10]) for t in range(0, 300, 10)])
  statuses = [r['status'] for r in rows]
  assert statuses[0] == 'open' and statuses[-1] == 'closed'
  assert statuses.count('updated') == 9  # at 30, 60, ..., 270
  assert final(rows)[0]['count'] == 300
  assert final(rows)[0]['severity'] == 'high'  # 100 alerts or more


def test_incidents_are_per_kind_service_and_flag_and_per_machine_program():
  # A connection that did not end normally (REJ, S0, ...) is grouped by its flag across
  # services (a scan or a SYN flood sweeps services): its incident names no service.
  alerts = [alert(0), alert(1, flag='REJ'), alert(2, service='smtp'),
            alert(3, kind='host_attack', service=None, flag=None), alert(4),
            alert(5, service='finger', flag='REJ')]
  closed = final(run_streaming([(100, alerts)]))
  assert sorted((r['kind'], r['service'] or '', r['flag'], r['machine'], r['program'],
                 r['count']) for r in closed) == [
      ('host_attack', '', None, 3, 'miner_42', 1), ('network_anomaly', '', 'REJ', None,
                                                     None, 2),
      ('network_anomaly', 'http', 'SF', None, None, 2),
      ('network_anomaly', 'smtp', 'SF', None, None, 1)]
  assert [r['severity'] for r in closed if r['kind'] == 'host_attack'] == ['high']
  assert group_key(alerts[3]) == 'host_attack|lab|3|miner_42'
  assert group_key(alerts[1]) == group_key(alerts[5]) == 'network_anomaly|lab|*|REJ'


def test_late_alerts_join_the_open_incident_or_make_their_own():
  stages = [
      (100, [alert(50), alert(100)]),
      # 20 s late, within the open incident: joins it.
      (120, [alert(80, 1)]),
      # The incident closes once the watermark is 60 s past its last alert (100).
      (300, []),
      # Late and older than everything still open: an incident of its own, opened and closed.
      (310, [alert(60, 2)]),
  ]
  rows = run_streaming(stages)
  first, late = final(rows)
  assert first['count'] == 3 and seconds(first['last_seen']) == 100
  assert late['count'] == 1 and seconds(late['first_seen']) == 60
  assert [r['status'] for r in rows if r['incident_id'] == late['incident_id']] == [
      'open', 'closed']
  # Nothing was dropped: every alert is counted in exactly one incident.
  assert sum(r['count'] for r in final(rows)) == 4


def test_a_replay_writes_the_same_incidents_and_rows():
  rng = random.Random(7)
  alerts = []
  for start in (0, 200, 500):  # three bursts, two keys
    for i in range(12):
      alerts.append(alert(start + rng.uniform(0, 100), i))
      alerts.append(alert(start + rng.uniform(0, 50), i, service='private', flag='S0'))

  def identity(rows):
    return sorted((r['incident_id'], r['update_seq'], r['status'], r['count'],
                   r['first_seen'], r['last_seen'], r['first_alert_id']) for r in rows)

  in_order = sorted(alerts, key=lambda a: a['event_time'])
  streamed = run_streaming([(t, [a for a in in_order if t - 100 < seconds(a['event_time']) <= t])
                            for t in range(100, 700, 100)])
  shuffled = list(alerts)
  rng.shuffle(shuffled)
  # The same alerts again, in another order within other watermark steps (a restart's replay:
  # nothing behind the watermark, which would be late data), and once more as a batch job.
  steps = (150, 350, 650)
  replayed = run_streaming([
      (t, [a for a in shuffled if low < seconds(a['event_time']) <= t])
      for low, t in zip((-1,) + steps, steps)])
  batched = run_batch(shuffled)
  assert identity(streamed) == identity(replayed) == identity(batched)
  assert len(final(streamed)) == 6
  key, value = incident_message(streamed[0])
  assert key == streamed[0]['incident_id'].encode()
  assert json.loads(value)['update_seq'] == streamed[0]['update_seq']


def test_volume_incidents_are_per_key_across_services_and_per_size_class():
  params = VolumeParams()
  plain = volume_alert('lab', 'tcp/http/SF', 100.0, 900, 10.0, 20.0, 60.0, params)
  size = volume_alert('lab', 'tcp/http/SF/31', 100.0, 700, 0.01, 0.02, 0.1, params,
                      share=0.7, total=1000)
  spread = volume_alert('lab', 'tcp/*/SH', 100.0, 40, 0.0, 0.0, 30.0, params)
  site = volume_alert('lab', '*', 100.0, 1000, 100.0, 200.0, 600.0, params)
  assert group_key(plain) == 'volume_anomaly|lab|tcp|http|SF'
  assert group_key(size) == 'volume_anomaly|lab|tcp|http|SF|size 31'
  assert group_key(spread) == 'volume_anomaly|lab|tcp|*|SH'
  assert group_key(site) == 'volume_anomaly|lab|*|*|*'
  # A size key's alert whose details are not JSON still has a key (its parent's).
  assert group_key({**size, 'details': '{"size_class": '}) == 'volume_anomaly|lab|tcp|http|SF'
