"""The runner defaults (pipelines/runners.py): one function, per kind of job, and a flag the
command line gives always wins."""

import json
import os
import socket
import threading

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from harness.ports import free_port
from pipelines import runners
from transforms import jvm


def _flag(argv, name):
  values = [a.split('=', 1)[1] if '=' in a else '' for a in argv
            if a == name or a.startswith(f'{name}=')]
  return values[-1] if values else None


@pytest.fixture(name='pinned')
def _pinned():
  try:
    return jvm.flink_job_server_jar()
  except FileNotFoundError as e:
    pytest.skip(str(e))


def test_a_streaming_job_on_flink_gets_every_default(pinned):
  argv = runners.with_runner_defaults(['--runner=FlinkRunner', '--flink_master=[local]'],
                                      runners.STREAMING)
  try:
    assert _flag(argv, '--flink_job_server_jar') == pinned
    assert _flag(argv, '--flink_version') == jvm.FLINK_VERSION
    assert _flag(argv, '--environment_type') == 'PROCESS'
    assert json.loads(_flag(argv, '--environment_config')) == {
        'command': runners.SDK_WORKER_SCRIPT}
    assert int(_flag(argv, '--sdk_worker_parallelism')) >= 2
    assert _flag(argv, '--checkpointing_interval') == str(runners.STREAM_CHECKPOINTING_MS)
    assert _flag(argv, '--state_backend') == 'filesystem'
    for flag, value in runners.STREAMING_FLINK_DEFAULTS.items():
      assert _flag(argv, flag) == ('' if value is None else value), flag
  finally:
    runners.remove_temporary_storage(argv)


def test_a_batch_job_on_flink_gets_the_runner_but_no_streaming_defaults(pinned):
  argv = runners.with_runner_defaults(['--runner=FlinkRunner'], runners.BATCH)
  assert _flag(argv, '--flink_job_server_jar') == pinned
  assert _flag(argv, '--environment_type') == 'PROCESS'
  assert _flag(argv, '--checkpointing_interval') is None
  assert _flag(argv, '--state_backend') is None
  assert not set(runners.STREAMING_FLINK_DEFAULTS) & {a.split('=', 1)[0] for a in argv}


def test_given_flags_win(pinned):
  given = ['--runner=FlinkRunner', '--environment_type=LOOPBACK', '--max_bundle_size=7',
           '--checkpointing_interval=-1', '--flink_version=1.19']
  argv = runners.with_runner_defaults(given, runners.STREAMING)
  assert argv[:len(given)] == given
  added = {a.split('=', 1)[0] for a in argv[len(given):]}
  assert not added & {a.split('=', 1)[0] for a in given}
  assert _flag(argv, '--environment_config') is None, 'no worker script for LOOPBACK'


def test_without_a_runner_the_direct_runner_and_nothing_else():
  for kind in (runners.STREAMING, runners.BATCH):
    assert runners.with_runner_defaults(['--output=x'], kind) == [
        '--output=x', '--runner=DirectRunner']


def test_without_the_pinned_jar_a_batch_job_falls_back_and_a_streaming_job_says_why(
    tmp_path, monkeypatch):
  monkeypatch.setenv('BEAM_JARS_DIR', str(tmp_path))
  argv = runners.with_runner_defaults(['--runner=FlinkRunner'], runners.BATCH)
  assert argv == ['--runner=FlinkRunner', '--environment_type=LOOPBACK']
  with pytest.raises(FileNotFoundError, match='fetch_jars.sh'):
    runners.with_runner_defaults(['--runner=FlinkRunner', '--checkpointing_interval=-1'],
                                 runners.STREAMING)


def test_an_unknown_kind_is_refused():
  with pytest.raises(ValueError, match='kind'):
    runners.with_runner_defaults([], 'stream')


@pytest.mark.parametrize('master, embedded', [
    (None, True), ('[local]', True), ('[auto]', True), (' [local] ', True),
    ('localhost:8081', False), ('http://flink:8081', False)])
def test_embedded_or_cluster(master, embedded):
  assert runners.is_embedded(master) is embedded


def test_the_job_server_block_removes_the_temporary_state_folder():
  argv = runners.with_checkpoint_args(['--flink_master=[local]', '--checkpointing_interval=5000'])
  storage = _flag(argv, '--state_backend_storage_path').removeprefix('file://')
  with runners.job_server(argv) as args:  # not on Flink: argv unchanged, no job server
    assert args == argv
  assert not os.path.exists(storage)


class _Starting:
  """What flink_job_server's start thread calls: start(), which ends when told to."""

  def __init__(self, error=None):
    self.release, self.error = threading.Event(), error

  def start(self):
    self.release.wait(10)
    if self.error:
      raise self.error


def test_a_job_server_starting_in_a_thread_is_awaited_before_submission():
  server = _Starting()
  starting = runners._start_in_thread(server)
  endpoint = f'localhost:{free_port()}'
  runners._STARTING[endpoint] = starting
  options = PipelineOptions([f'--job_endpoint={endpoint}'])
  with socket.create_server((jvm.LOCAL_HOST, 0)) as expansion:
    # The expansion service answers first: the pipeline can be built while the start goes on.
    runners._await_port(expansion.getsockname()[1], starting)
    assert runners.job_server_starting(options)
    server.release.set()
    runners.await_job_server(options)
    assert not runners.job_server_starting(options)
  runners._finish_start(endpoint, starting)
  assert endpoint not in runners._STARTING


def test_a_job_server_that_fails_to_start_fails_the_wait_for_its_expansion_service():
  server = _Starting(RuntimeError('Service failed to start up with error 1'))
  starting = runners._start_in_thread(server)
  server.release.set()
  with pytest.raises(RuntimeError, match='failed to start'):
    runners._await_port(free_port(), starting)  # nothing ever listens there
  endpoint = f'localhost:{free_port()}'
  runners._STARTING[endpoint] = starting
  with pytest.raises(RuntimeError, match='failed to start'):
    runners.await_job_server(PipelineOptions([f'--job_endpoint={endpoint}']))
  runners._finish_start(endpoint, starting)


class _CancelledInvocation:
  """What cancel_flink_job reads of a Beam PipelineResult: its job id and cancel()."""
  _job_id = 'stream_0123456789abcdef'

  def __init__(self):
    self.cancelled = False

  def cancel(self):
    self.cancelled = True


def test_cancel_when_flink_is_already_gone_warns_instead_of_failing(caplog):
  """The embedded Flink of a job server kept running shuts down with its last job: after the
  Beam cancel, nothing answers on its REST port, and stopping the job must not crash."""
  result = _CancelledInvocation()
  gone = f'localhost:{free_port()}'  # nothing listens there
  with caplog.at_level('WARNING', logger=runners._LOG.name):  # pylint: disable=protected-access
    runners.cancel_flink_job(result, gone)
  assert result.cancelled
  assert any('could not reach Flink' in r.getMessage() for r in caplog.records)
