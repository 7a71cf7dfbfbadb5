"""WriteOutputs: every output of DetectAttacks to its Parquet folder under ``--output``."""

from __future__ import annotations

from typing import Optional

import apache_beam as beam

from schemas.layout import TIME_FIELDS, output_folder
from schemas.outputs import OUTPUT_SCHEMAS
from transforms.parquet_sink import WritePartitionedParquet, new_run_id


class WriteOutputs(beam.PTransform):
  """{folder: rows} (as DetectAttacks returns; keys that are not output folders are ignored)
  -> Parquet under ``output/<folder>/``.

  Returns {folder: PCollection of written file paths}.
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
    written = {}
    folders = {f: rows for f, rows in outputs.items() if f in OUTPUT_SCHEMAS}
    for folder, rows in folders.items():
      written[folder] = rows | f'Write[{folder}]' >> WritePartitionedParquet(
          output_folder(self._output, folder), OUTPUT_SCHEMAS[folder],
          time_field=TIME_FIELDS[folder], roll_seconds=self._roll_seconds,
          num_shards=self._num_shards, site=self._site, run_id=self._run_id,
          metric_name=folder)
    return written
