"""The alerts dashboard without a browser or a broker: its bounded aggregation, the escaping of
alert content (JSON, HTTP headers, the page's script), the Parquet and registry feeds, and the
CLI. Its sample alerts, outputs and registry are in tests/helpers.py.
"""

from __future__ import annotations

import datetime
import http.client
import json
import os
import re
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dashboard import aggregate
from dashboard.aggregate import (AlertStore, AttackStore, DeadLetterStore, MinuteCounter,
                                 RateTracker, WindowedTopK)
from dashboard.server import Dashboard, encode_json
from dashboard.sources import ModelWatcher, ParquetScanner, Scrubber
from model import registry
from schemas.outputs import ALERT_SCHEMA
from tests.helpers import (MALICIOUS, ROOT, SERVICES, Served, dt_utc, kafka_message,
                           read_dashboard_port, sample_alerts, sample_attack_row,
                           sample_network_alert, stop_dashboard, write_sample_outputs,
                           write_sample_registry)
from transforms.redaction import redact_config

STATIC = os.path.join(ROOT, 'dashboard', 'static')
UTC = datetime.timezone.utc


# ---------- aggregation ----------

def test_severity_from_score_and_kind():
  assert aggregate.severity(0.99) == 'critical'
  assert aggregate.severity(0.9) == 'high'
  assert aggregate.severity(0.75) == 'medium'
  assert aggregate.severity(0.2) == 'low'
  assert aggregate.severity(None) == 'unknown'
  # Two detectors agreed: a host attack is at least high, never downgraded.
  assert aggregate.severity(0.5, 'host_attack') == 'high'
  assert aggregate.severity(0.99, 'host_attack') == 'critical'


def test_to_epoch_accepts_the_formats_alerts_use():
  t = 1_795_000_000.25
  assert aggregate.to_epoch(dt_utc(t)) == pytest.approx(t)
  assert aggregate.to_epoch(dt_utc(t).isoformat()) == pytest.approx(t)
  assert aggregate.to_epoch('2026-11-23T20:00:00Z') == pytest.approx(
      datetime.datetime(2026, 11, 23, 20, tzinfo=UTC).timestamp())
  assert aggregate.to_epoch(datetime.datetime(2026, 1, 1)) == pytest.approx(
      datetime.datetime(2026, 1, 1, tzinfo=UTC).timestamp())  # naive = UTC
  assert aggregate.to_epoch(t * 1000) == pytest.approx(t)  # milliseconds
  for bad in (None, '', 'yesterday', float('nan'), True, {}):
    assert aggregate.to_epoch(bad) is None


