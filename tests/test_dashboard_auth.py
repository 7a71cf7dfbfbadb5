"""The dashboard's HTTP exposure: a real server bound to 0.0.0.0 (all interfaces, the
non-loopback case) and reached through 127.0.0.1, and the real CLI. Without the token: 401 (or
the sign-in page); with it (Bearer header or the sign-in cookie): 200; a foreign Host header:
403 whatever the credentials; connections beyond the cap are closed; forged alerts come out of
the real JSON endpoint as finite, valid JSON.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.parse

import pytest

from dashboard.server import SESSION_COOKIE, Dashboard, DashboardServer
from tests.helpers import (MALICIOUS, ROOT, Served, forged_alerts, read_dashboard_port,
                           sample_network_alert, stop_dashboard)

TOKEN = 'test-token-' + 'x' * 20


def _request(port, method, path, headers=None, body=None, host=None):
  conn = http.client.HTTPConnection('127.0.0.1', port, timeout=5)
  headers = dict(headers or {})
  headers.setdefault('Host', host or f'127.0.0.1:{port}')
  conn.request(method, path, body=body, headers=headers)
  response = conn.getresponse()
  data = response.read()
  conn.close()
  return response, data


@pytest.fixture
def exposed():
  now = time.time()
  dashboard = Dashboard(table_rows=10)
  dashboard.alerts.add(sample_network_alert(1, now, 0.97, program=MALICIOUS), 'kafka', now=now)
  server = Served(dashboard, host='0.0.0.0', token=TOKEN, allowed_hosts=['dash.example'])
  yield server
  server.close()


def test_a_non_loopback_address_needs_a_token():
  with pytest.raises(ValueError, match='token'):
    DashboardServer(('0.0.0.0', 0), Dashboard())
  with pytest.raises(ValueError, match='shorter'):
    DashboardServer(('0.0.0.0', 0), Dashboard(), token='short')


def test_token_header_cookie_and_host_checks(exposed):
  port = exposed.port
  bearer = {'Authorization': f'Bearer {TOKEN}'}
  response, body = _request(port, 'GET', '/api/state')
  assert response.status == 401 and response.getheader('WWW-Authenticate').startswith('Bearer')
  assert b'recent' not in body
  assert _request(port, 'GET', '/api/state', {'Authorization': 'Bearer wrong-token-123456'}
                  )[0].status == 401
  assert _request(port, 'GET', '/api/state', {'Authorization': f'Basic {TOKEN}'})[0].status == 401
  response, body = _request(port, 'GET', '/api/state', bearer)
  assert response.status == 200
  assert MALICIOUS in [r['program'] for r in json.loads(body)['alerts']['recent']]
  assert _request(port, 'GET', '/static/app.js')[0].status == 401
  assert _request(port, 'GET', '/static/app.js', bearer)[0].status == 200
  # The page sends a browser to the sign-in form; its style, icon and /healthz are public.
  response, _ = _request(port, 'GET', '/')
  assert response.status == 303 and response.getheader('Location') == '/login'
  for path in ('/static/app.css', '/static/favicon.svg', '/healthz'):
    assert _request(port, 'GET', path)[0].status == 200, path
  response, page = _request(port, 'GET', '/login')
  assert response.status == 200 and b'name="token"' in page and b'{message}' not in page
  assert "form-action 'self'" in response.getheader('Content-Security-Policy')
  # A foreign Host (a DNS-rebinding page) gets nothing, even with the token; the names given
  # with --allowed_host, loopback names and the address connected to are served.
  for host in ('evil.example', f'evil.example:{port}', '10.9.8.7', 'localhost.evil.example',
               f'127.0.0.1.nip.io:{port}'):
    assert _request(port, 'GET', '/api/state', bearer, host=host)[0].status == 403, host
  for host in ('dash.example', f'dash.example:{port}', f'localhost:{port}', '127.0.0.1'):
    assert _request(port, 'GET', '/api/state', bearer, host=host)[0].status == 200, host
  # Every response carries the security headers, the refusals too.
  for status_path in ('/api/state', '/login'):
    response, _ = _request(port, 'GET', status_path)
    assert response.getheader('X-Content-Type-Options') == 'nosniff'
    assert "frame-ancestors 'none'" in response.getheader('Content-Security-Policy')
    assert 'unsafe-inline' not in response.getheader('Content-Security-Policy')


def test_sign_in_form_sets_a_strict_cookie_that_is_not_the_token(exposed):
  port = exposed.port
  form = {'Content-Type': 'application/x-www-form-urlencoded'}
  response, page = _request(port, 'POST', '/login', form, 'token=wrong-wrong-wrong-wrong')
  assert response.status == 401 and b'Wrong token' in page
  assert response.getheader('Set-Cookie') is None
  response, _ = _request(port, 'POST', '/login', form, urllib.parse.urlencode({'token': TOKEN}))
  assert response.status == 303 and response.getheader('Location') == '/'
  cookie = response.getheader('Set-Cookie')
  assert cookie.startswith(f'{SESSION_COOKIE}=')
  assert 'HttpOnly' in cookie and 'SameSite=Strict' in cookie and 'Path=/' in cookie
  assert TOKEN not in cookie
  session = cookie.split(';', 1)[0]
  assert _request(port, 'GET', '/api/state', {'Cookie': session})[0].status == 200
  assert _request(port, 'GET', '/', {'Cookie': session})[0].status == 200
  assert _request(port, 'GET', '/api/state', {'Cookie': f'{SESSION_COOKIE}=forged'}
                  )[0].status == 401
  assert _request(port, 'GET', '/api/state', {'Cookie': f'{SESSION_COOKIE}={TOKEN}'}
                  )[0].status == 401
  # From another site's page: refused before the token is even looked at.
  response, _ = _request(port, 'POST', '/login', {**form, 'Origin': 'http://evil.example'},
                         urllib.parse.urlencode({'token': TOKEN}))
  assert response.status == 403
  assert _request(port, 'POST', '/login', form, 'token=' + 'y' * 10_000)[0].status == 413
  # Other writes stay refused.
  assert _request(port, 'POST', '/api/state', {'Authorization': f'Bearer {TOKEN}'}
                  )[0].status == 405


def test_failed_sign_ins_are_throttled(exposed):
  port = exposed.port
  form = {'Content-Type': 'application/x-www-form-urlencoded'}
  statuses = [_request(port, 'POST', '/login', form, f'token=guess-{i:020d}')[0].status
              for i in range(12)]
  assert statuses[:10] == [401] * 10 and statuses[10:] == [429, 429]
  # Throttled: even the right token waits (a guesser learns nothing from the answer).
  response, _ = _request(port, 'POST', '/login', form, urllib.parse.urlencode({'token': TOKEN}))
  assert response.status == 429
  # The Bearer header is not throttled by sign-in failures.
  assert _request(port, 'GET', '/api/state', {'Authorization': f'Bearer {TOKEN}'}
                  )[0].status == 200


def test_connections_beyond_the_cap_are_closed():
  server = Served(Dashboard(), max_connections=2)
  idle = []
  try:
    for _ in range(2):
      s = socket.create_connection(('127.0.0.1', server.port), timeout=5)
      s.sendall(b'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
      assert s.recv(4096).startswith(b'HTTP/1.1 200')  # served, kept alive
      idle.append(s)
    extra = socket.create_connection(('127.0.0.1', server.port), timeout=5)
    extra.sendall(b'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
    try:
      assert extra.recv(4096) == b''  # closed without an answer
    except ConnectionResetError:
      pass
    extra.close()
    for s in idle:
      s.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
      try:
        if _request(server.port, 'GET', '/healthz')[0].status == 200:
          break
      except (ConnectionError, http.client.HTTPException):
        time.sleep(0.1)
    else:
      pytest.fail('the freed slots were not reused')
  finally:
    server.close()


def test_forged_alerts_through_the_real_json_endpoint():
  now = time.time()
  dashboard = Dashboard(table_rows=1000, cache_s=0)
  for alert in forged_alerts(now):
    dashboard.alerts.add(alert, 'kafka', now=time.time())
  server = Served(dashboard)
  try:
    response, body = _request(server.port, 'GET', '/api/state')
    assert response.status == 200 and b'<' not in body

    def non_finite(constant):
      raise AssertionError(f'{constant} in the served JSON')

    state = json.loads(body, parse_constant=non_finite)
    alerts = state['alerts']
    assert alerts['rejected']['total'] > 50 and alerts['buffered'] > 0
    assert len(body) < 2_000_000
    for row in alerts['recent']:
      response, detail = _request(server.port, 'GET',
                                  '/api/alert?key=' + urllib.parse.quote(row['key']))
      assert response.status == 200, row
      assert json.loads(detail, parse_constant=non_finite)['key'] == row['key']
  finally:
    server.close()


def _start_cli(args, env=None):
  return subprocess.Popen([sys.executable, '-m', 'pipelines.dashboard', '--bootstrap_servers',
                           'none', *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)


def test_cli_on_all_interfaces_prints_a_generated_token_once(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != 'DASHBOARD_TOKEN'}
  proc = _start_cli(['--host', '0.0.0.0', '--port', '0', '--output', str(tmp_path / 'out'),
                     '--model_dir', str(tmp_path / 'models'), '--log_level', 'DEBUG'], env)
  lines = []
  try:
    token = port = None
    while token is None and len(lines) < 5000:
      lines.append(proc.stdout.readline())
      match = re.match(r'Alerts dashboard: http://0\.0\.0\.0:(\d+)/', lines[-1])
      port = int(match.group(1)) if match else port
      match = re.search(r'access token \(shown only now.*\): (\S+)$', lines[-1])
      token = match.group(1) if match else None
    assert port and token and len(token) >= 32, lines
    assert _request(port, 'GET', '/api/state')[0].status == 401
    bearer = {'Authorization': f'Bearer {token}'}
    assert _request(port, 'GET', '/api/state', bearer)[0].status == 200
    form = {'Content-Type': 'application/x-www-form-urlencoded'}
    assert _request(port, 'POST', '/login', form, f'token={token}')[0].status == 303
    assert _request(port, 'GET', '/api/state', bearer, host='evil.example')[0].status == 403
  finally:
    output = stop_dashboard(proc, lines)
  assert proc.returncode == 0, output
  # Once, at start; not in the request logs (DEBUG logs every request line) nor at exit.
  assert output.count(token) == 1, output


def test_cli_token_file_and_refusals(tmp_path):
  short = tmp_path / 'short'
  short.write_text('abc\n')
  proc = _start_cli(['--host', '0.0.0.0', '--port', '0', '--token_file', str(short)])
  out, _ = proc.communicate(timeout=60)
  assert proc.returncode == 2 and 'shorter than 16' in out, out
  proc = _start_cli(['--host', '0.0.0.0', '--port', '0', '--token_file',
                     str(tmp_path / 'missing')])
  out, _ = proc.communicate(timeout=60)
  assert proc.returncode == 2 and 'cannot read the access token file' in out, out
  good = tmp_path / 'token'
  good.write_text(TOKEN + '\n')
  proc = _start_cli(['--host', '0.0.0.0', '--port', '0', '--token_file', str(good),
                     '--output', str(tmp_path / 'out'), '--model_dir', str(tmp_path / 'm')])
  lines = []
  try:
    port = read_dashboard_port(proc, lines, host='0.0.0.0')
    assert port, lines
    assert _request(port, 'GET', '/api/state')[0].status == 401
    assert _request(port, 'GET', '/api/state', {'Authorization': f'Bearer {TOKEN}'}
                    )[0].status == 200
  finally:
    output = stop_dashboard(proc, lines)
  assert TOKEN not in output  # chosen by the operator: never printed


def test_garbage_requests_get_an_answer_or_a_closed_socket(capfd):
  server = Served(Dashboard())
  try:
    port = server.port
    assert _request(port, 'GET', '/api/alert?' + '&'.join(f'a{i}=1' for i in range(50))
                    )[0].status == 400
    for raw in (b'\x00\xff' * 1000 + b'\r\n\r\n', b'GET /' + b'a' * 70_000 + b' HTTP/1.1\r\n\r\n',
                b'GET / HTTP/1.1\r\n' + b'X: y\r\n' * 200 + b'\r\n',
                b'POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -5\r\n\r\n'):
      with socket.create_connection(('127.0.0.1', port), timeout=5) as s:
        s.sendall(raw)
        answer = s.recv(4096)
        assert b'Traceback' not in answer and b'<' not in answer, answer
    assert _request(port, 'GET', '/healthz')[0].status == 200  # still serving
  finally:
    server.close()
  assert 'Traceback' not in capfd.readouterr().err


def test_malformed_requests_get_the_security_headers_too():
  server = Served(Dashboard())
  try:
    with socket.create_connection(('127.0.0.1', server.port), timeout=5) as s:
      s.sendall(b'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: x\r\n' + b'X: y\r\n' * 200
                + b'\r\n')
      answer = s.recv(4096)
    assert answer.startswith(b'HTTP/1.1 431') or answer.startswith(b'HTTP/1.1 400'), answer
    assert b'X-Content-Type-Options: nosniff' in answer and b'frame-ancestors' in answer
  finally:
    server.close()
