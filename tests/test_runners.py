"""The runner defaults (pipelines/runners.py): one function, per kind of job, and a flag the
command line gives always wins."""

import json
import os

import pytest

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
