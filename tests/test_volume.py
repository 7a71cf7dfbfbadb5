"""The volume detector (transforms/volume.py) on the DirectRunner: window edges, a flood that
must not become the baseline, late records, and the same alerts in batch as in a stream."""

from __future__ import annotations

import datetime
import json
import random

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms.window import TimestampedValue

from schemas.outputs import ALERT_SCHEMA
from tests.factories import BASE_TS
from transforms.batch import RecordBatch
from transforms.source import SourceMessage
from transforms.volume import (DetectVolumeAnomalies, VolumeParams, VolumeSurgeFn, size_class,
                               size_range, volume_alert, window_counts)

UTC = datetime.timezone.utc
T0 = BASE_TS - BASE_TS % 10  # a window edge
PARAMS = VolumeParams(window_s=10, baseline_windows=30, min_count=30, ratio=3.0, z=3.0,
                      warmup_windows=3, allowed_lateness_s=60)


def batch(times, service='http', flag='SF', protocol='tcp', site='site-a'):
  """A scored network batch of one record per event time (seconds)."""
  n = len(times)
  return RecordBatch('network', {
      'site': [site] * n,
      'event_time': [datetime.datetime.fromtimestamp(t, UTC) for t in times],
      'protocol_type': [protocol] * n, 'service': [service] * n, 'flag': [flag] * n,
      'prediction': [0] * n},
      [SourceMessage('network', b'{}', 'test', 0, i) for i in range(n)], [None] * n)


def steady(first_window, last_window, per_window=5):
  """``per_window`` http connections in each 10 s window (a normal baseline)."""
  return [batch([T0 + 10 * w + i for i in range(per_window)])
          for w in range(first_window, last_window)]


def run_streaming(stages):
  """``stages``: a list of (watermark, [batches]); the batches are stamped with their
  watermark. Returns the alert rows."""
  events = TestStream()
  for watermark, batches in stages:
    events = events.add_elements([TimestampedValue(b, watermark) for b in batches])
    events = events.advance_watermark_to(watermark)
  events = events.advance_watermark_to_infinity()
  return _run(lambda p: p | events, streaming=True)


def run_batch(batches):
  return _run(lambda p: p | beam.Create(batches, reshuffle=False), streaming=False)


FOUND: list = []  # the DirectRunner runs in this process


def keep(alert):
  FOUND.append(alert)  # a module function: beam.Map(keep) would pickle a copy


def _run(source, streaming):
  FOUND.clear()
  options = PipelineOptions()
  options.view_as(StandardOptions).streaming = streaming
  with TestPipeline(options=options) as pipeline:
    _ = source(pipeline) | DetectVolumeAnomalies(PARAMS) | beam.Map(keep)
  found = list(FOUND)
  # The rows fit alerts/ (its Parquet schema) as they are.
  assert all(set(a) == set(ALERT_SCHEMA.names) for a in found)
  return found


def windows_of(alerts, key):
  return sorted(json.loads(a['details'])['window_start'] for a in alerts
                if json.loads(a['details'])['key'] == key)


def iso(t):
  return datetime.datetime.fromtimestamp(t, UTC).isoformat()


def test_a_surge_is_flagged_in_its_window_and_a_record_at_the_edge_is_in_the_next():
  # 30 ecr_i connections in [T0+100, T0+110), the last at 109.99: min_count is reached.
  inside = batch([T0 + 100 + i * 0.33 for i in range(30)], 'ecr_i', protocol='icmp')
  alerts = run_streaming([(T0 + 100, steady(0, 10)), (T0 + 130, [inside] + steady(10, 13))])
  assert windows_of(alerts, 'icmp/ecr_i/SF') == [iso(T0 + 100)]
  [alert] = [a for a in alerts if a['service'] == 'ecr_i']
  # 29 of them inside and the 30th at 110.0 exactly: it opens the next window, neither surges.
  edge = batch([T0 + 100 + i * 0.33 for i in range(29)] + [T0 + 110.0], 'ecr_i',
               protocol='icmp')
  alerts = run_streaming([(T0 + 100, steady(0, 10)), (T0 + 130, [edge] + steady(10, 13))])
  assert windows_of(alerts, 'icmp/ecr_i/SF') == []
  assert windows_of(alerts, '*') == [iso(T0 + 100)]  # 34 connections against 5: the site's
  assert alert['kind'] == 'volume_anomaly' and alert['service'] == 'ecr_i'
  assert (alert['protocol_type'], alert['flag'], alert['site']) == ('icmp', 'SF', 'site-a')
  [reason] = json.loads(alert['reasons'])
  assert reason['value'] == 30 and reason['feature'] == 'connections per 10 s'
  assert reason['normal_high'] == 0.0 and 'usually 0' in reason['normal']
  assert 0 < alert['score'] < 1


