"""The Flink checkpoint flags the stream job adds (pipelines/checkpoints.py)."""

import os

import pytest

from pipelines.checkpoints import with_checkpoint_args


def _storage(argv):
  paths = [a.split('=', 1)[1] for a in argv if a.startswith('--state_backend_storage_path=')]
  return paths[0] if paths else None


def test_embedded_checkpointing_gets_a_filesystem_state_backend():
  argv = with_checkpoint_args(['--flink_master=[local]', '--checkpointing_interval=5000'])
  assert '--state_backend=filesystem' in argv
  assert os.path.isdir(_storage(argv).removeprefix('file://'))
  assert not any(a.startswith('--savepoint_path') for a in argv), 'nothing to resume from'


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
