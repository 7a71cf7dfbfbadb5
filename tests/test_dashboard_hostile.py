"""The dashboard against hostile data: forged alerts (anyone who can produce to the alerts
topic) and forged Parquet files (anyone who can write into the output folders). Each forged
row is either aggregated with bounded, valid values or counted as rejected with a reason;
nothing raises, nothing grows without bound, and the JSON the page reads stays finite and
valid. The real aggregation, the real Parquet reader and the real HTTP server are used.
"""

from __future__ import annotations

import datetime
import json
import os
import random
import time
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dashboard import aggregate
from dashboard.aggregate import (AlertStore, AttackStore, Bounds, CappedCounter,
                                 DeadLetterStore, WindowedTopK)
from dashboard.server import Dashboard, encode_json
from dashboard.sources import ParquetLimits, ParquetScanner, parse_alert_message
from schemas.outputs import ALERT_SCHEMA
from tests.helpers import (MALICIOUS, deep_json, dt_utc, forged_alerts, kafka_message,
                           sample_attack_row, sample_network_alert)

UTC = datetime.timezone.utc


def test_forged_alert_fields_are_rejected_or_bounded():
  now = time.time()
  store = AlertStore(capacity=5000)
  results = {'added': 0, 'duplicate': 0, 'invalid': 0}
  for alert in forged_alerts(now):
    results[store.add(alert, 'kafka', received_at=now, now=now)] += 1
  snap = store.snapshot(now, limit=5000)
  rejected = snap['rejected']
  assert results['invalid'] == rejected['total'] == snap['counts']['invalid'] > 50
  reasons = dict(rejected['by_reason'])
  assert reasons, rejected
  assert any('outside the time window' in r for r in reasons)
  assert any(r.startswith('score: ') for r in reasons)
  assert any(r.startswith('machine: ') for r in reasons)
  assert not any(r.startswith('unreadable') for r in reasons), reasons  # no unexpected error
  assert len(rejected['recent']) <= 10
  for r in rejected['recent']:
    assert r['preview'] is None or len(r['preview']) <= 160
  window = (now - store.bounds.max_age_s, now + store.bounds.max_future_s)
  for row in snap['recent']:
    assert row['score'] is None or 0 <= row['score'] <= 1
    for t in ('event_time', 'processing_time'):
      assert row[t] is None or window[0] <= row[t] <= window[1], (t, row[t])
    assert row['machine'] is None or isinstance(row['machine'], (int, str))
    for field in ('program', 'service', 'site', 'model_version', 'protocol_type', 'kind'):
      assert row[field] is None or (isinstance(row[field], str)
                                    and len(row[field]) <= aggregate.FIELD_LIMIT), field
    assert row['severity'] in aggregate.SEVERITIES
  assert set(snap['totals_by_kind']) <= {'network_anomaly', 'host_attack', aggregate.OTHER}
  body = encode_json(snap)
  assert b'<' not in body  # markup is escaped; NaN as a bare token would fail below
  json.loads(body, parse_constant=lambda c: pytest.fail(f'non-finite {c} in JSON'))


def test_the_same_id_with_other_content_hides_nothing():
  now = time.time()
  store = AlertStore()
  real = json.loads(kafka_message(sample_network_alert(1, now, 0.99))[1])
  forged = dict(real, score=0.1, details='nothing to see')
  assert store.add(forged, now=now) == 'added'  # sent first, with the real alert's id
  assert store.add(real, now=now) == 'added'  # still shown
  assert store.add(dict(real), now=now) == 'duplicate'  # a replay of the same content
  snap = store.snapshot(now)
  assert [r['score'] for r in snap['recent']] == [0.99, 0.1]
  assert snap['recent'][0]['key'] != snap['recent'][1]['key']
  assert store.get_by_key(snap['recent'][0]['key'])['details'] == real['details']
  # The Parquet copy of a Kafka alert (datetimes instead of text) is the same alert.
  parquet_copy = sample_network_alert(2, now, 0.8)
  kafka_copy = json.loads(kafka_message(parquet_copy)[1])
  assert store.add(kafka_copy, 'kafka', now=now) == 'added'
  assert store.add(parquet_copy, 'parquet', now=now) == 'duplicate'


def test_deep_and_huge_messages_are_rejected_before_parsing():
  now = time.time()
  store = AlertStore()
  for value, reason in ((deep_json(10_000).encode(), 'not JSON'),
                        (('{"kind": "network_anomaly", "details": ' + deep_json(200) + '}').encode(),
                         'nested too deep'),
                        (b'{"kind": "' + b'x' * 2_000_000 + b'"}', 'too large'),
                        (b'\xff\xfe not json', 'not JSON'),
                        (None, 'empty')):
    assert parse_alert_message(store, value, 'kafka', now, max_bytes=65536) == 'invalid', reason
    assert dict(store.rejections.by_reason.most_common(20)).get(reason), (reason, store.rejections.snapshot())
  assert store.rejections.total == 5 and len(store) == 0


