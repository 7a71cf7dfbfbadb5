"""Resuming the stream job from its own retained Flink checkpoint (``--checkpoint_dir``).

Why not just the committed Kafka offsets: offsets are committed when a checkpoint completes,
but at that moment the records of the current output roll are still buffered in the Parquet
sink's state (a GroupByKey waiting for its processing-time trigger). A cancelled job loses
that state, and a new job starting from the committed offsets never reads those records again
(measured: 81 of 3,000 records lost in one cancel). Restoring the checkpoint restores the
buffer together with the reader's offsets, so nothing is lost; the records read after the
checkpoint are read again (duplicates, removable by uuid).

With ``--checkpoint_dir DIR`` the job keeps its checkpoints under ``DIR`` (also after a
cancel) and, at start, resumes from the newest one found there (``--savepoint_path``, which
Beam's Flink runner honours when submitting to a cluster, ``--flink_master=host:port``).
"""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from typing import Optional, Sequence

FLAG = '--checkpoint_dir'
_TEMPORARY_PREFIX = 'attack-detection-checkpoints-'


def newest_checkpoint(checkpoint_dir: str) -> Optional[str]:
  """The newest complete retained checkpoint under ``checkpoint_dir`` (``<job id>/chk-<n>``,
  complete once Flink has written its ``_metadata``), or None."""
  found = glob.glob(os.path.join(checkpoint_dir, '*', 'chk-*', '_metadata'))
  if not found:
    return None
  return os.path.dirname(max(found, key=os.path.getmtime))


def _value(argv: Sequence[str], flag: str) -> Optional[str]:
  for i, arg in enumerate(argv):
    if arg.startswith(flag + '='):
      return arg.split('=', 1)[1]
    if arg == flag and i + 1 < len(argv):
      return argv[i + 1]
  return None


def with_checkpoint_args(argv: Sequence[str]) -> list[str]:
  """Adds the Flink runner options that keep checkpoints under ``--checkpoint_dir`` and
  resume from the newest one (unless ``--savepoint_path`` is given).

  Without ``--checkpoint_dir``, a checkpointing job on the embedded Flink still gets a
  filesystem state backend (in a temporary folder, neither kept nor resumed from): Flink's
  default keeps checkpoints in the JobManager's memory, at most 5 MB each, and one roll of
  buffered archive rows at 5,000 records/s is 17 MB; each failed checkpoint restarted the job
  (benchmarks/soak.py). A cluster's own state backend configuration is left alone.
  """
  argv = list(argv)
  directory = _value(argv, FLAG)
  checkpointing = int(_value(argv, '--checkpointing_interval') or -1) > 0
  if not directory:
    embedded = (_value(argv, '--flink_master') or '[auto]') in ('[local]', '[auto]')
    if embedded and checkpointing and _value(argv, '--state_backend') is None:
      storage = tempfile.mkdtemp(prefix=_TEMPORARY_PREFIX)
      argv += ['--state_backend=filesystem', f'--state_backend_storage_path=file://{storage}']
    return argv
  if not checkpointing:
    raise SystemExit(f'{FLAG} needs --checkpointing_interval=<ms>')
  directory = os.path.abspath(directory)
  os.makedirs(directory, exist_ok=True)
  argv += ['--state_backend=filesystem', f'--state_backend_storage_path=file://{directory}',
           '--externalized_checkpoints_enabled',
           '--retain_externalized_checkpoints_on_cancellation']
  resume = newest_checkpoint(directory)
  if resume and _value(argv, '--savepoint_path') is None:
    # The new job's graph is the same; allow dropping state of a transform no longer there.
    argv += [f'--savepoint_path={resume}', '--allow_non_restored_state']
  return argv


def remove_temporary_storage(argv: Sequence[str]) -> None:
  """Deletes the temporary state backend folder :func:`with_checkpoint_args` made for
  ``argv``, once the job is over: streaming jobs checkpoint by default, and each run would
  leave one behind. A folder the user named is never touched."""
  path = _value(argv, '--state_backend_storage_path') or ''
  local = path.removeprefix('file://')
  if (path.startswith('file://') and os.path.dirname(local) == tempfile.gettempdir()
      and os.path.basename(local).startswith(_TEMPORARY_PREFIX)):
    shutil.rmtree(local, ignore_errors=True)
