"""The dashboard end to end in a real browser: a real Kafka broker (scripts/kafka.sh, on free
ports, in a temporary data dir), ``python -m pipelines.dashboard`` as a subprocess, alerts
published to the alerts topic with confluent-kafka, and headless Chromium (Debian's package,
driven by Playwright) reading the served page.

Checks: a newly published alert shows in the table within a few seconds; an alert whose
program and details are an HTML/script injection renders as literal text, creates no element
and runs no script (no dialog, no global set, no CSP violation needed); the charts, top lists,
attack events, dead letters, input rates and model versions are drawn; the alert detail shows
its reasons, and the incidents panel each incident's newest state with its reasons. Saves a full-page
screenshot to .run/screenshots/dashboard.png.

Skipped, with the reason, without chromium (scripts/install_browser.sh), Playwright
(pip install playwright; no `playwright install`: the system chromium is used), java or the
Kafka jars (scripts/fetch_jars.sh).
"""

from __future__ import annotations

import gc
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from harness import scripts
from harness.kafka import make_topics, running_broker
from harness.ports import free_port
from tests.helpers import (MALICIOUS, ROOT, forged_alerts, kafka_message, sample_alerts,
                           sample_attack_row, sample_network_alert, write_sample_outputs,
                           write_sample_registry)
from transforms.alerts import host_attack_alert

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get('CHROMIUM', '/usr/bin/chromium')
SCREENSHOT = os.path.join(ROOT, '.run', 'screenshots', 'dashboard.png')
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                 '--disable-background-networking', '--disable-component-update',
                 '--disable-sync', '--disable-dev-shm-usage']
NEW_ALERT_WITHIN_S = 5.0
INPUT_TOPICS = ('sensor_messages', 'process_activity', 'memory_activity')


def _timing(what: str, t0: float) -> None:
  print(f'[timing] {what}: {time.monotonic() - t0:.1f} s', flush=True)


def _require_browser():
  if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
    pytest.skip(f'chromium is not installed ({CHROMIUM}): run scripts/install_browser.sh')
  try:
    import playwright.sync_api  # noqa: F401  pylint: disable=unused-import,import-outside-toplevel
  except ImportError:
    pytest.skip('Playwright for Python is not installed: pip install playwright '
                '(the system chromium is used; no `playwright install` needed)')


@pytest.fixture(scope='module')
def broker(tmp_path_factory):
  """A KRaft broker on free ports in its own data dir; the topics the dashboard reads."""
  _require_browser()
  reason = scripts.missing_kafka()
  if reason:
    pytest.skip(f'{reason} (needed by scripts/kafka.sh)')
  with running_broker(2, run_dir=str(tmp_path_factory.mktemp('kafka'))) as kafka:
    make_topics(kafka.bootstrap, ('alerts',) + INPUT_TOPICS, partitions=2)
    yield kafka.bootstrap


def _get_json(url: str):
  with urllib.request.urlopen(url, timeout=5) as response:
    return json.loads(response.read())