def test_minute_counter_window_clamp_and_series_cap():
  now = 1_795_000_000.0
  counter = MinuteCounter(minutes=60, max_series=2)
  assert counter.add(now - 30, 'a', now=now)
  assert counter.add(now - 5 * 60, 'a', 2, now=now)
  assert counter.add(now + 3600, 'b', now=now)  # clock skew: counted now, not in the future
  assert not counter.add(now - 61 * 60, 'a', now=now)  # older than the window
  assert counter.add(now, 'c', now=now)  # a third series: (other)
  snap = counter.snapshot(now, series=('a', 'b'))
  assert len(snap['minutes']) == 60 and snap['minutes'][-1] == int(now // 60) * 60
  assert list(snap['series']) == ['a', 'b', aggregate.OTHER]
  assert snap['series']['a'][-1] == 1 and snap['series']['a'][-6] == 2
  assert snap['series']['b'][-1] == 1 and snap['series'][aggregate.OTHER][-1] == 1
  assert counter.total(now) == 5 and counter.total(now, 1) == 3
  # An hour later everything has left the window and the buckets are gone.
  assert counter.total(now + 3600) == 0
  assert not counter._buckets  # pylint: disable=protected-access


def test_windowed_top_k_expires_and_caps_keys():
  now = 1_795_000_000.0
  top = WindowedTopK(minutes=60, max_keys_per_minute=3)
  for _ in range(5):
    top.add(now - 50 * 60, 'old', now=now)
  for key, n in (('a', 4), ('b', 2), ('c', 1)):
    for _ in range(n):
      top.add(now, key, now=now)
  top.add(now, 'd', now=now)  # fourth key in this minute: counted as (other)
  assert top.top(2, now) == [['old', 5], ['a', 4]]
  later = now + 15 * 60  # 'old' (65 min before `later`) leaves the window
  assert top.top(10, later) == [['a', 4], ['b', 2], [aggregate.OTHER, 1], ['c', 1]]
  assert top.top(10, now + 2 * 3600) == [] and len(top) == 0


def test_alert_store_reads_the_stream_jobs_alert_messages():
  now = time.time()
  store = AlertStore(capacity=50)
  alerts = sample_alerts(now, count=120)
  for alert in alerts:
    _, value = kafka_message(alert)
    assert store.add(json.loads(value), 'kafka', received_at=now, now=now) == 'added'
  # A replay re-sends the same deterministic ids: dropped.
  assert store.add(json.loads(kafka_message(alerts[0])[1]), 'kafka', now=now) == 'duplicate'
  assert store.add('not an alert', 'kafka', now=now) == 'invalid'
  snap = store.snapshot(now, limit=20)
  assert len(snap['recent']) == 20 and snap['buffered'] == 50
  newest = snap['recent'][0]
  assert newest['event_id'] == alerts[-1]['event_id']
  assert 'details' not in newest and newest['details_preview']  # previews only in the table
  assert snap['last_hour'] == 120
  assert sum(snap['totals_by_kind'].values()) == 120
  assert set(snap['per_minute']['series']) >= {'network_anomaly', 'host_attack'}
  assert sum(sum(v) for v in snap['per_minute']['series'].values()) == 120
  assert snap['counts'] == {'added': 120, 'from_kafka': 120, 'duplicate': 1, 'invalid': 1}
  assert snap['top']['service'] and snap['top']['machine'] and snap['top']['program']
  assert snap['model_versions']['network_anomaly']['version'] == '20261123T190000000000Z'
  assert snap['model_versions']['host_attack']['version'].startswith('process:')
  host = next(a for a in alerts if a['kind'] == 'host_attack')
  full = store.get(host['event_id'])
  assert full is None or json.loads(full['details'])['process']  # in the buffer: full details


def test_alert_store_stays_bounded_under_a_flood():
  """Two hours of alerts, 300 per minute, each with a new program and a 50 kB details field:
  memory stays bounded whatever the duration, and adding and snapshotting stay fast (the
  printed rate is what one dashboard process sustains)."""
  start = 1_795_000_020.0  # a minute boundary
  store = AlertStore(capacity=1000, dedup_capacity=20_000)
  t0 = time.perf_counter()
  n = 0
  for minute in range(120):
    for j in range(300):
      n += 1
      when = start + minute * 60 + j * 0.2
      store.add({'event_id': f'e{n}', 'kind': 'network_anomaly' if n % 3 else 'host_attack',
                 'score': (n % 100) / 100, 'machine': n % 5000, 'program': f'p{n}',
                 'service': SERVICES[n % 7], 'processing_time': when, 'details': 'x' * 50_000},
                source='kafka', received_at=when, now=when)
  elapsed = time.perf_counter() - t0
  now = start + 120 * 60 - 1  # the last second of minute 119: the window is minutes 60..119
  t1 = time.perf_counter()
  snap = store.snapshot(now, limit=100)
  snapshot_s = time.perf_counter() - t1
  assert len(store) == 1000
  assert len(store._ids) == 20_000  # pylint: disable=protected-access
  assert len(store._per_kind._buckets) <= 60  # pylint: disable=protected-access
  for counter in store._top.values():  # pylint: disable=protected-access
    assert len(counter._buckets) <= 60  # pylint: disable=protected-access
    assert all(len(b) <= counter.max_keys for b in counter._buckets.values())  # pylint: disable=protected-access
  assert all(len(r.get('details_preview') or '') <= aggregate.PREVIEW_LIMIT for r in snap['recent'])
  assert len(store.get(f'e{n}')['details']) <= aggregate.DETAILS_LIMIT
  assert snap['last_hour'] == 300 * 60
  assert len(encode_json(snap)) < 2_000_000
  print(f'[timing] {n} alerts added in {elapsed:.2f} s ({n / elapsed:,.0f}/s), snapshot '
        f'{snapshot_s * 1000:.1f} ms')
  assert elapsed < 20 and snapshot_s < 0.5


def test_attack_and_dead_letter_stores():
  now = time.time()
  attacks = AttackStore(capacity=5)
  for i in reversed(range(8)):  # oldest first, as files are read
    assert attacks.add(sample_attack_row(i, now - 60 * i, 7, 'xmrig'), now=now)
  assert not attacks.add(sample_attack_row(0, now, 7, 'xmrig'), now=now)  # same event id
  snap = attacks.snapshot(now)
  assert snap['total'] == 8 and len(snap['recent']) == 5 and snap['last_hour'] == 8
  assert snap['recent'][0]['program'] == 'xmrig_4000' and snap['recent'][0]['machine'] == 7
  dead = DeadLetterStore(capacity=3)
  for i in range(5):
    dead.add({'stream': 'process', 'stage': 'clean', 'error': MALICIOUS * 50,
              'payload': b'\xff\xfe' + MALICIOUS.encode(), 'failed_at': dt_utc(now - i)}, now=now)
  snap = dead.snapshot(now)
  assert snap['total'] == 5 and len(snap['recent']) == 3 and snap['last_5_minutes'] == 5
  assert snap['by_stage'] == [('process / clean', 5)]
  assert len(snap['recent'][0]['error']) <= aggregate.PREVIEW_LIMIT
  assert snap['recent'][0]['payload_preview'].startswith('\ufffd')


def test_rate_tracker():
  rates = RateTracker(history=10)
  assert rates.record(100.0, {'t': 1000}) == {}
  assert rates.record(102.0, {'t': 1500, 'u': 10}) == {'t': 250.0, 'u': 0.0}
  assert rates.record(104.0, {'t': 10, 'u': 30}) == {'t': 0.0, 'u': 10.0}  # t was recreated
  for i in range(30):
    rates.record(106.0 + i, {'t': 10 + i, 'u': 30})
  snap = rates.snapshot(max_points=4)
  assert len(snap['history']) <= 4 and snap['rates'] == {'t': 1.0, 'u': 0.0}


# ---------- escaping and HTTP ----------

def test_json_carries_no_markup_and_round_trips():
  value = {'program': MALICIOUS, 'details': '</script><b>&amp;', 'score': float('nan')}
  body = encode_json(value)
  assert b'<' not in body and b'>' not in body and b'&' not in body
  assert json.loads(body) == {'program': MALICIOUS, 'details': '</script><b>&amp;', 'score': None}


def test_page_script_never_inserts_html():
  with open(os.path.join(STATIC, 'app.js'), encoding='utf-8') as f:
    # The code, without its comment lines (which name the sinks it must not use).
    script = '\n'.join(line for line in f if not line.strip().startswith('//'))
  for sink in ('innerHTML', 'outerHTML', 'insertAdjacentHTML', 'document.write', 'eval(',
               'new Function', 'setAttribute(\'style\'', 'srcdoc'):
    assert sink not in script, sink
  with open(os.path.join(STATIC, 'index.html'), encoding='utf-8') as f:
    page = f.read()
  # No inline script or handler, no inline style, nothing from another origin.
  assert re.findall(r'<script(?![^>]*\bsrc=)', page) == []
  assert not re.search(r'\son[a-z]+\s*=', page)
  assert ' style=' not in page and '<style' not in page
  assert not re.search(r'(src|href)="(https?:)?//', page)


@pytest.fixture
def served():
  now = time.time()
  dashboard = Dashboard(table_rows=10)
  dashboard.alerts.add(sample_network_alert(1, now, 0.97, program=MALICIOUS, details=MALICIOUS),
                       'kafka', now=now)
  dashboard.alerts.add(json.loads(kafka_message(sample_network_alert(2, now, 0.8))[1]),
                       'kafka', now=now)
  server = Served(dashboard)
  yield server
  server.close()


def test_server_headers_escaping_and_read_only(served):
  response, body = served.request('GET', '/')
  assert response.status == 200 and b'/static/app.js' in body
  csp = response.getheader('Content-Security-Policy')
  assert "script-src 'self'" in csp and "default-src 'none'" in csp
  assert 'unsafe-inline' not in csp and 'unsafe-eval' not in csp
  assert "frame-ancestors 'none'" in csp
  assert response.getheader('X-Content-Type-Options') == 'nosniff'
  for path in ('/static/app.js', '/static/app.css', '/static/favicon.svg'):
    response, body = served.request('GET', path)
    assert response.status == 200 and body, path
  response, body = served.request('GET', '/api/state')
  assert response.status == 200
  assert response.getheader('Content-Type').startswith('application/json')
  assert response.getheader('Cache-Control') == 'no-store'
  assert b'<' not in body
  state = json.loads(body)
  programs = [r['program'] for r in state['alerts']['recent']]
  assert MALICIOUS in programs
  assert set(state) >= {'alerts', 'attacks', 'dead_letters', 'input', 'feeds', 'info', 'now'}
  event_id = state['alerts']['recent'][-1]['event_id']
  response, body = served.request('GET', f'/api/alert?id={event_id}')
  assert response.status == 200 and json.loads(body)['details'] == MALICIOUS
  assert served.request('GET', '/api/alert?id=nope')[0].status == 404
  assert served.request('GET', '/../../etc/passwd')[0].status == 404
  assert served.request('GET', '/static/../server.py')[0].status == 404
  for method in ('POST', 'PUT', 'DELETE', 'PATCH'):
    response, _ = served.request(method, '/api/state')
    assert response.status == 405 and response.getheader('Allow') == 'GET, HEAD'
  # Bound to loopback: another Host name (a DNS-rebinding page) gets nothing.
  assert served.request('GET', '/api/state', host='evil.example:8050')[0].status == 403
  assert served.request('GET', '/api/state', host=f'localhost:{served.port}')[0].status == 200
  assert served.request('HEAD', '/healthz')[0].status == 200


# ---------- feeds ----------

def test_parquet_scanner_reads_each_new_file_once(tmp_path):
  now = time.time()
  output = str(tmp_path / 'output')
  write_sample_outputs(output, now, attacks=6, dead_letters=4)
  alerts_dir = tmp_path / 'output' / 'alerts' / f"dt={dt_utc(now):%Y-%m-%d}"
  alerts_dir.mkdir(parents=True)
  rows = [sample_network_alert(i, now - i, 0.9) for i in range(5)]
  pq.write_table(pa.Table.from_pylist(rows, ALERT_SCHEMA), str(alerts_dir / 'a.parquet'))
  (alerts_dir / '.b.parquet.inprogress').write_bytes(b'half a file')
  old = alerts_dir / 'old.parquet'
  pq.write_table(pa.Table.from_pylist(rows[:1], ALERT_SCHEMA), str(old))
  os.utime(old, (now - 7200, now - 7200))  # before the look-back window
  alerts, attacks, dead = AlertStore(), AttackStore(), DeadLetterStore()
  scanner = ParquetScanner(output, alerts, attacks, dead, lookback_minutes=60)
  scanner.tick()
  assert len(alerts) == 5 and attacks.total == 6 and dead.total == 4
  status = scanner.status
  assert status['files'] == {'alerts': 1, 'attacks': 1, 'dead_letter': 1}
  assert status['rows'] == {'alerts': 5, 'attacks': 6, 'dead_letter': 4}
  scanner.tick()  # nothing new
  assert len(alerts) == 5 and attacks.total == 6 and dead.total == 4
  (alerts_dir / 'broken.parquet').write_bytes(b'not parquet')
  pq.write_table(pa.Table.from_pylist([sample_network_alert(9, now, 0.99)], ALERT_SCHEMA),
                 str(alerts_dir / 'c.parquet'))
  scanner.tick()
  assert len(alerts) == 6 and scanner.status['unreadable'] == 1
  assert 'broken.parquet' in scanner.status['last_error']
  # A missing output folder is not an error: the job has not written yet.
  empty = ParquetScanner(str(tmp_path / 'nothing'), AlertStore(), AttackStore(), DeadLetterStore())
  empty.tick()


def test_model_watcher_reads_the_registry(tmp_path):
  versions = write_sample_registry(str(tmp_path))
  watcher = ModelWatcher(str(tmp_path))
  watcher.tick()
  detectors = watcher.status['detectors']
  assert {d: s['version'] for d, s in detectors.items()} == versions
  assert detectors['network']['metrics']['roc_auc'] == 0.991
  assert detectors['network']['training_rows'] == 48_210
  empty = ModelWatcher(str(tmp_path / 'none'))
  empty.tick()
  assert empty.status['detectors'] == {'network': None, 'process': None, 'memory': None}


def test_secrets_are_redacted_and_scrubbed():
  config = {'security.protocol': 'SASL_SSL', 'sasl.password': 'hunter2-secret',
            'ssl.key.password': 'k3y-pass', 'sasl.username': 'analyst'}
  assert redact_config(config) == {'security.protocol': 'SASL_SSL', 'sasl.password': '***',
                                   'ssl.key.password': '***', 'sasl.username': 'analyst'}
  scrub = Scrubber(config)
  assert scrub('Invalid value "hunter2-secret" for sasl.password') == (
      'Invalid value "***" for sasl.password')


# ---------- CLI ----------

def test_cli_help_documents_every_flag():
  from pipelines import dashboard as cli
  parser = cli.parser()
  shown = subprocess.run([sys.executable, '-m', 'pipelines.dashboard', '--help'], cwd=ROOT,
                         capture_output=True, text=True, check=True, timeout=60).stdout
  for action in parser._actions:  # pylint: disable=protected-access
    if action.option_strings and action.dest != 'help':
      assert action.option_strings[0] in shown
      assert action.help, action.dest
  for flag in ('--bootstrap_servers', '--alerts_topic', '--from_beginning', '--output',
               '--model_dir', '--host', '--port', '--kafka_config'):
    assert flag in shown


def test_kafka_config_precedence(tmp_path):
  from pipelines.dashboard import kafka_client_config
  props = tmp_path / 'client.properties'
  props.write_text('security.protocol=SASL_SSL\nsasl.password=from-file\n')
  config = kafka_client_config(['sasl.username=me'], str(props),
                               environ={'DASHBOARD_KAFKA_SASL_PASSWORD': 'from-env',
                                        'KAFKA_CLIENT_SASL_JAAS_CONFIG': 'not ours'})
  assert config == {'security.protocol': 'SASL_SSL', 'sasl.password': 'from-env',
                    'sasl.username': 'me'}


def test_cli_serves_prints_url_and_never_prints_secrets(tmp_path):
  """Starts the real CLI against a closed Kafka port: it prints its URL, serves well-formed
  state, stops cleanly on SIGTERM, and the secrets given by flag and by environment are in
  none of its output nor in the served state."""
  env = dict(os.environ, DASHBOARD_KAFKA_SSL_KEY_PASSWORD='env-secret-123')
  proc = subprocess.Popen(
      [sys.executable, '-m', 'pipelines.dashboard', '--port', '0', '--bootstrap_servers',
       '127.0.0.1:9', '--kafka_config', 'sasl.password=flag-secret-456', '--kafka_config',
       'security.protocol=plaintext', '--output', str(tmp_path / 'out'),
       '--model_dir', str(tmp_path / 'models'), '--scan_interval_s', '0.5'],
      cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  lines = []
  try:
    # Warnings (a secret given as a flag) may come first.
    port = read_dashboard_port(proc, lines, max_lines=20)
    assert port, lines
    deadline = time.time() + 15
    state = None
    while time.time() < deadline:
      conn = http.client.HTTPConnection('127.0.0.1', port, timeout=5)
      conn.request('GET', '/api/state')
      state = json.loads(conn.getresponse().read())
      conn.close()
      if state['feeds']['parquet']['last_ok'] and state['feeds']['models']['last_ok']:
        break
      time.sleep(0.2)
    assert state['info']['kafka_settings'] == ['sasl.password', 'security.protocol',
                                               'ssl.key.password']
    assert state['feeds']['parquet']['state'] == 'ok'
    served = json.dumps(state)
    assert 'flag-secret-456' not in served and 'env-secret-123' not in served
  finally:
    output = stop_dashboard(proc, lines)
  assert proc.returncode == 0, output
  assert 'flag-secret-456' not in output and 'env-secret-123' not in output
  assert 'sasl.password=***' in output, output
  assert 'dashboard: stopped' in output, output


def test_model_watcher_shows_the_newest_version_that_verifies(tmp_path):
  versions = write_sample_registry(str(tmp_path))
  # A newer folder that is not signed: the stream would refuse it, so the page must not show it.
  unsigned = os.path.join(str(tmp_path), 'network', '20261124T000000000000Z')
  os.makedirs(unsigned)
  with open(os.path.join(unsigned, registry.MANIFEST_FILE), 'w', encoding='utf-8') as f:
    json.dump({'detector': 'network', 'version': '20261124T000000000000Z'}, f)
  watcher = ModelWatcher(str(tmp_path))
  watcher.tick()
  network = watcher.status['detectors']['network']
  assert network['version'] == versions['network']
  assert network['refused_newer'] == '20261124T000000000000Z'
  # Without the readers' public key nothing verifies, and the page says why.
  keyless = ModelWatcher(str(tmp_path), public_key=str(tmp_path / 'absent.pub'))
  keyless.tick()
  assert all('absent.pub' in s['error'] for s in keyless.status['detectors'].values())