def test_cardinality_flood_cannot_lock_out_a_frequent_name():
  """Each minute (of 3), 20,000 distinct forged machine names arrive first; a real machine alerting
  200 times a minute after them is still at the top, and memory stays bounded."""
  start = 1_795_000_020.0
  MINUTES = 3  # pylint: disable=invalid-name
  top = WindowedTopK(minutes=60, max_keys_per_minute=500)
  tracemalloc.start()
  for minute in range(MINUTES):
    t = start + minute * 60
    for i in range(20_000):
      top.add(t + i * 0.001, f'forged-{minute}-{i}', now=t)
    for _ in range(200):
      top.add(t + 30, 'real-machine-7', now=t + 30)
  _, peak = tracemalloc.get_traced_memory()
  tracemalloc.stop()
  now = start + MINUTES * 60 - 1
  best = top.top(3, now)
  assert best[0][0] == aggregate.OTHER
  # Its count may include a few sightings the sketch over-attributes to it, never fewer.
  assert best[1][0] == 'real-machine-7' and MINUTES * 200 <= best[1][1] <= MINUTES * 250, best
  # Totals stay exact: every add is counted once, under its name or under (other).
  assert sum(n for _, n in top.top(100_000, now)) == MINUTES * 20_200
  assert len(top) <= MINUTES * 501
  assert peak < 40_000_000, peak


def test_capped_counter_keeps_a_frequent_key():
  counter = CappedCounter(capacity=10)
  for i in range(5000):
    counter.add(f'junk-{i}')
    if i % 10 == 0:
      counter.add('real')
  assert len(counter) == 10
  assert counter.most_common(1)[0][0] == 'real'


def test_forged_attack_and_dead_letter_rows():
  now = time.time()
  attacks = AttackStore()
  good = sample_attack_row(1, now, 7, 'xmrig')
  assert attacks.add(good, now=now)
  for field, value in (('processing_time', dt_utc(now + 10 * 365 * 86400)),
                       ('Process_event_time', datetime.datetime(1, 1, 1, tzinfo=UTC)),
                       ('Process_score', 1e308), ('Process_score', float('nan')),
                       ('Process_machine', 2 ** 80), ('Process_machine', [1]),
                       ('Process_CMD_PID', {'a': 1})):
    assert not attacks.add(dict(good, event_id=f'x-{field}', **{field: value}), now=now), field
  assert not attacks.add('not a row', now=now)
  same_id = dict(good, Process_CMD_PID='decoy_1')  # a forged event reusing the real id
  assert attacks.add(same_id, now=now)
  snap = attacks.snapshot(now)
  assert snap['total'] == 2 and snap['rejected']['total'] == 8
  dead = DeadLetterStore(max_stages=5)
  for i in range(1000):
    dead.add({'stream': f'forged-{i}', 'stage': f'stage-{i}', 'error': 'x' * 100_000,
              'payload': b'y' * 5_000_000, 'failed_at': dt_utc(now), 'partition': 2 ** 80,
              'offset': -5}, now=now)
  dead.add({'stream': 'network', 'stage': 'parse', 'failed_at': dt_utc(now + 86400 * 400)}, now=now)
  snap = dead.snapshot(now)
  assert snap['total'] == 1000 and snap['rejected']['total'] == 1
  assert set(snap['per_minute']['series']) == {aggregate.OTHER}
  assert len(snap['by_stage']) <= 5
  row = snap['recent'][0]
  assert row['partition'] is None and row['offset'] is None
  assert len(row['error']) <= aggregate.PREVIEW_LIMIT
  assert len(row['payload_preview']) <= aggregate.PREVIEW_LIMIT


def test_bounds_are_configurable():
  now = time.time()
  store = AlertStore(bounds=Bounds(max_age_s=60, max_future_s=1))
  alert = json.loads(kafka_message(sample_network_alert(1, now - 120, 0.9))[1])
  assert store.add(alert, now=now) == 'invalid'
  assert store.rejections.by_reason.most_common(1)[0][0].endswith('outside the time window')
  assert store.add(json.loads(kafka_message(sample_network_alert(2, now, 0.9))[1]),
                   now=now) == 'added'


def _write(path, table):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  pq.write_table(table, path)


