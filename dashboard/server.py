"""The dashboard's HTTP side: a standard-library ThreadingHTTPServer serving the page and its
JSON endpoint. Read-only (GET and HEAD only, no endpoint changes anything), strict
Content-Security-Policy (scripts and styles only from this server, no inline code, no frames),
and when bound to a loopback address, requests must name a loopback host (DNS rebinding).

| path | what |
| --- | --- |
| ``/`` | the page (``static/index.html``) |
| ``/static/app.js``, ``/static/app.css``, ``/static/favicon.svg`` | its script, style, icon |
| ``/api/state`` | everything the page shows, as JSON (cached for ``cache_s``) |
| ``/api/alert?id=<event_id>`` | one buffered alert with its full details |
| ``/healthz`` | ``{"ok": true}`` |
"""

from __future__ import annotations

import http.server
import ipaddress
import json
import logging
import math
import os
import threading
import time
import urllib.parse
from typing import Any, Optional

from dashboard.aggregate import AlertStore, AttackStore, DeadLetterStore, RateTracker, SEVERITIES
from dashboard.aggregate import SEVERITY_THRESHOLDS

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
  try:
    body = json.dumps(value, default=str, separators=(',', ':'), allow_nan=False)
  except ValueError:
    body = json.dumps(_finite(value), default=str, separators=(',', ':'), allow_nan=False)
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


class Dashboard:
  """The stores, the feeds that fill them, and the state the page polls."""

  def __init__(self, *, alerts: Optional[AlertStore] = None,
               attacks: Optional[AttackStore] = None,
               dead_letters: Optional[DeadLetterStore] = None,
               rates: Optional[RateTracker] = None, feeds: Optional[dict[str, Any]] = None,
               info: Optional[dict[str, Any]] = None, table_rows: int = 100,
               cache_s: float = 0.5):
    # `is None`, not `or`: an empty store has len() 0 and is falsy.
    self.alerts = AlertStore() if alerts is None else alerts
    self.attacks = AttackStore() if attacks is None else attacks
    self.dead_letters = DeadLetterStore() if dead_letters is None else dead_letters
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
    now = time.time() if now is None else now
    statuses = {name: feed.status for name, feed in self.feeds.items()}
    return {
        'now': now,
        'started': self.started,
        'info': self.info,
        'severity_thresholds': dict(SEVERITY_THRESHOLDS),
        'severities': list(SEVERITIES),
        'alerts': self.alerts.snapshot(now, limit=self.table_rows),
        'attacks': self.attacks.snapshot(now),
        'dead_letters': self.dead_letters.snapshot(now),
        'input': self.rates.snapshot(),
        'feeds': statuses,
    }

  def state_json(self) -> bytes:
    """The encoded state, rebuilt at most every ``cache_s``: many open pages cost one build."""
    with self._cache_lock:
      now = time.monotonic()
      if self._cache is None or now - self._cache[0] >= self.cache_s:
        self._cache = (now, encode_json(self.state()))
      return self._cache[1]


class Handler(http.server.BaseHTTPRequestHandler):
  """GET/HEAD only. ``server.dashboard`` is the :class:`Dashboard`."""

  server_version = 'alerts-dashboard'
  sys_version = ''
  protocol_version = 'HTTP/1.1'
  timeout = 30  # seconds a client may idle on a connection

  def log_message(self, format, *args):  # pylint: disable=redefined-builtin
    log.debug('%s %s', self.address_string(), format % args)

  def _send(self, status: int, body: bytes, content_type: str,
            cache: str = 'no-store', extra: Optional[dict[str, str]] = None) -> None:
    self.send_response(status)
    self.send_header('Content-Type', content_type)
    self.send_header('Content-Length', str(len(body)))
    self.send_header('Cache-Control', cache)
    for name, value in {**SECURITY_HEADERS, **(extra or {})}.items():
      self.send_header(name, value)
    self.end_headers()
    if self.command != 'HEAD':
      self.wfile.write(body)

  def _error(self, status: int, message: str, extra: Optional[dict[str, str]] = None) -> None:
    self._send(status, encode_json({'error': message}), 'application/json; charset=utf-8',
               extra=extra)

  def _host_allowed(self) -> bool:
    allowed = getattr(self.server, 'allowed_hosts', None)
    if allowed is None:
      return True
    return host_name(self.headers.get('Host', '')) in allowed

  def do_GET(self):  # pylint: disable=invalid-name
    if not self._host_allowed():
      self._error(403, 'this dashboard answers to its loopback address only '
                  '(see --allowed_host)')
      return
    url = urllib.parse.urlsplit(self.path)
    dashboard: Dashboard = self.server.dashboard
    if url.path == '/api/state':
      self._send(200, dashboard.state_json(), 'application/json; charset=utf-8')
    elif url.path == '/api/alert':
      event_id = urllib.parse.parse_qs(url.query).get('id', [''])[0]
      alert = dashboard.alerts.get(event_id) if event_id else None
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

  def _read_only(self):
    self._error(405, 'this dashboard is read-only', extra={'Allow': 'GET, HEAD'})

  do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _read_only  # pylint: disable=invalid-name


class DashboardServer(http.server.ThreadingHTTPServer):
  daemon_threads = True
  allow_reuse_address = True

  def __init__(self, address: tuple[str, int], dashboard: Dashboard,
               allowed_hosts: Optional[list[str]] = None):
    if ':' in address[0]:
      self.address_family = __import__('socket').AF_INET6
    super().__init__(address, Handler)
    self.dashboard = dashboard
    # Bound to loopback: only loopback Host headers (a DNS-rebinding page cannot read it).
    # Bound elsewhere (--host 0.0.0.0): the operator chose to expose it; extra names still work.
    if is_loopback(address[0]):
      self.allowed_hosts = set(LOOPBACK_NAMES) | {h.lower() for h in allowed_hosts or ()}
    elif allowed_hosts:
      self.allowed_hosts = {h.lower() for h in allowed_hosts} | {address[0].lower()}
    else:
      self.allowed_hosts = None

  @property
  def url(self) -> str:
    host, port = self.server_address[:2]
    if ':' in host:
      host = f'[{host}]'
    return f'http://{host}:{port}/'
