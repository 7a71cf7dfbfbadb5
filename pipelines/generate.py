"""python -m pipelines.generate: send network and host records to Kafka (or JSON-lines files).

Examples::

  # 60 s of synthetic traffic at 2000 messages/s into a local broker
  python -m pipelines.generate --bootstrap_servers 127.0.0.1:9092 --rate 2000 --duration_s 60

  # the KDD 10% file once, in file order, with 1% broken messages, into files
  python -m pipelines.generate --source kdd --kdd_file kddcup.data_10_percent.gz \\
      --one_sequential_pass --streams network --malformed_fraction 0.01 --output_dir out/

The final report (stdout) is one line: sent, acknowledged, failed, malformed, then per stream.
The exit status is 0 when every sent message was acknowledged, 1 otherwise, 130 on Ctrl-C.
Kafka client settings (TLS, SASL) come from --producer_config key=value or from environment
variables KAFKA_PRODUCER_<KEY> (KAFKA_PRODUCER_SASL_PASSWORD is sasl.password); prefer the
environment for secrets: the command line is visible to other users. Values are never printed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from typing import Mapping, Optional, Sequence

from generator.avro_messages import AvroEncoder
from generator.rate import TokenBucket
from generator.sinks import JsonLinesSink, KafkaSink
from generator.source import DEFAULT_TOPICS, STREAMS, SourceConfig, generate_messages
from generator.synthetic_host import DEFAULT_ATTACK_FRACTION
from pipelines.kafka_config import from_environment
from schemas.records import SCHEMAS
from transforms.redaction import scrub

ENV_PREFIX = 'KAFKA_PRODUCER_'


def _streams(text: str) -> tuple[str, ...]:
  streams = tuple(s.strip() for s in text.split(',') if s.strip())
  bad = [s for s in streams if s not in STREAMS]
  if bad or not streams:
    raise argparse.ArgumentTypeError(f'streams are a comma-separated subset of {STREAMS}')
  return streams


def _mix(text: str) -> dict[str, float]:
  try:
    return {k.strip(): float(v) for k, v in (item.split('=') for item in text.split(','))}
  except ValueError:
    raise argparse.ArgumentTypeError('expected label=weight,label=weight') from None


def _key_value(text: str) -> tuple[str, str]:
  key, sep, value = text.partition('=')
  if not sep or not key.strip():
    raise argparse.ArgumentTypeError('expected key=value')  # never echo the value
  return key.strip(), value


def _utc_ms(text: str) -> int:
  try:
    t = datetime.datetime.fromisoformat(text.replace('Z', '+00:00'))
  except ValueError:
    raise argparse.ArgumentTypeError('expected an ISO-8601 time') from None
  if t.tzinfo is None:
    t = t.replace(tzinfo=datetime.timezone.utc)
  return int(t.timestamp() * 1000)


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog='python -m pipelines.generate', description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  src = p.add_argument_group('what to send')
  src.add_argument('--source', choices=('synthetic', 'kdd'), default='synthetic',
                   help='network records from the built-in labelled generator or a KDD Cup '
                        '1999 CSV file (default: synthetic)')
  src.add_argument('--kdd_file', help='kddcup.data[_10_percent][.gz]: no header, 42 fields')
  src.add_argument('--streams', type=_streams, default=STREAMS,
                   help='comma-separated subset of network,process,memory (default: all)')
  src.add_argument('--one_sequential_pass', action='store_true',
                   help='send the KDD file once in file order, then stop (default: random '
                        'order, repeated)')
  src.add_argument('--seed', type=int, default=0, help='makes the whole run reproducible')
  src.add_argument('--malformed_fraction', type=float, default=0.0,
                   help='share of messages deliberately broken (default 0)')
  src.add_argument('--site', default='site-1', help='the site field of network records')
  src.add_argument('--machines', type=int, default=20, help='synthetic hosts (default 20)')
  src.add_argument('--attack_fraction', type=float, default=DEFAULT_ATTACK_FRACTION,
                   help='target share of host records that are attacks '
                        f'(default {DEFAULT_ATTACK_FRACTION})')
  src.add_argument('--network_mix', type=_mix,
                   help='synthetic label weights, e.g. normal=0.8,neptune=0.1,satan=0.1 '
                        '(default: the KDD 10%% file mixture)')
  src.add_argument('--no_labels', action='store_true', help='omit the network label field')
  src.add_argument('--start_time', type=_utc_ms,
                   help='event time of the first message, ISO-8601 (default: now)')

  how = p.add_argument_group('how much and how fast')
  how.add_argument('--count', type=int, help='stop after this many messages')
  how.add_argument('--duration_s', type=float,
                   help='stop after this many seconds of event time (wall time when the rate '
                        'is met)')
  how.add_argument('--rate', type=float, default=1000.0,
                   help='messages per second, all streams together; 0 = as fast as possible '
                        '(default 1000)')
  how.add_argument('--burst', type=float, help='token bucket size (default: rate / 10)')
  how.add_argument('--event_rate', type=float,
                   help='with --rate 0: messages per second of event time, which sets how '
                        'much host activity comes with the network records (default 1000)')

  out = p.add_argument_group('where to')
  out.add_argument('--bootstrap_servers', help='Kafka bootstrap servers, host:port[,...]')
  out.add_argument('--producer_config', type=_key_value, action='append', default=[],
                   metavar='KEY=VALUE', help='extra librdkafka producer setting (repeatable)')
  out.add_argument('--output_dir',
                   help='write network.jsonl, process.jsonl, memory.jsonl here instead')
  for stream in STREAMS:
    out.add_argument(f'--{stream}_topic', default=DEFAULT_TOPICS[stream],
                     help=f'(default {DEFAULT_TOPICS[stream]})')
    out.add_argument(f'--{stream}_format', choices=('json', 'avro'), default='json',
                     help='message encoding (default json; avro: docs/avro.md)')
  out.add_argument('--schema_registry_url',
                   help='Avro messages in the Confluent wire format, their schemas registered '
                        'here (default: bare Avro bodies of the streams\' own schemas)')
  out.add_argument('--flush_timeout_s', type=float, default=60.0,
                   help='wait this long for outstanding Kafka acknowledgements at the end')
  out.add_argument('--no_progress', action='store_true', help='no progress line on stderr')
  out.add_argument('--report_json', help='also write the final report as JSON to this path')
  return p


def producer_config(pairs: Sequence[tuple[str, str]],
                    environ: Mapping[str, str] = os.environ) -> dict[str, str]:
  """librdkafka settings from KAFKA_PRODUCER_* variables, overridden by --producer_config."""
  config = from_environment(environ, ENV_PREFIX)
  config.update(pairs)
  return config


class Progress:
  """A plain-text progress line on stderr: redrawn in place on a terminal, else every 10 s."""

  def __init__(self, enabled: bool, total: Optional[int], duration_s: Optional[float]):
    self.enabled = enabled
    self.total, self.duration_s = total, duration_s
    self.tty = sys.stderr.isatty()
    self.started = self._last = time.monotonic()

  def update(self, sink, malformed: int, event_s: float, force: bool = False) -> None:
    now = time.monotonic()
    if not self.enabled or (not force and now - self._last < (0.5 if self.tty else 10.0)):
      return
    self._last = now
    elapsed = now - self.started
    done = ''
    if self.total:
      done = f' {100.0 * sink.sent / self.total:5.1f}%'
    elif self.duration_s:
      done = f' {min(100.0, 100.0 * event_s / self.duration_s):5.1f}%'
    line = (f'generate:{done} sent {sink.sent} acked {sink.acknowledged} failed {sink.failed} '
            f'malformed {malformed} | {sink.sent / max(elapsed, 1e-9):,.0f} msg/s '
            f'| {elapsed:,.1f} s')
    sys.stderr.write(('\r' + line + '   ') if self.tty else line + '\n')
    sys.stderr.flush()

  def close(self) -> None:
    if self.enabled and self.tty:
      sys.stderr.write('\n')


def run(args: argparse.Namespace) -> dict:
  """Generates and sends; returns the report."""
  topics = {stream: getattr(args, f'{stream}_topic') for stream in STREAMS}
  config = SourceConfig(
      streams=args.streams, source=args.source, kdd_file=args.kdd_file,
      one_sequential_pass=args.one_sequential_pass, count=args.count,
      duration_s=args.duration_s, rate=args.rate, event_rate=args.event_rate, seed=args.seed,
      malformed_fraction=args.malformed_fraction, start_ms=args.start_time, site=args.site,
      machines=args.machines, attack_fraction=args.attack_fraction,
      network_mix=args.network_mix, with_labels=not args.no_labels, topics=topics)
  config.validate()
  if config.start_ms is None:
    config.start_ms = int(time.time() * 1000)
  stream_of = {topics[s]: s for s in config.streams}
  avro = {topics[s]: SCHEMAS[s] for s in config.streams if getattr(args, f'{s}_format') == 'avro'}
  if avro and args.output_dir:
    raise ValueError('--output_dir writes JSON lines; Avro messages go to Kafka')
  encoder = AvroEncoder(avro, args.schema_registry_url, args.seed) if avro else None
  if args.output_dir:
    sink = JsonLinesSink(args.output_dir,
                         {topics[s]: f'{s}.jsonl' for s in config.streams})
  else:
    secrets = producer_config(args.producer_config)
    try:
      sink = KafkaSink(args.bootstrap_servers, secrets)
    except Exception as e:  # a bad setting's message may quote its value
      raise SystemExit(f'generate: cannot create the Kafka producer: {scrub(e, secrets)}')

  bucket = TokenBucket(args.rate, args.burst) if args.rate > 0 else None
  progress = Progress(not args.no_progress, args.count, args.duration_s)
  per_stream = {s: {'sent': 0, 'malformed': 0} for s in config.streams}
  malformed, interrupted = 0, False
  started_wall = time.monotonic()
  event_s = 0.0
  try:
    for message in generate_messages(config):
      event_s = (message.timestamp_ms - config.start_ms) / 1000.0
      if bucket is not None:
        bucket.acquire()
        # Host samples are not sent before their time: a host-only run replays in real time.
        ahead = event_s - (time.monotonic() - started_wall)
        if ahead > 0.001:
          time.sleep(ahead)
      sink.send(encoder.encode(message) if encoder else message)
      counts = per_stream[stream_of[message.topic]]
      counts['sent'] += 1
      if message.malformed:
        malformed += 1
        counts['malformed'] += 1
      if not sink.sent & 255:  # a clock read per message would cost more than the rest
        progress.update(sink, malformed, event_s)
  except KeyboardInterrupt:
    interrupted = True
  finally:
    sink.close(args.flush_timeout_s)
    progress.update(sink, malformed, event_s, force=True)
    progress.close()
  elapsed = time.monotonic() - started_wall
  return {'sent': sink.sent, 'acknowledged': sink.acknowledged, 'failed': sink.failed,
          'malformed': malformed, 'elapsed_s': round(elapsed, 3),
          'messages_per_s': round(sink.sent / max(elapsed, 1e-9), 1),
          'streams': per_stream, 'errors': dict(sink.errors), 'interrupted': interrupted,
          'destination': args.output_dir or 'kafka'}


def format_report(report: dict) -> str:
  streams = ' '.join(f"{s}={c['sent']}" for s, c in report['streams'].items())
  return (f"generate: sent={report['sent']} acknowledged={report['acknowledged']} "
          f"failed={report['failed']} malformed={report['malformed']} "
          f"elapsed_s={report['elapsed_s']} rate={report['messages_per_s']}/s [{streams}]"
          + (' INTERRUPTED' if report['interrupted'] else ''))


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  if bool(args.bootstrap_servers) == bool(args.output_dir):
    parser.error('give exactly one of --bootstrap_servers or --output_dir')
  if args.count is None and args.duration_s is None and not args.one_sequential_pass:
    print('generate: no --count, --duration_s or --one_sequential_pass: running until Ctrl-C',
          file=sys.stderr)
  try:
    report = run(args)
  except (ValueError, OSError) as e:
    parser.error(str(e))
  print(format_report(report))
  if args.report_json:
    with open(args.report_json, 'w') as f:
      json.dump(report, f, indent=2)
  if report['interrupted']:
    return 130
  return 0 if report['failed'] == 0 and report['acknowledged'] == report['sent'] else 1


if __name__ == '__main__':
  sys.exit(main())
