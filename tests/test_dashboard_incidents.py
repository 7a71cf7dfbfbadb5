"""The dashboard's incidents and alert reasons (dashboard/aggregate.py): newest state per
incident, hostile rows refused and counted, reasons bounded; and the Parquet scanner reading
incidents/ as the stream job writes it."""

from __future__ import annotations

import json
import time

from dashboard.aggregate import (MAX_REASONS, AlertStore, AttackStore, DeadLetterStore,
                                 IncidentStore, normalize_reasons)
from dashboard.sources import ParquetScanner
from tests.helpers import MALICIOUS, sample_incident_rows, sample_network_alert, write_sample_outputs


def test_each_incident_keeps_its_newest_state():
  now = time.time()
  store = IncidentStore()
  rows = sample_incident_rows(now)
  for row in reversed(rows):  # an older state read after a newer one must not win
    store.add(row, now=now)
  snapshot = store.snapshot(now)
  by_id = {r['incident_id']: r for r in snapshot['recent']}
  assert (by_id['inc-volume']['status'], by_id['inc-volume']['count']) == ('updated', 57)
  assert by_id['inc-volume']['reasons'][0]['feature'] == 'connections per 10 s'
  assert by_id['inc-volume']['top_features'] == ['connections per 10 s']
  assert [r['incident_id'] for r in snapshot['recent']] == ['inc-volume', 'inc-evil', 'inc-back']
  assert (snapshot['open'], snapshot['known'], snapshot['rows']) == (2, 3, 4)


def test_hostile_incident_rows_are_refused_and_counted():
  now = time.time()
  store = IncidentStore()
  good = sample_incident_rows(now)[0]
  hostile = [
      'not an object', {**good, 'incident_id': None}, {**good, 'incident_id': 'x' * 500},
      {**good, 'update_seq': 'one'}, {**good, 'update_seq': True}, {**good, 'status': 'pwned'},
      {**good, 'count': -1}, {**good, 'last_seen': 253402300799.0},
      {**good, 'first_seen': 'yesterday'}, {**good, 'machine': [1, 2]},
  ]
  assert not any(store.add(row, now=now) for row in hostile)
  assert store.snapshot(now)['known'] == 0
  assert store.rejections.snapshot()  # counted by reason
  assert store.add(good, now=now)


def test_reasons_are_bounded_and_only_plain_values():
  many = [{'feature': f'f{i}', 'value': i, 'normal': '0 - 1', 'normal_low': 0,
           'normal_high': 1, 'deviation': 1.0} for i in range(50)]
  assert len(normalize_reasons(json.dumps(many))) == MAX_REASONS
  odd = normalize_reasons([{'feature': 'a', 'value': {'x': 1}, 'normal': ['no'],
                            'deviation': float('nan')}, {'value': 1}, 'text', None,
                           {'feature': MALICIOUS, 'value': MALICIOUS}])
  assert odd[0] == {'feature': 'a', 'value': None, 'normal': None, 'normal_low': None,
                    'normal_high': None, 'deviation': None}
  assert [r['feature'] for r in odd] == ['a', MALICIOUS]  # kept as text: the page escapes it
  assert normalize_reasons('{not json') == [] == normalize_reasons('x' * 100_000)
  assert normalize_reasons(None) == [] == normalize_reasons(7)


def test_alerts_carry_their_reasons_and_flag():
  now = time.time()
  store = AlertStore()
  alert = sample_network_alert(1, now, 0.97)
  assert store.add(alert, 'parquet', now) == 'added'
  row = store.get(alert['event_id'])
  assert row['flag'] == 'SF'
  assert [r['feature'] for r in row['reasons']] == ['src_bytes', 'service']
  assert row['reasons'][0]['normal'] == '0 - 1,032'


def test_the_scanner_reads_incidents(tmp_path):
  now = time.time()
  write_sample_outputs(str(tmp_path), now)
  incidents = IncidentStore()
  scanner = ParquetScanner(str(tmp_path), AlertStore(), AttackStore(), DeadLetterStore(),
                           incidents=incidents)
  scanner.tick()
  assert incidents.snapshot()['known'] == 3
  assert scanner.status['rows']['incidents'] == 4