def test_forged_parquet_files_cost_one_row_each_not_the_scanner(tmp_path):
  now = time.time()
  output = str(tmp_path / 'output')
  day = f"dt={dt_utc(now):%Y-%m-%d}"
  good = [sample_network_alert(i, now - i, 0.9) for i in range(3)]
  table = pa.Table.from_pylist(good, ALERT_SCHEMA)
  # Cells pyarrow itself cannot turn into Python: a timestamp in year ~146,000 and invalid
  # UTF-8, next to good rows in the same file.
  micros = [int(now * 1e6)] * 3 + [2 ** 62, int(now * 1e6)]
  ids = [r['event_id'].encode() for r in good] + [b'forged-time', b'forged-\xff\xfe-text']
  forged = pa.table({
      'event_id': pa.array(ids, pa.binary()).view(pa.string()),
      'kind': pa.array(['network_anomaly'] * 5),
      'processing_time': pa.array(micros, pa.int64()).view(pa.timestamp('us', tz='UTC')),
      'score': pa.array([0.9, 0.9, 0.9, 0.9, 0.95]),
      'program': pa.array([b'a', b'b', b'c', b'd', b'\xff' * 50_000], pa.binary()).view(pa.string()),
      # A nested column where text is expected: not read at all.
      'service': pa.array([[1, 2]] * 5, pa.list_(pa.int64())),
  })
  _write(os.path.join(output, 'alerts', day, 'a-good.parquet'), table)
  _write(os.path.join(output, 'alerts', day, 'b-forged.parquet'), forged)
  _write(os.path.join(output, 'alerts', 'dt=9999-12-31', 'far.parquet'), table)  # never listed
  _write(os.path.join(output, 'alerts', 'dt=zzz', 'odd.parquet'), table)
  big = pa.Table.from_pylist([sample_network_alert(100 + i, now, 0.9) for i in range(50)],
                             ALERT_SCHEMA)
  _write(os.path.join(output, 'alerts', day, 'c-many-rows.parquet'), big)
  os.mkfifo(os.path.join(output, 'alerts', day, 'd-fifo.parquet'))  # would block a reader
  with open(os.path.join(output, 'alerts', day, 'e-garbage.parquet'), 'wb') as f:
    f.write(os.urandom(4096))
  store = AlertStore()
  scanner = ParquetScanner(output, store, AttackStore(), DeadLetterStore(),
                           limits=ParquetLimits(max_rows=20))
  started = time.monotonic()
  scanner.tick()
  assert time.monotonic() - started < 10
  status = scanner.status
  assert status['files']['alerts'] == 2, status
  assert status['too_large'] == 2 and status['unreadable'] == 1, status
  snap = store.snapshot(now)
  # 3 good rows, and 4 of the forged file (3 reuse the good ids with other content: shown
  # beside them, hiding nothing; one with invalid UTF-8, decoded with replacement and cut);
  # its year-146,000 row is rejected.
  assert snap['counts']['added'] == 7 and snap['counts']['invalid'] == 1, snap['counts']
  assert snap['rejected']['by_reason'] == [('processing_time: outside the time window', 1)]
  forged_row = next(r for r in snap['recent'] if r['event_id'].startswith('forged-'))
  assert '\ufffd' in forged_row['event_id'] and len(forged_row['program']) <= 256
  assert forged_row['service'] is None
  assert json.loads(encode_json(Dashboard(alerts=store).state()))['alerts']['buffered'] == 7


def test_random_hostile_messages_never_escape_and_stay_fast():
  """Seeded random messages built from hostile atoms, through the Kafka path (bytes ->
  parse_alert_message -> store): every one is added, a duplicate or rejected with a known
  reason (never 'unreadable', the last-resort guard), each within a time budget, and the state
  stays encodable."""
  rng = random.Random(18)
  now = time.time()
  atoms = [None, True, 0, -1, 2 ** 63, 10 ** 300, 1e308, -0.0, 0.5, 'NaN', '', 'x' * 5000,
           MALICIOUS, '\u202e\u0000', '2026-11-23T19:00:00Z', '9999-12-31', now, now * 1000,
           'network_anomaly', 'host_attack', '7', '007', ' 7 ', '1' * 40]
  fields = ['event_id', 'kind', 'score', 'event_time', 'processing_time', 'site',
            'model_version', 'machine', 'program', 'service', 'protocol_type', 'details',
            'extra']

  def value(depth=0):
    roll = rng.random()
    if depth < 40 and roll < 0.15:
      return [value(depth + 1) for _ in range(rng.randint(0, 3))]
    if depth < 40 and roll < 0.25:
      return {rng.choice(fields): value(depth + 1) for _ in range(rng.randint(0, 3))}
    return rng.choice(atoms)

  store = AlertStore()
  slowest = 0.0
  for i in range(3000):
    message = {f: value() for f in rng.sample(fields, rng.randint(0, len(fields)))}
    if rng.random() < 0.7:
      message.update(kind=rng.choice(('network_anomaly', 'host_attack')), processing_time=now)
    raw = json.dumps(message).encode('utf-8', errors='surrogatepass')
    if i % 10 == 0:
      raw = raw[:rng.randint(0, len(raw))]  # cut mid-way
    started = time.perf_counter()
    result = parse_alert_message(store, raw, 'kafka', now)
    slowest = max(slowest, time.perf_counter() - started)
    assert result in ('added', 'duplicate', 'invalid')
  reasons = dict(store.rejections.by_reason.most_common(100))
  assert not [r for r in reasons if r.startswith('unreadable')], reasons
  assert store.counts['added'] > 100 and store.rejections.total > 100
  assert slowest < 0.25, slowest  # generous: the machine is shared; a quadratic path takes seconds
  json.loads(encode_json(Dashboard(alerts=store).state()))


