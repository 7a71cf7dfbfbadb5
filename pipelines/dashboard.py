"""The alerts dashboard: a live web page of the latest alerts and attack events, alerts per
minute by kind, the top machines / programs / services, the model versions in use and the
pipeline's health (input rate, consumer lag, dead letters).

It reads, and never writes: the `alerts` Kafka topic (its own consumer, from the end of the
topic unless --from_beginning; it commits nothing), the end offsets of the input topics, the
Parquet outputs of the stream job under --output (alerts/, attacks/, dead_letter/; each new
file read once) and the model registry under --model_dir. All aggregation is done here, in
bounded memory, and the page polls one JSON endpoint every 1.5 s.

  python -m pipelines.dashboard --bootstrap_servers localhost:9092 --output output \\
      --model_dir models
  # then open the printed URL (http://127.0.0.1:8050/ by default)

Kafka client settings (security.protocol, sasl.username, ssl.ca.location, ...; librdkafka
names) come from --kafka_config_file (Java-properties syntax), then environment variables
DASHBOARD_KAFKA_<KEY> (DASHBOARD_KAFKA_SASL_PASSWORD is sasl.password), then --kafka_config
flags. Put secrets in the file or the environment; they are never printed.

On a non-loopback --host (0.0.0.0, an interface address) every request needs an access token:
from --token_file or $DASHBOARD_TOKEN, else one is generated and printed once at start. Send it
as "Authorization: Bearer <token>" or sign in at /login (a session cookie). Host headers must
be a loopback name, the address connected to, or an --allowed_host name. Details:
docs/dashboard.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from typing import Mapping, Optional, Sequence

from schemas.records import ALERTS_TOPIC, SCHEMAS
from transforms.redaction import redact_config

ENV_PREFIX = 'DASHBOARD_KAFKA_'
TOKEN_ENV = 'DASHBOARD_TOKEN'
DEFAULT_PORT = 8050
INPUT_TOPICS = {schema.stream: schema.default_topic for schema in SCHEMAS.values()}

log = logging.getLogger('dashboard')


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog='python -m pipelines.dashboard', usage='%(prog)s [options]', description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  kafka = p.add_argument_group('Kafka')
  kafka.add_argument('--bootstrap_servers', default='localhost:9092',
                     help='Kafka bootstrap servers, host:port[,...] (default: %(default)s); '
                     '"none" to run without Kafka (alerts then come from Parquet only).')
  kafka.add_argument('--alerts_topic', default=ALERTS_TOPIC,
                     help='Topic the stream job publishes alerts to (default: %(default)s).')
  for stream, topic in INPUT_TOPICS.items():
    kafka.add_argument(f'--{stream}_topic', default=topic,
                       help=f'Input topic of {stream} messages, for the input rate and lag '
                       '(default: %(default)s).')
  kafka.add_argument('--group_id', default='alerts-dashboard',
                     help='group.id of the alerts consumer (default: %(default)s). It assigns '
                     'itself all partitions and never commits, so dashboards do not share '
                     'or disturb anything.')
  kafka.add_argument('--from_beginning', action='store_true',
                     help='Read the alerts topic from its beginning instead of its end.')
  kafka.add_argument('--stream_group_id', default=None,
                     help='The stream job\'s consumer group (its group.id), to show its lag '
                     'on the input topics; without it only the input rate is shown.')
  kafka.add_argument('--kafka_config', action='append', default=[], metavar='KEY=VALUE',
                     help='Extra librdkafka client setting, repeatable.')
  kafka.add_argument('--kafka_config_file', default=None,
                     help='A properties file of librdkafka client settings (for secrets).')
  kafka.add_argument('--health_interval_s', type=float, default=2.0,
                     help='How often the input topics\' offsets are sampled (default: '
                     '%(default)s).')
  files = p.add_argument_group('Outputs and models')
  files.add_argument('--output', default='output',
                     help='The stream job\'s --output: a local path, s3://... or gs://... '
                     '(default: %(default)s).')
  files.add_argument('--model_dir', default='models',
                     help='Model registry root (default: %(default)s).')
  files.add_argument('--model_public_key', default=None,
                     help='The public key(s) model manifests must be signed with; the page '
                     'shows the newest version that verifies, as the stream serves it '
                     '(default: $ATTACK_DETECTION_MODEL_PUBLIC_KEY, else '
                     '~/.config/attack-detection/model-signing.pub; docs/model-registry.md).')
  files.add_argument('--scan_interval_s', type=float, default=5.0,
                     help='How often --output is scanned for new Parquet files (default: '
                     '%(default)s).')
  files.add_argument('--lookback_minutes', type=float, default=60.0,
                     help='At start, read output files written in the last this many minutes '
                     '(default: %(default)s).')
  files.add_argument('--model_refresh_s', type=float, default=15.0,
                     help='How often the model registry is read (default: %(default)s).')
  limits = p.add_argument_group('Limits on what is read (forged alerts and files)')
  limits.add_argument('--max_alert_bytes', type=int, default=64 * 1024,
                      help='Largest alert message read from Kafka; larger ones are counted as '
                      'rejected (default: %(default)s).')
  limits.add_argument('--max_alert_age_hours', type=float, default=168.0,
                      help='Alerts, attack events and dead letters whose times are older than '
                      'this are rejected, not aggregated (default: %(default)s, a week).')
  limits.add_argument('--max_future_s', type=float, default=300.0,
                      help='... or whose times are further ahead of this machine\'s clock '
                      'than this (default: %(default)s).')
  limits.add_argument('--max_file_mb', type=float, default=128.0,
                      help='Largest Parquet output file read; larger ones are skipped and '
                      'counted (default: %(default)s).')
  web = p.add_argument_group('Web server')
  web.add_argument('--host', default='127.0.0.1',
                   help='Address to listen on (default: %(default)s, this machine only). '
                   'Any other address (0.0.0.0, an interface) requires the access token.')
  web.add_argument('--port', type=int, default=DEFAULT_PORT,
                   help='Port (default: %(default)s; 0 picks a free one).')
  web.add_argument('--allowed_host', action='append', default=[], metavar='NAME',
                   help='Host name the page may be opened under (Host header), repeatable; '
                   'loopback names and the address a client connected to are always allowed, '
                   'any other name is refused (DNS rebinding).')
  web.add_argument('--token_file', default=None,
                   help=f'File whose first line is the access token (at least 16 '
                   f'characters); else ${TOKEN_ENV}; else, on a non-loopback --host, a token is '
                   'generated and printed once. Given on a loopback --host, it is required '
                   'there too.')
  web.add_argument('--max_connections', type=int, default=64,
                   help='HTTP connections served at once; more are closed (default: '
                   '%(default)s).')
  web.add_argument('--max_alerts', type=int, default=1000,
                   help='Latest alerts kept in memory for the table (default: %(default)s).')
  web.add_argument('--table_rows', type=int, default=100,
                   help='Alerts sent to the page at each refresh (default: %(default)s).')
  p.add_argument('--log_level', default='INFO', choices=('DEBUG', 'INFO', 'WARNING', 'ERROR'),
                 help='Log level on stderr (default: %(default)s).')
  from pipelines import storage
  storage.add_arguments(p)
  return p


def kafka_client_config(pairs: Sequence[str], config_file: Optional[str],
                        environ: Optional[Mapping[str, str]] = None) -> dict[str, str]:
  """File, then DASHBOARD_KAFKA_* environment, then flags; later ones win."""
  from pipelines.kafka_config import client_config
  return client_config(pairs, config_file, environ, env_prefix=ENV_PREFIX)


def access_token(args: argparse.Namespace, environ: Mapping[str, str]
                 ) -> tuple[Optional[str], bool]:
  """(token, generated): from --token_file, else the environment, else a new one when the
  address is not loopback, else none. Raises ValueError for a token too short."""
  from dashboard.server import check_token, is_loopback, new_token, read_token_file
  if args.token_file:
    return read_token_file(args.token_file), False
  if environ.get(TOKEN_ENV):
    token = environ[TOKEN_ENV].strip()
    check_token(token, f'${TOKEN_ENV}')
    return token, False
  if is_loopback(args.host):
    return None, False
  return new_token(), True


def build(args: argparse.Namespace, environ: Optional[Mapping[str, str]] = None):
  """The Dashboard (feeds not started yet), the bound server, the Kafka client config and
  the access token when this process generated it (to print once)."""
  environ = os.environ if environ is None else environ
  from pipelines import storage
  # --output and --model_dir may be s3:// or gs://: configure Beam's file systems first.
  storage.configure(storage.options_from_args(args))
  from dashboard.aggregate import (AlertStore, AttackStore, Bounds, DeadLetterStore,
                                   IncidentStore, RateTracker)
  from dashboard.server import Dashboard, DashboardServer
  from dashboard.sources import (AlertFeed, KafkaHealth, ModelWatcher, ParquetLimits,
                                 ParquetScanner)

  token, generated = access_token(args, environ)
  bounds = Bounds(max_age_s=args.max_alert_age_hours * 3600, max_future_s=args.max_future_s)
  alerts = AlertStore(capacity=args.max_alerts, bounds=bounds)
  attacks, dead_letters = AttackStore(bounds=bounds), DeadLetterStore(bounds=bounds)
  incidents = IncidentStore(bounds=bounds)
  rates = RateTracker(history=max(60, int(900 / max(args.health_interval_s, 0.5))))
  input_topics = [getattr(args, f'{s}_topic') for s in INPUT_TOPICS]
  kafka_on = args.bootstrap_servers.strip().lower() not in ('', 'none')
  feeds = {}
  client_config: dict[str, str] = {}
  if kafka_on:
    client_config = kafka_client_config(args.kafka_config, args.kafka_config_file, environ)
    feeds['alerts'] = AlertFeed(alerts, args.bootstrap_servers, args.alerts_topic,
                                client_config, group_id=args.group_id,
                                from_beginning=args.from_beginning,
                                max_message_bytes=args.max_alert_bytes)
    feeds['kafka'] = KafkaHealth(rates, args.bootstrap_servers, input_topics, client_config,
                                 stream_group_id=args.stream_group_id,
                                 interval=args.health_interval_s)
  feeds['parquet'] = ParquetScanner(args.output, alerts, attacks, dead_letters,
                                    incidents=incidents,
                                    interval=args.scan_interval_s,
                                    lookback_minutes=args.lookback_minutes,
                                    limits=ParquetLimits(
                                        max_file_bytes=int(args.max_file_mb * 1024 * 1024)))
  feeds['models'] = ModelWatcher(args.model_dir, interval=args.model_refresh_s,
                                 public_key=args.model_public_key)
  info = {'bootstrap_servers': args.bootstrap_servers if kafka_on else None,
          'alerts_topic': args.alerts_topic if kafka_on else None,
          'input_topics': input_topics if kafka_on else [],
          'stream_group_id': args.stream_group_id,
          'output': args.output, 'model_dir': args.model_dir,
          'from_beginning': args.from_beginning,
          'kafka_settings': sorted(redact_config(client_config))}
  dashboard = Dashboard(alerts=alerts, attacks=attacks, dead_letters=dead_letters,
                        incidents=incidents, rates=rates,
                        feeds=feeds, info=info, table_rows=args.table_rows)
  server = DashboardServer((args.host, args.port), dashboard, args.allowed_host, token=token,
                           max_connections=args.max_connections)
  return dashboard, server, client_config, (token if generated else None)


def main(argv: Optional[Sequence[str]] = None) -> int:
  args = parser().parse_args(argv)
  logging.basicConfig(level=args.log_level, format='%(asctime)s %(levelname)s %(name)s: %(message)s')
  logging.getLogger('dashboard.librdkafka').setLevel(
      logging.DEBUG if args.log_level == 'DEBUG' else logging.CRITICAL + 1)
  # Beam's file systems warn about optional cloud libraries at import: not our business here.
  logging.disable(logging.WARNING)
  try:
    import apache_beam.io.filesystems  # noqa: F401  pylint: disable=unused-import,import-outside-toplevel
  finally:
    logging.disable(logging.NOTSET)
  from pipelines.kafka_config import KafkaConfigError
  try:
    dashboard, server, client_config, generated_token = build(args)
  except (KafkaConfigError, ValueError) as e:
    print(f'dashboard: {e}', file=sys.stderr)
    return 2
  except OSError as e:
    print(f'dashboard: cannot listen on {args.host}:{args.port}: {e.strerror}', file=sys.stderr)
    return 2
  info = dashboard.info
  print(f'Alerts dashboard: {server.url}', flush=True)
  if info['bootstrap_servers']:
    settings = ', '.join(f'{k}={v}' for k, v in sorted(redact_config(client_config).items()))
    print(f"  alerts from Kafka {info['bootstrap_servers']} topic {info['alerts_topic']} "
          f"(from the {'beginning' if args.from_beginning else 'end'}); input topics "
          f"{', '.join(info['input_topics'])}" + (f'; settings: {settings}' if settings else ''),
          flush=True)
  else:
    print('  Kafka off: alerts from the Parquet outputs only', flush=True)
  print(f"  outputs {args.output}, models {args.model_dir}; read-only. Ctrl-C stops.", flush=True)
  if server.auth is not None:
    names = ', '.join(sorted(server.allowed_hosts))
    print(f'  access token required (Authorization: Bearer, or sign in at {server.url}login); '
          f'host names accepted: {names} and the address connected to', flush=True)
  if generated_token:
    # Printed once, here, to the terminal that started it; never logged.
    print(f'  access token (shown only now; pass --token_file or ${TOKEN_ENV} to choose it): '
          f'{generated_token}', flush=True)
  # Only now: the feeds' log lines must not come between the address and the token.
  dashboard.start()

  def _terminate(signum, frame):  # pylint: disable=unused-argument
    threading.Thread(target=server.shutdown, daemon=True).start()

  signal.signal(signal.SIGTERM, _terminate)
  try:
    server.serve_forever(poll_interval=0.5)
  except KeyboardInterrupt:
    pass
  finally:
    server.server_close()
    dashboard.stop()
    print('dashboard: stopped', flush=True)
  return 0


if __name__ == '__main__':
  sys.exit(main())
