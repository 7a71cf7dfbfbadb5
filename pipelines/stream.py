"""The streaming detection job.

    python -m pipelines.stream --help
    python -m pipelines.stream --runner=FlinkRunner --bootstrap_servers=127.0.0.1:9092 \\
        --model_dir=models --output=output
    python -m pipelines.stream --source=files --input_dir=data/ --output=output   # DirectRunner

Reads network, process and memory messages (Kafka, or JSON-lines files), detects anomalies and
host attacks (and surges of connections: volume anomalies), groups the alerts into incidents,
and writes the archive, attacks, alerts, incidents and dead letters as Parquet under
``--output``; alerts also go to the Kafka topic ``--alerts_topic``, incidents to
``--incidents_topic``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import signal
import sys
import threading
import time
from typing import Callable, Iterator, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.runners.runner import PipelineState
from apache_beam.options.pipeline_options import (KafkaStreamsRunnerOptions, PipelineOptions,
                                                  SetupOptions, StandardOptions)

from model import signing
from pipelines import kafka_config, options as job_options, runners, startup, storage
from pipelines.options import ModelRegistryOptions
from pipelines.summary import print_summary, watch
from schemas.layout import INCIDENTS
from schemas.limits import DEFAULT_MAX_EVENT_AGE_S, DEFAULT_MAX_EVENT_LEAD_S
from schemas.records import ALERTS_TOPIC, INCIDENTS_TOPIC, SCHEMAS
from transforms import kafka_io, kafka_publish
from transforms.avro_decode import avro_decoders
from transforms.alerts import FormatAlertMessages
from transforms.detect import ALERTS_BY_KIND, DetectAttacks
from transforms.enrich import EventTimeBounds
from transforms.incidents import DEFAULT_GAP_S, DEFAULT_UPDATE_S, FormatIncidentMessages
from transforms.outputs import WriteOutputs
from transforms.parse import DEFAULT_BATCH_SIZE
from transforms.sources import ReadMessageFiles
from transforms.volume import VolumeParams

log = logging.getLogger('pipelines.stream')
MESSAGE_FORMATS = ('json', 'avro')


class StreamOptions(PipelineOptions):
  """The job's own flags; Beam's (--runner, --flink_master, ...) are listed after them."""

  @classmethod
  def _add_argparse_args(cls, parser):
    group = parser.add_argument_group(
        'detection job', 'Kafka brokers are given with Beam\'s own --bootstrap_servers '
        '(default localhost:9092).')
    group.add_argument('--source', choices=('kafka', 'files'), default='kafka',
                       help='Where messages come from (default: kafka). "files" reads the '
                       'JSON-lines files of --input_dir once, as a batch job.')
    for stream, schema in SCHEMAS.items():
      group.add_argument(f'--{stream}_topic', default=schema.default_topic,
                         help=f'Kafka topic of {stream} messages (default: %(default)s).')
      group.add_argument(f'--{stream}_format', choices=MESSAGE_FORMATS, default='json',
                         help=f'How {stream} messages are encoded (default: %(default)s; '
                         'avro: see docs/avro.md).')
    group.add_argument('--schema_registry_url', default=None,
                       help='Avro topics are in the Confluent wire format (magic byte, schema '
                       'id) and writer schemas come from this Confluent-compatible schema '
                       'registry, e.g. http://registry:8081 (Apicurio: .../apis/ccompat/v7).')
    group.add_argument('--avro_schema_file', action='append', default=[],
                       metavar='[STREAM=]PATH',
                       help='Avro messages of STREAM are bare Avro bodies written with the '
                       'schema in this .avsc file (read at launch), repeatable; without it or '
                       'a registry, with the stream\'s own schema (python -m schemas.avro).')
    group.add_argument('--alerts_topic', default=ALERTS_TOPIC,
                       help='Kafka topic alerts are published to (default: %(default)s); '
                       'empty to publish none.')
    group.add_argument('--incidents_topic', default=INCIDENTS_TOPIC,
                       help='Kafka topic incidents (alerts grouped) are published to '
                       '(default: %(default)s); empty to publish none.')
    group.add_argument('--kafka_producer', choices=kafka_publish.PRODUCERS,
                       default=kafka_publish.PYTHON,
                       help='How alerts and incidents are published (default: %(default)s). '
                       'python: from the Python workers with librdkafka, as soon as they are '
                       'made, the Kafka settings translated from their Java names (SASL PLAIN '
                       'and SCRAM, PEM and PKCS#12 key material); java: through KafkaIO\'s '
                       'writer in the Flink JVM, for settings only the Java client has (JKS '
                       'trust stores, Kerberos, OAuth). See docs/operations.md.')
    group.add_argument('--incident_gap_s', type=float, default=DEFAULT_GAP_S,
                       help='An incident closes after this many seconds of event time without '
                       'a new alert of its kind and key (default: %(default)s).')
    group.add_argument('--incident_update_s', type=float, default=DEFAULT_UPDATE_S,
                       help='At most one update of an open incident per this many seconds of '
                       'event time (default: %(default)s).')
    group.add_argument('--volume_window_s', type=float, default=VolumeParams().window_s,
                       help='The volume detector counts connections in event-time windows of '
                       'this many seconds (default: %(default)s; docs/detection.md).')
    group.add_argument('--kafka_config', action='append', default=[], metavar='KEY=VALUE',
                       help='Extra Kafka client setting, repeatable (security.protocol, '
                       'sasl.mechanism, ssl.truststore.location, ...).')
    group.add_argument('--kafka_config_file', default=None,
                       help='A Java-properties file of Kafka client settings. Put secrets '
                       '(sasl.jaas.config, passwords) here, not on the command line, where '
                       'process listings and the Flink UI would show them.')
    group.add_argument('--expansion_service', default=None, metavar='HOST:PORT',
                       help='The Kafka transforms\' expansion service kept running by '
                       '`python -m pipelines.services` (with its --job_endpoint): no '
                       'expansion-service JVM starts with the job.')
    group.add_argument('--consumer_group', default='attack-detection',
                       help='Kafka consumer group; with --checkpointing_interval its offsets are '
                       'committed at each completed Flink checkpoint (default: %(default)s).')
    group.add_argument('--checkpoint_dir', default=None,
                       help='With --checkpointing_interval on a Flink cluster: keep checkpoints '
                       'here, also after a cancel, and resume from the newest one at start '
                       '(the committed offsets alone lose the records of the unwritten '
                       'output roll; see pipelines/runners.py). A local path or s3://... '
                       '(docs/operations.md, "Checkpoints and savepoints").')
    group.add_argument('--stop_with_savepoint', action='store_true',
                       help='On Flink, with --checkpoint_dir: when the job is stopped '
                       '(--run_for_s, Ctrl-C), stop it with a savepoint under '
                       '<checkpoint_dir>/savepoints instead of cancelling it; the next run '
                       'with the same --checkpoint_dir resumes from it.')
    group.add_argument('--run_for_s', type=float, default=None,
                       help='Run this long, then stop the job (reading stops at once: records '
                       'not yet in a rolled file are not written, and their offsets are not '
                       'committed, so the next run reads them again).')
    group.add_argument('--max_read_time_s', type=int, default=None,
                       help='Stop reading Kafka after this many seconds and finish the job '
                       '(a bounded run: demos, benchmarks, tests).')
    group.add_argument('--max_records', type=int, default=None,
                       help='Stop after reading this many Kafka records. KafkaIO splits the '
                       'count over its readers, so with unevenly filled partitions a reader can '
                       'wait for records that never come: pair it with --max_read_time_s.')
    group.add_argument('--input_dir', default=None,
                       help='With --source=files: a folder holding network.jsonl, '
                       'process.jsonl and/or memory.jsonl (the generator\'s file sink).')
    group.add_argument('--output', default='output',
                       help='Output root: a local path, s3://... or gs://... '
                       '(default: %(default)s).')
    group.add_argument('--site', default='local',
                       help='This deployment\'s site name, used for records without one and '
                       'in output file names (default: %(default)s).')
    group.add_argument('--model_refresh_s', type=float, default=10.0,
                       help='How often workers look for a newer model version, seconds; '
                       '0 disables hot reload (default: %(default)s).')
    group.add_argument('--roll_seconds', type=int, default=60,
                       help='Streaming output files are closed and a new set started every '
                       'this many seconds (default: %(default)s).')
    group.add_argument('--num_shards', type=int, default=1,
                       help='Files per output folder, date and roll (default: %(default)s).')
    group.add_argument('--batch_size', type=int, default=DEFAULT_BATCH_SIZE,
                       help='Records per batch: what the model scores in one call and the '
                       'archive writes as one table (default: %(default)s; batches also end '
                       'with each runner bundle, see --max_bundle_size / '
                       '--max_bundle_time_mills).')
    group.add_argument('--allowed_lateness_s', type=int, default=20,
                       help='How late a host record may arrive and still join '
                       '(default: %(default)s).')
    group.add_argument('--max_event_age_s', type=float, default=DEFAULT_MAX_EVENT_AGE_S,
                       help='A record whose event time is more than this many seconds before '
                       'the processing time is a dead letter (stage enrich); 0 accepts any age, '
                       'e.g. to replay historical data (default: %(default)s, 7 days).')
    group.add_argument('--max_event_lead_s', type=float, default=DEFAULT_MAX_EVENT_LEAD_S,
                       help='A record whose event time is more than this many seconds after '
                       'the processing time (a producer clock ahead) is a dead letter (stage '
                       'enrich); 0 accepts any (default: %(default)s).')


def file_patterns(input_dir: str) -> dict[str, str]:
  names = {s: f'{s}.jsonl' for s in SCHEMAS}
  patterns = {s: FileSystems.join(input_dir, name) for s, name in names.items()}
  present = {s: p for s, p in patterns.items() if FileSystems.exists(p)}
  if not present:
    raise SystemExit(f'--input_dir {input_dir} holds none of {", ".join(names.values())}; '
                     'write them with `python -m pipelines.generate --output_dir ...`.')
  return present


def bootstrap_servers(opts: PipelineOptions) -> str:
  # Beam already defines --bootstrap_servers (for its Kafka Streams runner); we share it.
  return opts.view_as(KafkaStreamsRunnerOptions).bootstrap_servers


def kafka_client_config(opts: StreamOptions) -> dict[str, str]:
  return kafka_config.client_config(opts.kafka_config, opts.kafka_config_file)


def message_decoders(opts: StreamOptions) -> dict:
  """stream -> decoder of the streams whose --<stream>_format is not json."""
  formats = {s: getattr(opts, f'{s}_format') for s in SCHEMAS}
  if opts.source == 'files' and 'avro' in formats.values():
    raise SystemExit('--source=files reads JSON lines; Avro messages are read from Kafka')
  try:
    return avro_decoders(formats, SCHEMAS, opts.schema_registry_url, opts.avro_schema_file)
  except (OSError, ValueError) as e:
    raise SystemExit(str(e)) from None


def read_messages(pipeline: beam.Pipeline, opts: StreamOptions):
  if opts.source == 'files':
    if not opts.input_dir:
      raise SystemExit('--source=files needs --input_dir')
    return pipeline | 'ReadFiles' >> ReadMessageFiles(file_patterns(opts.input_dir))
  topics = {getattr(opts, f'{s}_topic'): s for s in SCHEMAS}
  # --checkpointing_interval is the Flink runner's own (Java) option: Python passes it through.
  interval = opts.get_all_options(retain_unknown_options=True).get('checkpointing_interval')
  checkpointing = int(interval or -1) > 0
  # Batches of messages, not one element per message: DetectAttacks routes them in one call.
  return pipeline | 'ReadKafka' >> kafka_io.ReadKafkaBatches(
      bootstrap_servers(opts), topics, kafka_client_config(opts),
      group_id=opts.consumer_group, commit_offsets=checkpointing,
      max_num_records=opts.max_records, max_read_time_s=opts.max_read_time_s,
      expansion_service=opts.expansion_service)


def build(pipeline: beam.Pipeline, opts: StreamOptions) -> None:
  """Source -> DetectAttacks -> Parquet (+ alerts to Kafka when reading Kafka)."""
  # Before any path is touched (--input_dir is checked here); see pipelines.storage. ``opts``
  # is a view of the pipeline's own options, so what configure() normalises reaches workers.
  storage.configure(opts)
  model_dir = opts.view_as(ModelRegistryOptions).model_dir
  if storage.uses_s3(opts.output, model_dir, opts.input_dir):
    log.info('%s', storage.describe(opts))
  publish = publisher(opts)
  outputs = read_messages(pipeline, opts) | DetectAttacks(
      model_dir, site=opts.site,
      model_refresh_s=opts.model_refresh_s,
      allowed_lateness_s=opts.allowed_lateness_s, batch_size=opts.batch_size,
      event_time_bounds=EventTimeBounds(opts.max_event_age_s, opts.max_event_lead_s),
      public_keys=signing.reader_keys(
          opts.view_as(ModelRegistryOptions).model_public_key),
      decoders=message_decoders(opts),
      volume=VolumeParams(window_s=opts.volume_window_s),
      incident_gap_s=opts.incident_gap_s, incident_update_s=opts.incident_update_s)
  _ = outputs | WriteOutputs(opts.output, site=opts.site, roll_seconds=opts.roll_seconds,
                             num_shards=opts.num_shards)
  if not publish:
    return
  if opts.alerts_topic:
    for kind, key in ALERTS_BY_KIND.items():
      # One sink per kind: network alerts go out from the scoring stage itself, without
      # waiting on a flatten with the join's host alerts.
      _ = (outputs[key]
           | f'FormatAlerts[{kind}]' >> FormatAlertMessages()
           | f'PublishAlerts[{kind}]' >> publish(opts.alerts_topic))
  if opts.incidents_topic:
    _ = (outputs[INCIDENTS]
         | 'FormatIncidents' >> FormatIncidentMessages()
         | 'PublishIncidents' >> publish(opts.incidents_topic))


def publisher(opts: StreamOptions) -> Optional[Callable[[str], kafka_io.PublishToKafka]]:
  """topic -> the transform that publishes to it, as ``--kafka_producer`` says; None when the
  job publishes nothing. Checked before anything is built: settings librdkafka cannot take
  stop the job here, with what to do."""
  if opts.source != 'kafka' or not (opts.alerts_topic or opts.incidents_topic):
    return None
  config = kafka_client_config(opts)
  if opts.kafka_producer == kafka_publish.PYTHON:
    try:
      kafka_publish.librdkafka_config(config)
    except kafka_publish.UntranslatableConfig as e:
      raise SystemExit(f'{e}: publish with --kafka_producer=java (KafkaIO\'s Java writer), '
                       'or give the setting in a form librdkafka has (docs/operations.md, '
                       '"Kafka client settings")') from None
  return functools.partial(
      kafka_io.PublishToKafka, bootstrap_servers(opts), producer_config=config,
      producer=opts.kafka_producer, expansion_service=opts.expansion_service)


def with_stream_defaults(argv: Sequence[str]) -> list[str]:
  """``argv`` with the runner defaults (pipelines/runners.py) for this job: a streaming job
  when it reads Kafka, a batch job when it reads files once."""
  return runners.with_runner_defaults(
      argv, runners.STREAMING if _reads_kafka(argv) else runners.BATCH)


def _reads_kafka(argv: Sequence[str]) -> bool:
  return PipelineOptions(list(argv)).view_as(StreamOptions).source == 'kafka'


def run(argv: Optional[Sequence[str]] = None,
        timeline: Optional[startup.StartupTimeline] = None
        ) -> beam.runners.runner.PipelineResult:
  """Runs the job until it ends (or ``--run_for_s``); ``timeline`` (made here without one)
  collects the startup phases and logs them at the first archived row (pipelines/startup.py)."""
  timeline = timeline or startup.StartupTimeline(started=time.time())
  argv = with_stream_defaults(argv or [])
  # The SDK workers' fork server preloads their imports while the job server starts.
  with runners.forked_sdk_workers(argv), runners.job_server(argv, _reads_kafka(argv)) as args:
    timeline.mark(startup.JOB_SERVER)
    return _run(PipelineOptions(args), timeline)


def submit(options: PipelineOptions,
           timeline: Optional[startup.StartupTimeline] = None
           ) -> beam.runners.runner.PipelineResult:
  """Builds and starts the job; returns at once (fault tests and benchmarks stop it with
  :func:`stop`)."""
  timeline = timeline or startup.StartupTimeline(started=time.time())
  opts = options.view_as(StreamOptions)
  if opts.stop_with_savepoint and not (opts.checkpoint_dir and runners.is_flink(options)):
    raise SystemExit('--stop_with_savepoint needs --runner=FlinkRunner and --checkpoint_dir')
  if opts.source == 'kafka':
    options.view_as(StandardOptions).streaming = True
  # The job imports its own packages on workers; they are installed there from setup.py.
  options.view_as(SetupOptions).save_main_session = False
  pipeline = beam.Pipeline(options=options)
  with _expansion_scope(opts, timeline):
    build(pipeline, opts)
  timeline.mark(startup.EXPANSION)
  # The Kafka transforms hold their settings now. Left in the options, --kafka_config values
  # (SASL passwords, JAAS lines) would go to the job server and every SDK worker, which logs
  # all options at start. The pipeline runs with its own copy of the options.
  pipeline.options.view_as(StreamOptions).kafka_config = None
  result = pipeline.run()
  timeline.mark(startup.SUBMISSION)
  return result


@contextlib.contextmanager
def _expansion_scope(opts: StreamOptions, timeline: startup.StartupTimeline) -> Iterator[None]:
  """One expansion-service JVM for every Kafka transform of the pipeline where none is named
  (on Flink the job server's serves them: pipelines/runners.py ``job_server``): without an
  outer ``with``, ReadKafkaMessages and PublishToKafka each start and stop their own, two JVM
  starts at every job start (benchmarks/README.md, "Figures behind the code's defaults").

  The JVM is stopped in a thread of its own once the pipeline is built: Beam's stop sends it
  SIGINT and sleeps a second at a time until it exits, and the submission need not wait for
  that. The thread is not a daemon, so the interpreter waits for it (no JVM left behind)."""
  if opts.source != 'kafka' or opts.expansion_service:
    yield
    return
  service = kafka_io.expansion_service()
  service.__enter__()  # starts the JVM and waits until it answers
  timeline.mark(startup.EXPANSION_SERVICE)
  try:
    yield
  finally:
    threading.Thread(target=service.__exit__, args=(None, None, None),
                     name='stop-expansion-service').start()


@contextlib.contextmanager
def running(argv: Sequence[str]) -> Iterator[beam.runners.runner.PipelineResult]:
  """The job running for the span of a ``with`` block (its own job server on Flink), then
  cancelled: for callers that decide themselves when to stop (fault tests, the soak)."""
  argv = with_stream_defaults(argv)
  with runners.forked_sdk_workers(argv), runners.job_server(argv, _reads_kafka(argv)) as args:
    timeline = startup.StartupTimeline(started=time.time())
    timeline.mark(startup.JOB_SERVER)
    options = PipelineOptions(args)
    result = submit(options, timeline)
    try:
      with startup.watch(timeline, result, runners.flink_rest_url(options),
                         options.view_as(StreamOptions).output):
        yield result
    finally:
      stop(result, options)


def _run(options: PipelineOptions,
         timeline: startup.StartupTimeline) -> beam.runners.runner.PipelineResult:
  opts = options.view_as(StreamOptions)
  result = submit(options, timeline)
  # A stopped portable job reports no counters: read them from Flink while it runs.
  with watch(result, options) as counts, startup.watch(
      timeline, result, runners.flink_rest_url(options), opts.output):
    try:
      if opts.run_for_s:
        result.wait_until_finish(duration=int(opts.run_for_s * 1000))
      else:
        result.wait_until_finish()
    except KeyboardInterrupt:
      log.info('interrupted (Ctrl-C or SIGTERM)')
    if not PipelineState.is_terminal(result.state):
      log.info('stopping the job')
      counts.read()
      stop(result, options)
  print_summary(result, opts, fallback=counts.last)
  return result


def stop(result, options: PipelineOptions) -> None:
  """Cancels a running job (on a Flink session cluster too), or, with
  ``--stop_with_savepoint``, stops it with a savepoint under ``<checkpoint_dir>/savepoints``."""
  opts = options.view_as(StreamOptions)
  if opts.stop_with_savepoint:
    target = FileSystems.join(opts.checkpoint_dir, runners.SAVEPOINTS)
    print(f'savepoint: {runners.stop_with_savepoint(result, options, target)}', file=sys.stderr)
    return
  runners.cancel(result, options)


def help_parser() -> argparse.ArgumentParser:
  """--help: the job's flags, then the Beam flags that matter for running it."""
  return job_options.help_parser(
      'python -m pipelines.stream', '%(prog)s [options]', __doc__, [StreamOptions],
      [('Beam: Kafka', KafkaStreamsRunnerOptions),
       ('a job server kept running (python -m pipelines.services)',
        runners.ReusedJobServerOptions)])


def main() -> None:
  if {'-h', '--help'} & set(sys.argv[1:]):
    help_parser().print_help()
    return
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(name)s %(message)s')
  # SIGTERM (kill, systemd, Kubernetes) stops the job as Ctrl-C does: cancelled, or stopped
  # with a savepoint, and the summary printed.
  signal.signal(signal.SIGTERM, signal.default_int_handler)
  # Beam's worker logs at INFO are a flood; keep ours and its warnings.
  logging.getLogger('apache_beam').setLevel(logging.WARNING)
  timeline = startup.StartupTimeline()  # from the process's own start
  timeline.mark(startup.PYTHON_START)
  run(sys.argv[1:], timeline)


if __name__ == '__main__':
  main()
