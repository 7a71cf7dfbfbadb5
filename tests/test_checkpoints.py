"""The Flink checkpoint flags the runner set-up adds (pipelines/runners.py), and checkpointing
on by default for the stream job on Flink when it reads Kafka (pipelines/stream.py)."""

import os

import pytest

from pipelines.runners import (STREAM_CHECKPOINTING_MS, remove_temporary_storage,
                               with_checkpoint_args)
from pipelines.stream import with_stream_defaults


def _storage(argv):
  paths = [a.split('=', 1)[1] for a in argv if a.startswith('--state_backend_storage_path=')]
  return paths[0] if paths else None


def test_embedded_checkpointing_gets_a_filesystem_state_backend():
  argv = with_checkpoint_args(['--flink_master=[local]', '--checkpointing_interval=5000'])
  assert '--state_backend=filesystem' in argv
  assert os.path.isdir(_storage(argv).removeprefix('file://'))
  assert not any(a.startswith('--savepoint_path') for a in argv), 'nothing to resume from'
  remove_temporary_storage(argv)


@pytest.mark.parametrize('argv', [
    ['--flink_master=[local]'],  # no checkpointing
    ['--flink_master=localhost:8081', '--checkpointing_interval=5000'],  # the cluster's config
    ['--checkpointing_interval=5000', '--state_backend=rocksdb'],  # the user's choice
])
def test_other_jobs_keep_their_state_backend(argv):
  assert with_checkpoint_args(argv) == argv


def test_checkpoint_dir_keeps_checkpoints_and_resumes_from_the_newest(tmp_path):
  argv = ['--flink_master=localhost:8081', '--checkpointing_interval=5000',
          f'--checkpoint_dir={tmp_path}']
  first = with_checkpoint_args(argv)
  assert _storage(first) == f'file://{tmp_path}'
  assert '--retain_externalized_checkpoints_on_cancellation' in first
  assert not any(a.startswith('--savepoint_path') for a in first)
  newest = tmp_path / 'job' / 'chk-7'
  newest.mkdir(parents=True)
  (newest / '_metadata').write_bytes(b'')
  assert f'--savepoint_path={newest}' in with_checkpoint_args(argv)


def test_checkpoint_dir_needs_an_interval(tmp_path):
  with pytest.raises(SystemExit, match='checkpointing_interval'):
    with_checkpoint_args([f'--checkpoint_dir={tmp_path}'])


def _flag(argv, name):
  values = [a.split('=', 1)[1] for a in argv if a.startswith(f'{name}=')]
  return values[-1] if values else None


def test_streaming_jobs_on_flink_checkpoint_by_default():
  argv = with_stream_defaults(['--runner=FlinkRunner', '--flink_master=[local]'])
  assert _flag(argv, '--checkpointing_interval') == str(STREAM_CHECKPOINTING_MS)
  storage = _storage(argv).removeprefix('file://')
  assert '--state_backend=filesystem' in argv and os.path.isdir(storage)
  remove_temporary_storage(argv)
  assert not os.path.exists(storage)


@pytest.mark.parametrize('argv', [
    ['--runner=FlinkRunner', '--checkpointing_interval=-1'],  # turned off
    ['--runner=FlinkRunner', '--checkpointing_interval', '-1'],
    ['--runner=FlinkRunner', '--source=files', '--input_dir=x'],  # a batch job
    ['--source=kafka'],  # not Flink
])
def test_checkpointing_stays_off_when_asked_or_not_streaming_on_flink(argv):
  out = with_stream_defaults(argv)
  assert not any(a.startswith('--checkpointing_interval=') for a in out[len(argv):])
  assert _storage(out) is None


def test_an_explicit_interval_is_kept():
  argv = with_stream_defaults(['--runner=FlinkRunner', '--checkpointing_interval=2000'])
  assert [a for a in argv if 'checkpointing_interval' in a] == ['--checkpointing_interval=2000']
  remove_temporary_storage(argv)


def test_only_the_temporary_state_folder_is_removed(tmp_path):
  named = tmp_path / 'attack-detection-checkpoints-mine'
  named.mkdir()
  remove_temporary_storage([f'--state_backend_storage_path=file://{named}'])
  assert named.is_dir()