def test_a_long_flood_stays_flagged_and_the_baseline_ignores_it():
  flood = [batch([T0 + 100 + w * 10 + i * 0.02 for i in range(500)], 'private', 'S0')
           for w in range(40)]  # 400 s of a SYN flood
  alerts = run_streaming([(T0 + 100, steady(0, 10)), (T0 + 500, flood + steady(10, 50)),
                          (T0 + 700, steady(50, 70))])
  assert windows_of(alerts, 'tcp/private/S0') == [iso(T0 + 100 + 10 * w) for w in range(40)]
  # The site's whole traffic surges with it (5 -> 505 connections per window), at first; the
  # steady http traffic never does.
  assert windows_of(alerts, '*')[:1] == [iso(T0 + 100)]
  assert windows_of(alerts, 'tcp/http/SF') == []
  # Baselines are per site: site b's flood is flagged at b only, site a's traffic is not.
  b_steady = [batch([T0 + 10 * w + i for i in range(5)], site='b') for w in range(10)]
  b_flood = [batch([T0 + 100 + i * 0.1 for i in range(50)], 'private', 'S0', site='b')]
  alerts = run_streaming([(T0 + 100, steady(0, 10) + b_steady),
                          (T0 + 200, b_flood + steady(10, 20))])
  assert {(a['site'], a['service']) for a in alerts} == {('b', 'private'), ('b', None)}


def test_warmup_windows_only_teach():
  # A site's first three windows teach without flagging: busy keys are not new at the start.
  # The price: a flood already under way when the job starts is learned as its baseline.
  busy = [batch([T0 + w * 10 + i * 0.02 for i in range(300)], 'ecr_i', protocol='icmp')
          for w in range(6)]
  assert run_streaming([(T0 + 60, busy)]) == []
  # Starting in the fourth window, the same traffic is a surge.
  later = busy[3:] + [batch([T0 + w * 10 + i for i in range(3)]) for w in range(3)]
  assert windows_of(run_streaming([(T0 + 60, later)]), 'icmp/ecr_i/SF') == [
      iso(T0 + 30), iso(T0 + 40), iso(T0 + 50)]


def test_late_records_are_evaluated_in_a_late_pane_not_learned():
  late = batch([T0 + 200 + i * 0.1 for i in range(60)], 'telnet', 'RSTO')
  alerts = run_streaming([(T0 + 100, steady(0, 10)), (T0 + 240, steady(10, 24)),
                          (T0 + 250, [late])])  # 30-50 s after its window closed
  [alert] = [a for a in alerts if a['service'] == 'telnet']
  assert all(json.loads(a['details'])['late'] for a in alerts)  # the site's total too
  details = json.loads(alert['details'])
  assert details['late'] is True and details['window_start'] == iso(T0 + 200)
  assert details['count'] == 60


def test_batch_and_stream_give_the_same_alerts_whatever_the_order():
  flood = [batch([T0 + 150 + w * 10 + i * 0.05 for i in range(200)], 'eco_i', protocol='icmp')
           for w in range(5)]
  batches = steady(0, 30) + flood
  streamed = run_streaming([(T0 + 150, steady(0, 15)), (T0 + 300, steady(15, 30) + flood)])
  shuffled = list(batches)
  random.Random(4).shuffle(shuffled)
  batched = run_batch(shuffled)

  def ids(alerts):
    return sorted((a['event_id'], a['details']) for a in alerts)
  assert ids(streamed) == ids(batched) and len(streamed) >= 5


def test_alert_ids_are_per_site_key_and_window():
  a = volume_alert('s', 'tcp/http/SF', 100.0, 50, 1.0, 2.0, 30.0, PARAMS)
  b = volume_alert('s', 'tcp/http/SF', 100.0, 70, 1.0, 2.0, 30.0, PARAMS)
  c = volume_alert('s', 'tcp/http/SF', 110.0, 50, 1.0, 2.0, 30.0, PARAMS)
  assert a['event_id'] == b['event_id'] != c['event_id']


def sized(times, src_bytes, service='http', flag='SF', protocol='tcp'):
  """A batch like :func:`batch` whose records carry ``src_bytes`` (one value or a list)."""
  b = batch(times, service, flag, protocol)
  values = src_bytes if isinstance(src_bytes, list) else [src_bytes] * len(times)
  b.columns['src_bytes'] = values
  return b


def test_a_scan_across_services_is_flagged_once_for_its_protocol_and_flag():
  # 40 SH probes in one window, each to another service: no service surges on its own.
  probes = [batch([T0 + 150 + i * 0.2], f'svc{i}', 'SH') for i in range(40)]
  alerts = run_streaming([(T0 + 150, steady(0, 15)), (T0 + 200, probes + steady(15, 20))])
  assert windows_of(alerts, 'tcp/*/SH') == [iso(T0 + 150)]
  [scan] = [a for a in alerts if json.loads(a['details'])['key'] == 'tcp/*/SH']
  assert (scan['protocol_type'], scan['service'], scan['flag']) == ('tcp', None, 'SH')
  assert 'across services' in json.loads(scan['details'])['what']
  assert not [a for a in alerts if a['service'] and a['service'].startswith('svc')]
  # A flood of one service is that service's surge, not a second one across services.
  flood = [batch([T0 + 150 + i * 0.1 for i in range(60)], 'private', 'SH')]
  alerts = run_streaming([(T0 + 150, steady(0, 15)), (T0 + 200, flood + steady(15, 20))])
  assert windows_of(alerts, 'tcp/private/SH') == [iso(T0 + 150)]
  assert windows_of(alerts, 'tcp/*/SH') == []