@pytest.fixture(scope='module')
def dashboard(broker, tmp_path_factory):
  """``python -m pipelines.dashboard`` on a free port, reading the broker and sample outputs;
  yields its URL once its alerts consumer has its partitions."""
  work = tmp_path_factory.mktemp('dashboard')
  now = time.time()
  write_sample_outputs(str(work / 'output'), now)
  write_sample_registry(str(work / 'models'))
  log_path = work / 'dashboard.log'
  t0 = time.monotonic()
  with open(log_path, 'w', encoding='utf-8') as log:
    proc = subprocess.Popen(
        [sys.executable, '-m', 'pipelines.dashboard', '--bootstrap_servers', broker,
         '--port', str(free_port()), '--output', str(work / 'output'),
         '--model_dir', str(work / 'models'), '--health_interval_s', '1',
         '--scan_interval_s', '1', '--stream_group_id', STREAM_GROUP],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
  try:
    url = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
      match = re.search(r'Alerts dashboard: (\S+)', log_path.read_text())
      if match:
        url = match.group(1)
        try:
          state = _get_json(url + 'api/state')
          if state['feeds']['alerts'].get('partitions') == 2:
            break
        except OSError:
          pass
      time.sleep(0.2)
    else:
      raise RuntimeError(f'dashboard did not start (exit code {proc.poll()}):\n'
                         f'{log_path.read_text()}')
    _timing('dashboard start (consumer assigned)', t0)
    yield url
  finally:
    proc.terminate()
    try:
      proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
      proc.kill()
    print(log_path.read_text()[-3000:])


STREAM_GROUP = 'stream-job-under-test'


class _InputTraffic(threading.Thread):
  """Messages on the input topics at a varying rate, so the input-rate chart has a shape, and a
  stand-in for the stream job: a consumer group that commits, every half second, the offsets
  acknowledged a second earlier (so its lag is about one second of input)."""

  def __init__(self, bootstrap: str):
    super().__init__(daemon=True)
    self.producer = Producer({'bootstrap.servers': bootstrap, 'linger.ms': 20})
    self.group = Consumer({'bootstrap.servers': bootstrap, 'group.id': STREAM_GROUP,
                           'enable.auto.commit': False})
    self.acked: dict[tuple[str, int], int] = {}
    self.errors: list[str] = []
    self.stop_event = threading.Event()

  def _on_delivery(self, err, msg):
    if err is None:
      key = (msg.topic(), msg.partition())
      self.acked[key] = max(self.acked.get(key, 0), msg.offset() + 1)

  def run(self):
    i = 0
    history = []
    while not self.stop_event.is_set():
      tick = int(time.time() * 2)
      for topic, base in zip(INPUT_TOPICS, (120, 44, 30)):
        for _ in range(base // 2 + (tick % 5) * base // 10):
          self.producer.produce(topic, json.dumps({'sequence_id': i}).encode(),
                                partition=i % 2, on_delivery=self._on_delivery)
          i += 1
      self.producer.poll(0)
      history.append(dict(self.acked))
      lagging = history[-3] if len(history) >= 3 else {}
      del history[:-3]
      if lagging:
        try:
          self.group.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in lagging.items()],
                            asynchronous=False)
        except Exception as e:  # pylint: disable=broad-except
          self.errors.append(str(e))
      self.stop_event.wait(0.5)
    self.producer.flush(5)
    self.group.close()


def _wait_js(page, expression: str, timeout: float = 10.0):
  """Polls a JS expression until truthy. (Playwright's wait_for_function evaluates a string in
  the page, which the dashboard's CSP, rightly, forbids; page.evaluate goes through DevTools.)"""
  deadline = time.monotonic() + timeout
  while True:
    value = page.evaluate(expression)
    if value:
      return value
    if time.monotonic() > deadline:
      raise AssertionError(f'not true within {timeout} s: {expression}')
    time.sleep(0.1)


def _launch(playwright):
  user_data = tempfile.mkdtemp(prefix='chromium-profile-')
  context = playwright.chromium.launch_persistent_context(
      user_data, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
      viewport={'width': 1680, 'height': 1050}, device_scale_factor=1)
  return context, user_data


