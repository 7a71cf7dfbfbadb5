"""pipelines/services.py: the job server and expansion service kept running across jobs."""

import socket
import subprocess
import sys

import pytest

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.utils.subprocess_server import pick_port

from pipelines import runners, services
from pipelines.stream import StreamOptions


def test_the_flags_it_prints_are_what_a_job_reads():
  flags = services.job_flags(8099, 8097, 8081)
  options = PipelineOptions(['--runner=FlinkRunner', '--flink_master=[local]', *flags])
  assert options.view_as(StreamOptions).expansion_service == 'localhost:8097'
  assert runners.flink_rest_url(options) == 'http://127.0.0.1:8081'
  # A job given --job_endpoint starts no job server of its own.
  with runners.job_server(['--runner=FlinkRunner', '--flink_master=[local]', *flags]) as args:
    assert args.count('--job_endpoint=localhost:8099') == 1


def test_wait_for_port_returns_once_something_listens():
  with socket.socket() as server:
    server.bind(('localhost', 0))
    server.listen()
    sleeper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)'])
    try:
      services.wait_for_port(server.getsockname()[1], sleeper, timeout_s=10)
    finally:
      sleeper.kill()
      sleeper.wait()


def test_wait_for_port_fails_when_the_process_exits_first():
  port, = pick_port(None)  # nothing listens there
  exited = subprocess.Popen([sys.executable, '-c', 'raise SystemExit(3)'])
  with pytest.raises(RuntimeError, match=r'exited \(3\)'):
    services.wait_for_port(port, exited, timeout_s=30)
