"""The stream job's JVM services kept running across job runs: a Flink job server (with an
embedded Flink) and, in the same JVM, the Kafka transforms' expansion service.

    python -m pipelines.services                   # prints the flags, runs until Ctrl-C / SIGTERM
    python -m pipelines.stream --runner=FlinkRunner ... $(cat .run/services.flags)

Each job otherwise starts and stops its own job server, and a cold JVM loads and compiles the
classes of translation and expansion anew each time (docs/RUNTIME.md, "Startup"). A job
given ``--job_endpoint``, ``--expansion_service`` and ``--flink_rest_url`` of these starts no
JVM of its own. Every server listens on loopback, as the job's own ones do. One job at a time: each
job's embedded Flink takes the fixed REST port while it runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading

from apache_beam.options.pipeline_options import PipelineOptions, PortableOptions
from apache_beam.utils.subprocess_server import pick_port

from pipelines import runners
from transforms import jvm

_LOG = logging.getLogger('pipelines.services')


def job_flags(job_port: int, expansion_port: int, rest_port: int) -> list[str]:
  """What a job adds to its command line to use these services."""
  return [f'--job_endpoint=localhost:{job_port}',
          f'--expansion_service={jvm.LOCAL_HOST}:{expansion_port}',
          f'--flink_rest_url=http://127.0.0.1:{rest_port}']


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog='python -m pipelines.services',
                                   description=__doc__.split('\n\n', 1)[0])
  parser.add_argument('--job_port', type=int, default=None, help='job service port (default: free)')
  parser.add_argument('--expansion_port', type=int, default=None,
                      help='expansion service port (default: free)')
  parser.add_argument('--rest_port', type=int, default=None,
                      help='the embedded Flink\'s REST API port (default: free)')
  parser.add_argument('--flags_file', default=None,
                      help='also write the job flags to this file, one line, once both answer')
  args, beam_args = parser.parse_known_args(argv)
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(name)s %(message)s')
  logging.getLogger('apache_beam').setLevel(logging.WARNING)
  # The job server is the stream job's own (pipelines/runners.py): the same jar, Flink version,
  # loopback binding and embedded Flink configuration.
  server_args = runners.with_flink_defaults(
      ['--runner=FlinkRunner', '--flink_master=[local]', *beam_args])
  rest_port, expansion_port = pick_port(args.rest_port, args.expansion_port)
  stopping = threading.Event()
  signal.signal(signal.SIGTERM, lambda *_: stopping.set())
  try:
    with runners.flink_job_server(server_args, job_port=args.job_port, rest_port=rest_port,
                                  kafka_expansion=True,
                                  expansion_port=expansion_port) as with_endpoint:
      job_port = int(PipelineOptions(with_endpoint).view_as(
          PortableOptions).job_endpoint.rsplit(':', 1)[1])
      flags = ' '.join(job_flags(job_port, expansion_port, rest_port))
      if args.flags_file:
        tmp = f'{args.flags_file}.tmp'
        with open(tmp, 'w', encoding='utf-8') as f:
          f.write(flags + '\n')
        os.replace(tmp, args.flags_file)
      print(flags, flush=True)
      _LOG.info('job server and expansion service running; jobs add: %s', flags)
      try:
        while not stopping.wait(1):
          pass
      except KeyboardInterrupt:
        pass
  finally:
    if args.flags_file and os.path.exists(args.flags_file):
      os.remove(args.flags_file)


if __name__ == '__main__':
  main()