def test_live_alerts_render_as_text_in_chromium(broker, dashboard):
  # Local: Playwright is optional (the tests skip without it); importing it here keeps
  # the module importable.
  from playwright.sync_api import sync_playwright

  traffic = _InputTraffic(broker)
  traffic.start()
  producer = Producer({'bootstrap.servers': broker, 'linger.ms': 5})
  now = time.time()
  # An hour of history (processing times spread back 45 minutes), published now.
  history = sample_alerts(now, count=400)
  for alert in history:
    key, value = kafka_message(alert)
    producer.produce('alerts', value, key)
  producer.flush(10)

  dialogs, console_errors = [], []
  with sync_playwright() as playwright:
    t0 = time.monotonic()
    context, user_data = _launch(playwright)
    _timing('chromium launch', t0)
    try:
      page = context.new_page()
      page.on('dialog', lambda d: (dialogs.append(d.message), d.dismiss()))
      page.on('console', lambda m: console_errors.append(m.text) if m.type == 'error' else None)
      page.on('pageerror', lambda e: console_errors.append(str(e)))
      page.goto(dashboard, wait_until='domcontentloaded')
      page.wait_for_selector('#conn.live', timeout=15_000)
      page.wait_for_selector('#alerts-table tbody tr', timeout=15_000)

      # A new alert, whose program and details are an injection attempt.
      attack = sample_attack_row(99_999, time.time(), 7, 'x')
      evil = host_attack_alert(attack)
      evil.update(program=MALICIOUS, details=json.dumps({'CMD': MALICIOUS, 'note': MALICIOUS}),
                  score=0.991, reasons=json.dumps([
                      {'feature': 'process.CPU', 'value': 97.0, 'normal_low': 0.0,
                       'normal_high': 12.5, 'normal': '0.00 - 12.50', 'deviation': 3.1},
                      {'feature': MALICIOUS, 'value': MALICIOUS, 'normal': MALICIOUS}]))
      key, value = kafka_message(evil)
      sent = time.monotonic()
      producer.produce('alerts', value, key)
      producer.flush(10)
      row = page.locator(f'#alerts-table tbody tr[data-id="{evil["event_id"]}"]')
      row.wait_for(state='visible', timeout=15_000)
      latency = time.monotonic() - sent
      print(f'[timing] new alert visible in the page {latency:.2f} s after publishing')
      assert latency < NEW_ALERT_WITHIN_S

      # The malicious value is literal text: no element, no script, no dialog.
      cells = row.locator('td').all_text_contents()
      assert MALICIOUS in cells, cells
      assert row.locator('td').nth(1).text_content() == 'critical'
      assert page.locator('main img').count() == 0
      assert page.locator('#alerts-table script, #alerts-table img').count() == 0
      assert page.evaluate('typeof window.__pwned') == 'undefined'
      row.click()
      _wait_js(page, "document.getElementById('detail-body').textContent.includes('onerror')")
      assert MALICIOUS in page.locator('#detail-body').text_content()
      assert MALICIOUS in page.locator('#detail-fields').text_content()
      assert page.locator('#alert-detail img, #alert-detail script').count() == 0
      # Why: each reason with the record's value and the normal range, as text.
      reasons = page.locator('#detail-reasons li').all_text_contents()
      assert reasons[0] == 'process.CPU = 97 (normal 0.00 - 12.50)', reasons
      assert MALICIOUS in reasons[1]

      # Incidents, from incidents/ Parquet: each one's newest state, with its reasons.
      page.wait_for_selector('#incidents-table tbody tr', timeout=15_000)
      _wait_js(page, "document.querySelectorAll('#incidents-table tbody tr').length === 3")
      volume = page.locator('#incidents-table tbody tr[data-id="inc-volume"]')
      cells = volume.locator('td').all_text_contents()
      assert cells[:3] == ['updated', 'volume anomaly', 'icmp / ecr_i / SF'], cells
      assert cells[5] == '57' and 'connections per 10 s = 980 (normal usually 3' in cells[7]
      assert page.locator('#incidents-open').text_content() == '2 open of 3'
      evil_incident = page.locator('#incidents-table tbody tr[data-id="inc-evil"]')
      assert MALICIOUS in evil_incident.locator('td.why').text_content()
      assert page.locator('#incidents-table img, #incidents-table script').count() == 0

      # The rest of the page is drawn from the broker, the Parquet outputs and the registry.
      _wait_js(page, "document.querySelectorAll("
               "'#chart-kind rect[fill]:not([fill=transparent])').length > 10")
      _wait_js(page, "document.querySelectorAll('#chart-input polyline').length === 3", 15)
      page.wait_for_selector('#attacks-table tbody tr', timeout=10_000)
      page.wait_for_selector('#dead-table tbody tr td.details', timeout=10_000)
      _wait_js(page, "document.getElementById('models-table').textContent"
               ".includes('2026-11-23 19:30:00')", 20)
      assert page.locator('#top-machine .hbar').count() >= 3
      assert page.locator('#top-program .hbar').count() >= 3
      assert page.locator('#top-service .hbar').count() >= 3
      assert 'current' in page.locator('#models-table').text_content()
      assert int(page.locator('#v-alerts-hour').text_content().replace(',', '')) >= 400
      # The stand-in stream job's lag, from its committed offsets.
      lag = _wait_js(page, "/^[0-9,]+$/.test(document.getElementById('v-lag').textContent)"
                     " && document.getElementById('v-lag').textContent", 20)
      assert 0 < int(lag.replace(',', '')) < 10_000, (lag, traffic.errors[-3:])
      # Nothing overflows sideways (a long value must not widen the page).
      assert page.evaluate('document.documentElement.scrollWidth <= window.innerWidth'), \
          page.evaluate('[document.documentElement.scrollWidth, window.innerWidth]')
      # Let the input-rate chart gather a few more samples, then keep a picture.
      page.wait_for_timeout(2500)
      page.evaluate('window.scrollTo(0, 0)')
      os.makedirs(os.path.dirname(SCREENSHOT), exist_ok=True)
      page.screenshot(path=SCREENSHOT, full_page=True)
      print(f'screenshot: {SCREENSHOT}')
      assert dialogs == []
      assert page.evaluate('typeof window.__pwned') == 'undefined'
      assert console_errors == []  # a CSP violation would show here too
    finally:
      context.close()
      shutil.rmtree(user_data, ignore_errors=True)
      traffic.stop_event.set()
      traffic.join(10)
      producer.flush(5)
      del producer, traffic
      gc.collect()  # close the clients before the broker stops, or they retry it noisily


