"""A Python SDK worker pool beside a TaskManager: Beam's ``EXTERNAL`` environment.

    scripts/worker_pool.sh start          # or: python -m pipelines.worker_pool --port 50000

The TaskManager asks the pool for a worker (Beam's ``BeamFnExternalWorkerPool`` API); the pool
starts each one with the project's own worker boot, scripts/sdk_worker.sh
(pipelines/sdk_worker.py), as the PROCESS environment does: the worker asks the job's
provision service for its pipeline options and installs what the job staged (``--setup_file``,
``--requirements_file``, ``--extra_package``) before it runs. Nothing depends on where the
job was submitted from. Jobs use it with ``--environment_type=EXTERNAL`` (and
``--environment_config=localhost:<port>`` for another port than 50000).

This is Beam's own pool (``apache_beam.runners.worker.worker_pool_main``) with one change: it
listens on ``--host`` (default 127.0.0.1, where the TaskManager beside it reaches it) instead of
every interface, since whoever reaches it can start processes.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

import grpc
from apache_beam.portability.api import beam_fn_api_pb2_grpc
from apache_beam.runners.worker.worker_pool_main import (BeamFnExternalWorkerPoolServicer,
                                                         kill_process_gracefully)
from apache_beam.utils import thread_pool_executor

from pipelines.runners import DEFAULT_WORKER_POOL_PORT, SDK_WORKER_SCRIPT

_LOG = logging.getLogger('pipelines.worker_pool')


def serve(host: str, port: int, container_executable: str = SDK_WORKER_SCRIPT):
  """Starts the pool on ``host:port``; returns (grpc server, servicer, bound port)."""
  server = grpc.server(thread_pool_executor.shared_unbounded_instance(),
                       options=[('grpc.http2.max_pings_without_data', 0),
                                ('grpc.http2.max_ping_strikes', 0)])
  bound = server.add_insecure_port(f'{host}:{port}')
  if not bound:
    raise SystemExit(f'worker pool: cannot listen on {host}:{port}')
  pool = BeamFnExternalWorkerPoolServicer(use_process=True,
                                          container_executable=container_executable)
  beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(pool, server)
  server.start()
  return server, pool, bound


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(prog='python -m pipelines.worker_pool',
                                   description=__doc__.split('\n\n', 1)[0])
  parser.add_argument('--host', default='127.0.0.1', help='address to listen on (default: '
                      '%(default)s, the TaskManager on this host)')
  parser.add_argument('--port', type=int, default=DEFAULT_WORKER_POOL_PORT,
                      help='port (default: %(default)s)')
  parser.add_argument('--container_executable', default=SDK_WORKER_SCRIPT,
                      help='the worker boot (default: scripts/sdk_worker.sh of this checkout)')
  args = parser.parse_args(argv)
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(name)s %(message)s')
  # The workers run the pool's Python (the venv the project is installed in).
  os.environ.setdefault('BEAM_SDK_PYTHON', sys.executable)
  server, pool, bound = serve(args.host, args.port, args.container_executable)
  _LOG.info('worker pool on %s:%s, workers started with %s', args.host, bound,
            args.container_executable)

  def shutdown(signum, _frame):
    _LOG.info('signal %s: stopping %d worker(s)', signum, len(pool._worker_processes))  # pylint: disable=protected-access
    for process in list(pool._worker_processes.values()):  # pylint: disable=protected-access
      kill_process_gracefully(process, timeout=5)
    server.stop(0)

  signal.signal(signal.SIGTERM, shutdown)
  signal.signal(signal.SIGINT, shutdown)
  server.wait_for_termination()


if __name__ == '__main__':
  main()
