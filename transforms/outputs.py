"""WriteOutputs: every output of DetectAttacks to its Parquet folder under ``--output``."""

from __future__ import annotations

from typing import Optional

import apache_beam as beam

from schemas.layout import TIME_FIELDS, output_folder
from schemas.outputs import OUTPUT_SCHEMAS
from transforms.parquet_sink import ParquetFolder, WritePartitionedParquet, new_run_id


class WriteOutputs(beam.PTransform):
  """{folder: rows} (as DetectAttacks returns; keys that are not output folders are ignored)
  -> Parquet under ``output/<folder>/``.

  Returns the PCollection of written file paths.
  """

  def __init__(self, output: str, *, site: str = 'local', roll_seconds: float = 60,
               num_shards: int = 1, run_id: Optional[str] = None):
    super().__init__()
    self._output = output
    self._site = site
    self._roll_seconds = roll_seconds
    self._num_shards = num_shards
    # One id for the whole run, so all its files are recognisably from the same job.
    self._run_id = run_id or new_run_id()

  def expand(self, outputs):
    rows = {f: rows for f, rows in outputs.items() if f in OUTPUT_SCHEMAS}
    if not rows:
      raise ValueError(f'none of {sorted(outputs)} is an output folder '
                       f'({", ".join(sorted(OUTPUT_SCHEMAS))})')
    folders = {f: ParquetFolder(output_folder(self._output, f), OUTPUT_SCHEMAS[f],
                                TIME_FIELDS[f]) for f in rows}
    return rows | 'Write' >> WritePartitionedParquet(
        folders, roll_seconds=self._roll_seconds, num_shards=self._num_shards,
        site=self._site, run_id=self._run_id)