FORGED_SCREENSHOT = os.path.join(ROOT, '.run', 'screenshots', 'dashboard-forged.png')
LOGIN_SCREENSHOT = os.path.join(ROOT, '.run', 'screenshots', 'dashboard-login.png')


def test_forged_alerts_on_the_topic_do_not_break_the_page(broker, dashboard):
  """Forged messages on the real alerts topic (huge numbers, years 1 and 9999, wrong types,
  10,000-deep JSON, oversized messages, a flood of distinct machine names, an id reused with
  other content), then a real alert: the page stays live, draws the real alert, counts the
  rejected rows in its feeds table and logs no error."""
  # Local: Playwright is optional (the tests skip without it); importing it here keeps
  # the module importable.
  from playwright.sync_api import TimeoutError as PlaywrightTimeout, sync_playwright

  producer = Producer({'bootstrap.servers': broker, 'linger.ms': 5,
                       'message.max.bytes': 1_000_000})
  now = time.time()
  sent = 0
  for alert in forged_alerts(now):
    try:
      value = json.dumps(alert).encode('utf-8', errors='surrogatepass')
    except (TypeError, ValueError):
      continue
    if len(value) > 900_000:
      value = value[:900_000]
    producer.produce('alerts', value, partition=0)
    sent += 1
  for raw in (b'[' * 10_000 + b']' * 10_000, b'{"kind": "host_attack", "x": "' + b'y' * 200_000 + b'"}',
              b'\xff\xfe\x00', b'', b'null', b'1e999'):
    producer.produce('alerts', raw, partition=0)
  for i in range(3000):  # distinct names: the top list must stay bounded and drawable
    producer.produce('alerts', json.dumps(dict(
        json.loads(kafka_message(sample_network_alert(50_000 + i, now, 0.9))[1]),
        service=f'forged-service-{i}-' + 'z' * 200)).encode(), partition=0)
  assert producer.flush(60) == 0, 'the broker did not take the forged messages'
  real = sample_network_alert(77_777, time.time(), 0.993, service='real-after-forgery')
  key, value = kafka_message(real)
  # One partition for all of it: the page shows the latest 100 alerts in the order they were
  # read, and across two partitions the real one could be read before the forged ones.
  producer.produce('alerts', value, key, partition=0)
  assert producer.flush(30) == 0, 'the broker did not take the real alert'

  console_errors = []
  with sync_playwright() as playwright:
    context, user_data = _launch(playwright)
    try:
      page = context.new_page()
      page.on('console', lambda m: console_errors.append(m.text) if m.type == 'error' else None)
      page.on('pageerror', lambda e: console_errors.append(str(e)))
      page.goto(dashboard, wait_until='domcontentloaded')
      page.wait_for_selector('#conn.live', timeout=15_000)
      try:
        page.locator(f'#alerts-table tbody tr[data-id="{real["event_id"]}"]').wait_for(
            state='visible', timeout=30_000)
      except PlaywrightTimeout:  # what the dashboard had consumed by then, for the failure
        feed = _get_json(dashboard + 'api/state')['feeds']['alerts']
        raise AssertionError(f'the real alert was not drawn; the alerts feed: {feed}') from None
      rejected = _wait_js(page, "(() => { const r = document.getElementById('rejected-row');"
                          " return r && /[1-9]/.test(r.cells[1].textContent) &&"
                          " r.cells[1].textContent; })()", 20)
      state = _get_json(dashboard + 'api/state')
      counted = state['alerts']['rejected']['total']
      assert int(rejected.replace(',', '')) == counted > 50, (rejected, counted)
      reasons = dict(map(tuple, state['alerts']['rejected']['by_reason']))
      assert any('outside the time window' in r for r in reasons), reasons
      assert reasons.get('too large'), reasons
      # Every section still draws.
      assert page.locator('#top-service .hbar').count() >= 3
      assert page.locator('#alerts-table tbody tr').count() >= 10
      assert page.locator('#feeds-table tbody tr').count() >= 4
      assert page.evaluate('document.documentElement.scrollWidth <= window.innerWidth')
      assert page.evaluate('typeof window.__pwned') == 'undefined'
      page.wait_for_timeout(1600)  # one more refresh with the same data: still fine
      assert page.locator('#conn.live').count() == 1
      os.makedirs(os.path.dirname(FORGED_SCREENSHOT), exist_ok=True)
      page.screenshot(path=FORGED_SCREENSHOT, full_page=True)
      print(f'screenshot: {FORGED_SCREENSHOT}; {sent} forged alerts sent, {counted} rejected')
      assert console_errors == []
    finally:
      context.close()
      shutil.rmtree(user_data, ignore_errors=True)
      del producer
      gc.collect()