def test_a_flood_of_one_request_size_inside_a_busy_key_is_flagged_by_its_share():
  # 200 http requests per window of 200-300 bytes; then one window where 150 of them are
  # 54,540-byte requests: the key's count does not change, its size mix does.
  def normal(w, n=200):
    return sized([T0 + 10 * w + i * 0.05 for i in range(n)],
                 [200 + (i * 7) % 100 for i in range(n)])
  busy = [normal(w) for w in range(15)]
  mixed = sized([T0 + 150 + i * 0.05 for i in range(200)],
                [54540] * 150 + [250] * 50)
  alerts = run_streaming([(T0 + 150, busy), (T0 + 200, [mixed] + [normal(w) for w in
                                                                  range(16, 20)])])
  size = size_class(54540)
  assert windows_of(alerts, f'tcp/http/SF/{size}') == [iso(T0 + 150)]
  assert windows_of(alerts, 'tcp/http/SF') == []
  [alert] = [a for a in alerts if json.loads(a['details']).get('size_class') == size]
  details = json.loads(alert['details'])
  assert details['count'] == 150 and details['parent_count'] == 200
  assert details['src_bytes_low'] <= 54540 <= details['src_bytes_high']
  [reason] = json.loads(alert['reasons'])
  assert reason['value'] == 0.75 and 'src_bytes' in reason['feature']
  assert alert['service'] == 'http' and 0 < alert['score'] < 1
  # Traffic that comes back after a silence (a flood elsewhere ended) rises in every size
  # class together: the key surges, its size mix does not.
  quiet = [normal(w, 5) for w in range(15)]
  alerts = run_streaming([(T0 + 150, quiet), (T0 + 200, [normal(w) for w in range(15, 20)])])
  assert windows_of(alerts, 'tcp/http/SF')[:1] == [iso(T0 + 150)]
  assert not [a for a in alerts if 'size_class' in json.loads(a['details'])]


def test_size_classes_are_half_octaves():
  assert size_class(None) is None and size_class('x') is None and size_class(-1) is None
  assert size_class(float('nan')) is None
  for value in (0, 1, 520, 1032, 1480, 54540, 10 ** 9):
    low, high = size_range(size_class(value))
    assert low <= value <= high
  assert size_class(1032) != size_class(1480)  # smurf's echo replies and pod's large ones


def test_a_flood_of_new_key_names_cannot_grow_the_state_and_still_alerts():
  """A producer inventing a service name per record: a site keeps at most max_keys
  baselines, and a key past the cap is still judged (here: it surges)."""
  params = VolumeParams(window_s=10, min_count=30, warmup_windows=3, max_keys=50)
  surges = VolumeSurgeFn(params)
  state = {'next': None, 'seen': 0, 'keys': {}}
  for w in range(20):
    counts = {f'tcp/made-up-{w}-{i}/SF': 1 for i in range(100)}
    counts['*'] = 100
    list(surges._evaluate('site-a', state, T0 + 10 * w, counts, False))  # pylint: disable=protected-access
    assert len(state['keys']) <= params.max_keys
  flood = {'tcp/yet-another/SF': 400, '*': 400}
  alerts = list(surges._evaluate('site-a', state, T0 + 200, flood, False))  # pylint: disable=protected-access
  assert 'yet-another' not in {k.split('/')[1] for k in state['keys'] if '/' in k}
  assert 'yet-another' in {a['service'] for a in alerts}


def test_a_batch_is_counted_per_site_window_and_key():
  records = (batch([T0 + 1, T0 + 2, T0 + 12], service='http')
             .with_columns(src_bytes=[100.0, 100.0, None]))
  other = batch([T0 + 3], service='smtp', site='site-b').with_columns(src_bytes=[0.0])
  mixed = RecordBatch.concat('network', [records, other])
  counted = {(v.value[0], v.timestamp.micros // 1_000_000): v.value[1]
             for v in window_counts(mixed, 10)}
  size = size_class(100.0)
  assert counted == {
      ('site-a', T0): {'tcp/http/SF': 2, 'tcp/*/SF': 2, f'tcp/http/SF/{size}': 2, '*': 2},
      ('site-a', T0 + 10): {'tcp/http/SF': 1, 'tcp/*/SF': 1, '*': 1},
      ('site-b', T0): {'tcp/smtp/SF': 1, 'tcp/*/SF': 1, 'tcp/smtp/SF/0': 1, '*': 1}}
