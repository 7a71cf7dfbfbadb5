"""The output layout under ``--output``: folder names, the file naming rule and the one way to
list finished files. The stream job's sink writes by it; the monitor, the dashboard, the
summary and the retrain job read by it.

    <output>/archive/<stream>/dt=YYYY-MM-DD/<site>-<run id>-<roll>-<shard>.parquet
    <output>/attacks/dt=YYYY-MM-DD/...
    <output>/alerts/dt=YYYY-MM-DD/...
    <output>/incidents/dt=YYYY-MM-DD/...      (dated by the incident's first_seen)
    <output>/dead_letter/dt=YYYY-MM-DD/...

A file is written as ``.<name>.inprogress`` in its ``dt=`` folder and renamed when complete;
readers list :func:`finished_files` and never see half a file (nor, on an object store, the
complete copy that exists for an instant before the temporary is deleted).
"""

from __future__ import annotations

from typing import Iterable, Optional

from apache_beam.io.filesystem import BeamIOError, FileMetadata
from apache_beam.io.filesystems import FileSystems

from schemas.records import SCHEMAS

ARCHIVE = 'archive/{}'
ATTACKS = 'attacks'
ALERTS = 'alerts'
INCIDENTS = 'incidents'
DEAD_LETTERS = 'dead_letter'
# The archive folder of each input stream.
ARCHIVE_FOLDERS: dict[str, str] = {stream: ARCHIVE.format(stream) for stream in SCHEMAS}
# Every output folder, in the order summaries list them.
FOLDERS: tuple[str, ...] = tuple(ARCHIVE_FOLDERS.values()) + (ATTACKS, ALERTS, INCIDENTS,
                                                                DEAD_LETTERS)
# Which column dates each output's rows into its dt=YYYY-MM-DD/ folder.
TIME_FIELDS: dict[str, str] = {
    **{folder: 'event_time' for folder in ARCHIVE_FOLDERS.values()},
    ATTACKS: 'Process_event_time',
    ALERTS: 'event_time',
    # Every row of one incident (opened, updated, closed) in the folder of its first alert.
    INCIDENTS: 'first_seen',
    DEAD_LETTERS: 'failed_at',
}

PARQUET_SUFFIX = '.parquet'
IN_PROGRESS_SUFFIX = '.inprogress'


def output_folder(output: str, folder: str) -> str:
  """The path of output folder ``folder`` (e.g. ``archive/network``) under ``output``, on any
  Beam file system."""
  return FileSystems.join(output, *folder.split('/'))


def partition_name(date: str) -> str:
  """The folder of one event date (YYYY-MM-DD, or 'unknown')."""
  return f'dt={date}'


def file_name(prefix: str, roll: int, shard: int) -> str:
  """A finished file's name: ``prefix`` is ``<site>-<run id>``; ``roll`` the sink's pane
  index, so a retried bundle rewrites the same file."""
  return f'{prefix}-{roll:06d}-{shard:03d}{PARQUET_SUFFIX}'


def in_progress_name(name: str) -> str:
  """The temporary a file is written under: hidden ('.'), and not ending in .parquet."""
  return f'.{name}{IN_PROGRESS_SUFFIX}'


def is_hidden(path: str) -> bool:
  """True for names starting with '.': in-progress files, staging, candidates. Parquet readers
  (pyarrow, Spark) skip them too."""
  return path.replace('\\', '/').rstrip('/').rsplit('/', 1)[-1].startswith('.')


def is_finished(path: str) -> bool:
  """Whether ``path`` names a finished output file (not hidden, ends in .parquet)."""
  return path.endswith(PARQUET_SUFFIX) and not is_hidden(path)


def finished_files(folder: str, dates: Optional[Iterable[str]] = None,
                   limit: Optional[int] = None) -> list[FileMetadata]:
  """The finished Parquet files of an output folder (a path: :func:`output_folder`), on any Beam
  file system, as Beam ``FileMetadata`` (``path``, ``size_in_bytes``,
  ``last_updated_in_seconds``).

  ``dates``: only those ``dt=`` folders (else all); ``limit``: at most that many files listed
  per ``dt=`` pattern. A folder not written yet has none.
  """
  if dates is None:
    patterns = [FileSystems.join(folder, partition_name('*'), '*' + PARQUET_SUFFIX)]
  else:
    patterns = [FileSystems.join(folder, partition_name(d), '*' + PARQUET_SUFFIX)
                for d in dates]
  files = []
  for pattern in patterns:
    try:
      matched = FileSystems.match([pattern], limits=[limit] if limit else None)[0].metadata_list
    except BeamIOError:
      continue  # nothing written there yet
    files.extend(m for m in matched if is_finished(m.path))
  return files