def test_exposed_dashboard_asks_for_its_token_in_chromium(tmp_path):
  """``--host 0.0.0.0 --token_file``: the browser is sent to the sign-in form (a wrong token is
  refused), and the right one opens the live page, whose polling then uses the cookie."""
  _require_browser()
  # Local: Playwright is optional (the tests skip without it); importing it here keeps
  # the module importable.
  from playwright.sync_api import sync_playwright
  token = 'browser-test-token-' + 'q' * 16
  token_file = tmp_path / 'token'
  token_file.write_text(token + '\n')
  port = free_port()
  log_path = tmp_path / 'dashboard.log'
  with open(log_path, 'w', encoding='utf-8') as log:
    proc = subprocess.Popen(
        [sys.executable, '-m', 'pipelines.dashboard', '--bootstrap_servers', 'none',
         '--host', '0.0.0.0', '--port', str(port), '--token_file', str(token_file),
         '--output', str(tmp_path / 'output'), '--model_dir', str(tmp_path / 'models')],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)
  url = f'http://127.0.0.1:{port}/'
  try:
    deadline = time.monotonic() + 60
    while 'Alerts dashboard:' not in log_path.read_text():
      assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
      time.sleep(0.2)
    console_errors = []
    with sync_playwright() as playwright:
      context, user_data = _launch(playwright)
      try:
        page = context.new_page()
        page.on('pageerror', lambda e: console_errors.append(str(e)))
        page.goto(url, wait_until='domcontentloaded')
        assert page.url.endswith('/login')
        page.fill('#token', 'wrong-token-wrong-token')
        page.click('button[type=submit]')
        _wait_js(page, "(document.querySelector('.login-error') || {}).textContent === 'Wrong token.'")
        os.makedirs(os.path.dirname(LOGIN_SCREENSHOT), exist_ok=True)
        page.screenshot(path=LOGIN_SCREENSHOT)
        page.fill('#token', token)
        page.click('button[type=submit]')
        page.wait_for_selector('#conn.live', timeout=15_000)
        assert page.url == url
        cookies = context.cookies(url)
        session = [c for c in cookies if c['name'] == 'dashboard_session']
        assert session and session[0]['httpOnly'] and session[0]['sameSite'] == 'Strict'
        assert token not in session[0]['value']
        assert page.evaluate('document.cookie') == ''  # HttpOnly: not readable by script
        assert console_errors == []
      finally:
        context.close()
        shutil.rmtree(user_data, ignore_errors=True)
  finally:
    proc.terminate()
    try:
      proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
      proc.kill()
  assert token not in log_path.read_text()
