"""The dashboard's HTTP side: a standard-library ThreadingHTTPServer serving the page and its
JSON endpoint. Read-only (GET and HEAD only; the one POST is the sign-in form), strict
Content-Security-Policy (scripts and styles only from this server, no inline code, no frames),
and requests must name an allowed host (DNS rebinding): loopback names, the address literal the
client connected to, and the names given with ``--allowed_host``.

Bound to a non-loopback address, every request but the sign-in page needs the access token
(:class:`Auth`): ``Authorization: Bearer <token>``, or the session cookie the sign-in form sets
(HttpOnly, SameSite=Strict; its value is derived from the token, not the token). A loopback
dashboard needs none unless one is given.

| path | what |
| --- | --- |
| ``/`` | the page (``static/index.html``) |
| ``/static/app.js``, ``/static/app.css``, ``/static/favicon.svg`` | its script, style, icon |
| ``/api/state`` | everything the page shows, as JSON (cached for ``cache_s``) |
| ``/api/alert?id=<event_id>`` | one buffered alert with its full details |
| ``/api/alert?key=<key>`` | the same, by the row's content digest (ids can repeat) |
| ``/healthz`` | ``{"ok": true}`` (no token needed) |
| ``/login`` | the sign-in form (GET) and its submission (POST ``token=...``) |
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import html
import http.cookies
import http.server
import ipaddress
import json
import logging
import math
import os
import secrets
import socket
import sys
import threading
import time
import urllib.parse
from typing import Any, Callable, Optional

from dashboard.aggregate import (SEVERITIES, SEVERITY_THRESHOLDS, AlertStore, AttackStore,
                                 DeadLetterStore, IncidentStore, RateTracker, text)

log = logging.getLogger('dashboard')

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'static')
STATIC_FILES = {
    '/': ('index.html', 'text/html; charset=utf-8'),
    '/index.html': ('index.html', 'text/html; charset=utf-8'),
    '/static/app.js': ('app.js', 'text/javascript; charset=utf-8'),
    '/static/app.css': ('app.css', 'text/css; charset=utf-8'),
    '/static/favicon.svg': ('favicon.svg', 'image/svg+xml'),
    '/favicon.ico': ('favicon.svg', 'image/svg+xml'),
}

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'")
LOGIN_CSP = CONTENT_SECURITY_POLICY.replace("form-action 'none'", "form-action 'self'")
SECURITY_HEADERS = {
    'Content-Security-Policy': CONTENT_SECURITY_POLICY,
    'X-Content-Type-Options': 'nosniff',
    'X-Frame-Options': 'DENY',
    'Referrer-Policy': 'no-referrer',
    'Cross-Origin-Opener-Policy': 'same-origin',
    'Cross-Origin-Resource-Policy': 'same-origin',
    'Permissions-Policy': 'camera=(), microphone=(), geolocation=()',
}
LOOPBACK_NAMES = ('localhost', '127.0.0.1', '::1')
SESSION_COOKIE = 'dashboard_session'
# Reachable without the token: the sign-in page, what it needs to look right, a liveness probe.
PUBLIC_PATHS = ('/login', '/static/app.css', '/static/favicon.svg', '/favicon.ico', '/healthz')
MIN_TOKEN_LENGTH = 16
MAX_FORM_BYTES = 4096


def _finite(value: Any) -> Any:
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if isinstance(value, dict):
    return {k: _finite(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_finite(v) for v in value]
  return value


def encode_json(value: Any) -> bytes:
  """JSON whose text holds no ``<``, ``>`` or ``&`` (escaped as \\u003c ...): even a browser
  that sniffed it as HTML would find no markup. NaN and infinities become null."""
  def fallback(item: Any) -> Optional[str]:
    return text(item, 1000)

  try:
    body = json.dumps(value, default=fallback, separators=(',', ':'), allow_nan=False,
                      skipkeys=True)
  except ValueError:
    body = json.dumps(_finite(value), default=fallback, separators=(',', ':'),
                      allow_nan=False, skipkeys=True)
  body = body.replace('<', '\\u003c').replace('>', '\\u003e').replace('&', '\\u0026')
  return body.encode('utf-8')


def is_loopback(host: str) -> bool:
  if host in LOOPBACK_NAMES:
    return True
  try:
    return ipaddress.ip_address(host.strip('[]')).is_loopback
  except ValueError:
    return False


def host_name(header: str) -> str:
  """The host part of a Host header: ``[::1]:8050`` -> ``::1``, ``localhost:80`` -> ``localhost``."""
  header = header.strip().lower()
  if header.startswith('['):
    return header[1:header.find(']')] if ']' in header else header
  return header.rsplit(':', 1)[0] if header.count(':') == 1 else header


def _same_address(name: str, address: str) -> bool:
  try:
    a, b = ipaddress.ip_address(name), ipaddress.ip_address(address.split('%', 1)[0])
  except ValueError:
    return False
  mapped = getattr(b, 'ipv4_mapped', None)
  return a == b or (mapped is not None and a == mapped)


def read_token_file(path: str) -> str:
  """The access token in ``path`` (its first line). Raises ValueError when it is too short to
  resist guessing."""
  try:
    with open(path, encoding='utf-8') as f:
      token = f.readline(4096).strip()
  except (OSError, UnicodeDecodeError) as e:
    raise ValueError(f'cannot read the access token file {path}: {e}') from e
  check_token(token, path)
  return token


def check_token(token: str, where: str) -> None:
  if len(token) < MIN_TOKEN_LENGTH:
    raise ValueError(f'the access token from {where} is shorter than {MIN_TOKEN_LENGTH} '
                     'characters; use e.g. `python -c "import secrets; '
                     'print(secrets.token_urlsafe(32))"`')


def new_token() -> str:
  return secrets.token_urlsafe(32)


class Auth:
  """The access token of a dashboard, and the session its sign-in form gives a browser.

  Comparisons are constant-time. The cookie carries an HMAC of a per-process nonce keyed by the
  token, so it is worth nothing after a restart or a token change and never reveals the token.
  Failed sign-ins are limited to ``max_failures`` a minute (then 429), whatever the token's
  strength."""

  def __init__(self, token: str, max_failures: int = 10):
    check_token(token, 'the caller')
    secret = token.encode('utf-8', errors='surrogatepass')
    self._token_digest = hashlib.sha256(secret).digest()
    self._session = hmac.new(secret, b'dashboard-session:' + secrets.token_bytes(16),
                             hashlib.sha256).hexdigest()
    self._failures: collections.deque = collections.deque()
    self._lock = threading.Lock()
    self.max_failures = max_failures

  def token_ok(self, candidate: str) -> bool:
    # Digests of equal length: the comparison does not even reveal the token's length.
    return hmac.compare_digest(
        hashlib.sha256(candidate.encode('utf-8', errors='surrogatepass')).digest(),
        self._token_digest)

  @property
  def session(self) -> str:
    return self._session

  def authorized(self, headers) -> bool:
    header = headers.get('Authorization', '') or ''
    if header[:7].lower() == 'bearer ' and self.token_ok(header[7:].strip()):
      return True
    cookies = http.cookies.SimpleCookie()
    try:
      cookies.load(headers.get('Cookie', '') or '')
    except http.cookies.CookieError:
      return False
    morsel = cookies.get(SESSION_COOKIE)
    return morsel is not None and hmac.compare_digest(
        morsel.value.encode('utf-8', errors='surrogatepass'), self._session.encode())

  def throttled(self) -> bool:
    now = time.monotonic()
    with self._lock:
      while self._failures and self._failures[0] < now - 60:
        self._failures.popleft()
      return len(self._failures) >= self.max_failures

  def failed(self) -> None:
    with self._lock:
      self._failures.append(time.monotonic())


class Dashboard:
  """The stores, the feeds that fill them, and the state the page polls."""

  def __init__(self, *, alerts: Optional[AlertStore] = None,
               attacks: Optional[AttackStore] = None,
               dead_letters: Optional[DeadLetterStore] = None,
               rates: Optional[RateTracker] = None, feeds: Optional[dict[str, Any]] = None,
               info: Optional[dict[str, Any]] = None, table_rows: int = 100,
               cache_s: float = 0.5, incidents: Optional[IncidentStore] = None):
    # `is None`, not `or`: an empty store has len() 0 and is falsy.
    self.alerts = AlertStore() if alerts is None else alerts
    self.attacks = AttackStore() if attacks is None else attacks
    self.dead_letters = DeadLetterStore() if dead_letters is None else dead_letters
    self.incidents = IncidentStore() if incidents is None else incidents
    self.rates = RateTracker() if rates is None else rates
    self.feeds = {} if feeds is None else feeds
    self.info = {} if info is None else info
    self.table_rows = table_rows
    self.cache_s = cache_s
    self.started = time.time()
    self._cache: Optional[tuple[float, bytes]] = None
    self._cache_lock = threading.Lock()

  def start(self) -> None:
    for feed in self.feeds.values():
      feed.start()

  def stop(self, timeout: float = 1.0) -> None:
    for feed in self.feeds.values():
      feed.stop()
    deadline = time.time() + timeout
    for feed in self.feeds.values():
      if feed.is_alive():
        feed.join(max(0.0, deadline - time.time()))

  def state(self, now: Optional[float] = None) -> dict[str, Any]:
    """Everything the page shows. A section that fails to build is ``{"error": ...}`` and the
    others are still served (the page draws each section on its own)."""
    now = time.time() if now is None else now

    def section(build: Callable[[], Any]) -> Any:
      try:
        return build()
      except Exception as e:  # pylint: disable=broad-except
        log.warning('state section failed: %s: %s', type(e).__name__, text(str(e), 200))
        return {'error': type(e).__name__}

    return {
        'now': now,
        'started': self.started,
        'info': self.info,
        'severity_thresholds': dict(SEVERITY_THRESHOLDS),
        'severities': list(SEVERITIES),
        'alerts': section(lambda: self.alerts.snapshot(now, limit=self.table_rows)),
        'attacks': section(lambda: self.attacks.snapshot(now)),
        'dead_letters': section(lambda: self.dead_letters.snapshot(now)),
        'incidents': section(lambda: self.incidents.snapshot(now)),
        'input': section(self.rates.snapshot),
        'feeds': section(lambda: {name: feed.status for name, feed in self.feeds.items()}),
    }

  def state_json(self) -> bytes:
    """The encoded state, rebuilt at most every ``cache_s``: many open pages cost one build."""
    with self._cache_lock:
      now = time.monotonic()
      if self._cache is None or now - self._cache[0] >= self.cache_s:
        try:
          body = encode_json(self.state())
        except Exception as e:  # pylint: disable=broad-except
          log.warning('state not encodable: %s', type(e).__name__)
          body = encode_json({'now': time.time(), 'error': type(e).__name__})
        self._cache = (now, body)
      return self._cache[1]


class Handler(http.server.BaseHTTPRequestHandler):
  """GET/HEAD, and POST /login. ``server.dashboard`` is the :class:`Dashboard`,
  ``server.auth`` the :class:`Auth` or None."""

  server_version = 'alerts-dashboard'
  sys_version = ''
  protocol_version = 'HTTP/1.1'
  timeout = 15  # seconds a client may idle on a connection (connections are capped)
  # The standard library's own refusals (malformed requests): plain text, nothing echoed as HTML.
  error_content_type = 'text/plain; charset=utf-8'
  error_message_format = '%(code)d %(message)s\n'

  def log_message(self, format, *args):  # pylint: disable=redefined-builtin
    # The request line only: never headers (Authorization, Cookie) nor bodies (the token).
    log.debug('%s %s', self.address_string(), format % args)

  def _send(self, status: int, body: bytes, content_type: str,
            cache: str = 'no-store', extra: Optional[dict[str, str]] = None) -> None:
    self.send_response(status)
    self.send_header('Content-Type', content_type)
    self.send_header('Content-Length', str(len(body)))
    self.send_header('Cache-Control', cache)
    for name, value in {**SECURITY_HEADERS, **(extra or {})}.items():
      self.send_header(name, value)
    self._headers_done = True
    self.end_headers()
    if self.command != 'HEAD':
      self.wfile.write(body)

  def end_headers(self):
    # The standard library's own answers (send_error: a malformed request) get them too.
    if not getattr(self, '_headers_done', False):
      for name, value in SECURITY_HEADERS.items():
        self.send_header(name, value)
    self._headers_done = False
    super().end_headers()

  def _error(self, status: int, message: str, extra: Optional[dict[str, str]] = None) -> None:
    self._send(status, encode_json({'error': message}), 'application/json; charset=utf-8',
               extra=extra)

  def _host_allowed(self) -> bool:
    name = host_name(self.headers.get('Host', '') or '')
    if name in self.server.allowed_hosts:
      return True
    # An address literal of the interface this connection reached names no DNS entry, so no
    # rebinding page can send it.
    try:
      local = self.connection.getsockname()[0]
    except OSError:
      return False
    return _same_address(name, local)

  def _authorized(self) -> bool:
    auth: Optional[Auth] = self.server.auth
    return auth is None or auth.authorized(self.headers)

  def _login_page(self, status: int = 200, message: str = '') -> None:
    with open(os.path.join(STATIC_DIR, 'login.html'), encoding='utf-8') as f:
      page = f.read().replace('{message}', html.escape(message))
    self._send(status, page.encode('utf-8'), 'text/html; charset=utf-8',
               extra={'Content-Security-Policy': LOGIN_CSP})

  def _refuse_host(self) -> None:
    self._error(403, 'this dashboard does not answer to this host name (see --allowed_host)')

  def do_GET(self):  # pylint: disable=invalid-name
    if not self._host_allowed():
      self._refuse_host()
      return
    url = urllib.parse.urlsplit(self.path)
    if url.path not in PUBLIC_PATHS and not self._authorized():
      if url.path in ('/', '/index.html'):
        self._send(303, b'', 'text/plain; charset=utf-8', extra={'Location': '/login'})
      else:
        self._error(401, 'an access token is needed',
                    extra={'WWW-Authenticate': 'Bearer realm="alerts-dashboard"'})
      return
    dashboard: Dashboard = self.server.dashboard
    if url.path == '/login':
      if self.server.auth is None:
        self._send(303, b'', 'text/plain; charset=utf-8', extra={'Location': '/'})
      else:
        self._login_page()
    elif url.path == '/api/state':
      self._send(200, dashboard.state_json(), 'application/json; charset=utf-8')
    elif url.path == '/api/alert':
      try:
        query = urllib.parse.parse_qs(url.query, max_num_fields=4)
      except ValueError:
        self._error(400, 'too many query fields')
        return
      event_id, key = query.get('id', [''])[0], query.get('key', [''])[0]
      alert = (dashboard.alerts.get_by_key(key) if key
               else dashboard.alerts.get(event_id) if event_id else None)
      if alert is None:
        self._error(404, 'no such alert in the buffer')
      else:
        self._send(200, encode_json(alert), 'application/json; charset=utf-8')
    elif url.path == '/healthz':
      self._send(200, encode_json({'ok': True, 'uptime_s': time.time() - dashboard.started}),
                 'application/json; charset=utf-8')
    elif url.path in STATIC_FILES:
      name, content_type = STATIC_FILES[url.path]
      with open(os.path.join(STATIC_DIR, name), 'rb') as f:
        body = f.read()
      self._send(200, body, content_type, cache='no-cache')
    else:
      self._error(404, 'not found')

  do_HEAD = do_GET  # pylint: disable=invalid-name

  def do_POST(self):  # pylint: disable=invalid-name
    url = urllib.parse.urlsplit(self.path)
    if url.path != '/login':
      self._read_only()
      return
    if not self._host_allowed():
      self._refuse_host()
      return
    auth: Optional[Auth] = self.server.auth
    origin = self.headers.get('Origin')
    if origin and origin != 'null':
      if host_name(urllib.parse.urlsplit(origin).netloc) != host_name(
          self.headers.get('Host', '') or ''):
        self._error(403, 'cross-origin sign-in refused')
        return
    try:
      length = int(self.headers.get('Content-Length', '0'))
    except ValueError:
      length = -1
    if not 0 <= length <= MAX_FORM_BYTES:
      self.close_connection = True
      self._error(413, 'sign-in form too large')
      return
    body = self.rfile.read(length).decode('utf-8', errors='replace')
    if auth is None:
      self._send(303, b'', 'text/plain; charset=utf-8', extra={'Location': '/'})
      return
    if auth.throttled():
      self._login_page(429, 'Too many failed attempts: wait a minute.')
      return
    try:
      token = urllib.parse.parse_qs(body, max_num_fields=4).get('token', [''])[0]
    except ValueError:
      token = ''
    if not auth.token_ok(token):
      auth.failed()
      log.warning('dashboard: failed sign-in from %s', self.address_string())
      self._login_page(401, 'Wrong token.')
      return
    cookie = f'{SESSION_COOKIE}={auth.session}; Path=/; HttpOnly; SameSite=Strict'
    self._send(303, b'', 'text/plain; charset=utf-8',
               extra={'Location': '/', 'Set-Cookie': cookie})

  def _read_only(self):
    self.close_connection = True  # its body, if any, is not read
    self._error(405, 'this dashboard is read-only', extra={'Allow': 'GET, HEAD'})

  do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _read_only  # pylint: disable=invalid-name


class DashboardServer(http.server.ThreadingHTTPServer):
  """The HTTP server. ``token``: the access token every request needs (:class:`Auth`);
  required when ``address`` is not a loopback address. At most ``max_connections`` are served at
  once (each is a thread); further ones are closed at once."""

  daemon_threads = True
  allow_reuse_address = True

  def __init__(self, address: tuple[str, int], dashboard: Dashboard,
               allowed_hosts: Optional[list[str]] = None, token: Optional[str] = None,
               max_connections: int = 64):
    if not is_loopback(address[0]) and token is None:
      raise ValueError(f'{address[0]} is not a loopback address: an access token is required')
    if ':' in address[0]:
      self.address_family = socket.AF_INET6
    self.auth = Auth(token) if token is not None else None
    self._slots = threading.BoundedSemaphore(max_connections)
    super().__init__(address, Handler)
    self.dashboard = dashboard
    # Loopback names are always safe (no page elsewhere can be served under them); other names
    # only as the operator lists them.
    self.allowed_hosts = set(LOOPBACK_NAMES) | {h.strip().lower() for h in allowed_hosts or ()}
    if not is_loopback(address[0]) and address[0] not in ('0.0.0.0', '::', ''):
      self.allowed_hosts.add(address[0].lower())

  def handle_error(self, request, client_address):
    # socketserver prints a traceback per failed request; a client that sends garbage (or
    # hangs up mid-answer) is worth one log line.
    _, error, _ = sys.exc_info()
    log.debug('request from %s failed: %s: %s', client_address[0], type(error).__name__,
              text(str(error), 200))

  def process_request(self, request, client_address):
    if not self._slots.acquire(blocking=False):
      self.shutdown_request(request)
      return
    try:
      super().process_request(request, client_address)
    except Exception:
      self._slots.release()
      raise

  def process_request_thread(self, request, client_address):
    try:
      super().process_request_thread(request, client_address)
    finally:
      self._slots.release()

  @property
  def url(self) -> str:
    host, port = self.server_address[:2]
    if ':' in host:
      host = f'[{host}]'
    return f'http://{host}:{port}/'