def test_a_compressed_bomb_is_not_read(tmp_path):
  """A few kB on disk that would decompress to megabytes of one column: refused from the
  file's metadata before any row is read."""
  now = time.time()
  output = str(tmp_path / 'output')
  path = os.path.join(output, 'alerts', f"dt={dt_utc(now):%Y-%m-%d}", 'bomb.parquet')
  rows = [dict(sample_network_alert(i, now, 0.9), details=f'{i}' + 'a' * 200_000)
          for i in range(40)]
  os.makedirs(os.path.dirname(path))
  pq.write_table(pa.Table.from_pylist(rows, ALERT_SCHEMA), path, compression='zstd')
  assert os.path.getsize(path) < 200_000
  store = AlertStore()
  scanner = ParquetScanner(output, store, AttackStore(), DeadLetterStore(),
                           limits=ParquetLimits(max_uncompressed_bytes=4_000_000))
  scanner.tick()
  assert scanner.status['too_large'] == 1 and len(store) == 0
  assert 'uncompressed' in scanner.status['last_error']
  # Within the limit, the same file is read (cut to the details limit).
  scanner = ParquetScanner(output, store, AttackStore(), DeadLetterStore())
  scanner.tick()
  assert len(store) == 40
  assert all(len(r['details']) <= aggregate.DETAILS_LIMIT for r in store._recent)  # pylint: disable=protected-access


def test_a_value_repeated_on_every_row_is_not_copied_per_row(tmp_path):
  """500 rows sharing one 200 kB details value: 100 MB if every row got its own copy, a few kB
  in the file (dictionary-encoded). Read, it costs about one copy."""
  now = time.time()
  output = str(tmp_path / 'output')
  path = os.path.join(output, 'alerts', f"dt={dt_utc(now):%Y-%m-%d}", 'repeated.parquet')
  rows = [dict(sample_network_alert(i, now, 0.9), details='b' * 200_000) for i in range(500)]
  os.makedirs(os.path.dirname(path))
  pq.write_table(pa.Table.from_pylist(rows, ALERT_SCHEMA), path, compression='zstd')
  del rows
  store = AlertStore()
  scanner = ParquetScanner(output, store, AttackStore(), DeadLetterStore())
  tracemalloc.start()
  scanner.tick()
  _, peak = tracemalloc.get_traced_memory()
  tracemalloc.stop()
  assert scanner.status['files']['alerts'] == 1 and len(store) == 500
  assert peak < 30_000_000, peak


def test_a_flood_of_files_in_one_folder_does_not_starve_the_others(tmp_path):
  now = time.time()
  output = str(tmp_path / 'output')
  day = f"dt={dt_utc(now):%Y-%m-%d}"
  for i in range(30):
    with open(_mkdirs(os.path.join(output, 'alerts', day, f'junk-{i:03d}.parquet')), 'wb') as f:
      f.write(b'PAR1 not really')
  attacks_path = os.path.join(output, 'attacks', day, 'real.parquet')
  _write(attacks_path, pa.Table.from_pylist([sample_attack_row(1, now, 7, 'xmrig')]))
  attacks = AttackStore()
  scanner = ParquetScanner(output, AlertStore(), attacks, DeadLetterStore(),
                           max_files_per_scan=5)
  scanner.tick()
  assert attacks.total == 1 and scanner.status['unreadable'] == 5
  for _ in range(5):
    scanner.tick()
  assert scanner.status['unreadable'] == 30  # the junk is worked off, each file once, counted


def _mkdirs(path):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  return path
