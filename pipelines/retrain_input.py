"""The retrain job's input: which files ``--input`` means (an archive folder, a Parquet glob or a
KDD Cup CSV file) and reading them as pyarrow Tables (archive row groups, projected on the
columns training needs, or blocks of CSV lines), never one element per record.
"""

from __future__ import annotations

import logging
import os

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from model import dataset
from schemas import layout
from schemas.kdd import kdd_csv_batches
from schemas.records import SCHEMAS

log = logging.getLogger(__name__)


def _matches(pattern: str) -> list[str]:
  try:
    return [m.path for m in FileSystems.match([pattern])[0].metadata_list]
  except Exception:  # pylint: disable=broad-except
    return []


def resolve_input(path: str, detector: str, input_format: str) -> tuple[str, str]:
  """(file pattern, format) for ``--input``: a glob or file as given; a folder as the archive
  of ``detector`` inside it (the stream's --output root, or archive/<detector> itself)."""
  if any(c in path for c in '*?[') or _is_file(path):
    candidates = [path]
  else:
    candidates = [
        FileSystems.join(layout.output_folder(path, layout.ARCHIVE_FOLDERS[detector]),
                         layout.partition_name('*'), '*' + layout.PARQUET_SUFFIX),
        FileSystems.join(path, layout.partition_name('*'), '*' + layout.PARQUET_SUFFIX),
        FileSystems.join(path, '*' + layout.PARQUET_SUFFIX),
    ]
  for pattern in candidates:
    files = [f for f in _matches(pattern) if not layout.is_hidden(f)]
    if files:
      if input_format == 'auto':
        input_format = ('parquet' if all(f.endswith(layout.PARQUET_SUFFIX) for f in files)
                        else 'kdd_csv')
      if input_format == 'kdd_csv' and not SCHEMAS[detector].kdd_records:
        kdd = ', '.join(s.stream for s in SCHEMAS.values() if s.kdd_records)
        raise SystemExit(f'KDD CSV input holds {kdd} records: use --detector {kdd}')
      return pattern, input_format
  raise SystemExit(f'--input {path}: no files found (tried {", ".join(candidates)})')


def _is_file(path: str) -> bool:
  if '://' not in path:
    return os.path.isfile(path)
  files = _matches(path)
  return len(files) == 1 and files[0].rstrip('/') == path.rstrip('/')


class _ReadKddCsv(beam.DoFn):
  """An open KDD CSV file (fileio.ReadableFile) -> pyarrow Tables of its lines."""

  def process(self, readable):
    name = readable.metadata.path
    handle = FileSystems.open(name, compression_type=CompressionTypes.UNCOMPRESSED)
    try:
      yield from kdd_csv_batches(handle, name)
    finally:
      handle.close()


class ReadTrainingTables(beam.PTransform):
  """pyarrow Tables of the archive (projected on the columns training needs) or of KDD CSV
  files; never one element per record."""

  def __init__(self, detector: str, pattern: str, input_format: str):
    super().__init__()
    self._detector = detector
    self._pattern = pattern
    self._format = input_format

  def expand(self, pbegin):
    if self._format == 'parquet':
      columns = dataset.archive_columns(self._detector)
      files = _matches(self._pattern)
      visible = [f for f in files if not layout.is_hidden(f)]
      if len(visible) == len(files):
        return pbegin | 'ReadParquet' >> beam.io.ReadFromParquetBatched(
            self._pattern, columns=columns)
      # A glob such as dt=*/* also matches the stream's temporary '.<name>.inprogress' files:
      # half-written on a local disk, or a complete duplicate on S3 for the instant between
      # its copy and its delete (rename). Read the finished files only.
      log.info('skipping %d hidden or in-progress files of %s', len(files) - len(visible),
               self._pattern)
      return (pbegin
              | 'VisibleParquet' >> beam.Create(visible)
              | 'ReadParquet' >> beam.io.ReadAllFromParquetBatched(columns=columns))
    return (pbegin
            | 'MatchCsv' >> fileio.MatchFiles(self._pattern)
            | 'SkipHidden' >> beam.Filter(lambda match: not layout.is_hidden(match.path))
            | 'OpenCsv' >> fileio.ReadMatches()
            | 'ReadCsv' >> beam.ParDo(_ReadKddCsv()))
