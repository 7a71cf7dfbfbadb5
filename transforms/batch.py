"""RecordBatch: the records of one stream, column by column, as they move through the job.

The stream's per-record work (cleaning, enrichment, scoring, archiving) runs on batches of a
few hundred to a few thousand records: a column is one Python list, the model takes the
columns as one DataFrame and the archive writer as one Arrow table, so no stage builds a dict
per record or pickles one. Only what leaves the batch path record by record (alerts, the
host-attack join, dead letters) is turned back into row dicts, with :meth:`RecordBatch.rows`.

Each record keeps where it came from (its :class:`SourceMessage` and its index in a host
array), so a later stage can still dead-letter it with its raw bytes.
"""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any, Iterator, Optional, Sequence

import apache_beam as beam
import pyarrow as pa

from transforms.source import SourceMessage


@dataclasses.dataclass
class RecordBatch:
  """``columns`` maps a field name to one list of values, all as long as ``messages``."""
  stream: str
  columns: dict[str, list]
  messages: list[SourceMessage]
  record_indexes: list[Optional[int]]  # position in a host JSON array, None for network

  def __len__(self) -> int:
    return len(self.messages)

  def with_columns(self, **columns: list) -> 'RecordBatch':
    """A batch with ``columns`` added or replaced (the others are shared, not copied)."""
    return dataclasses.replace(self, columns={**self.columns, **columns})

  def take(self, positions: Sequence[int]) -> 'RecordBatch':
    """The records at ``positions``, in that order."""
    if len(positions) == len(self):
      return self  # positions are always distinct and increasing: nothing was dropped
    return RecordBatch(
        self.stream, {name: [values[i] for i in positions]
                      for name, values in self.columns.items()},
        [self.messages[i] for i in positions], [self.record_indexes[i] for i in positions])

  @classmethod
  def concat(cls, stream: str, batches: Sequence['RecordBatch']) -> 'RecordBatch':
    """One batch of the records of ``batches``, in order; a column some batches lack is
    None there."""
    batches = [b for b in batches if len(b)]
    if len(batches) == 1:
      return batches[0]
    names = list(dict.fromkeys(name for b in batches for name in b.columns))
    columns = {name: [] for name in names}
    messages, indexes = [], []
    for b in batches:
      for name in names:
        columns[name].extend(b.columns.get(name) or [None] * len(b))
      messages.extend(b.messages)
      indexes.extend(b.record_indexes)
    return cls(stream, columns, messages, indexes)

  def row(self, position: int) -> dict[str, Any]:
    return {name: values[position] for name, values in self.columns.items()}

  def rows(self) -> Iterator[dict[str, Any]]:
    names = list(self.columns)
    for values in zip(*self.columns.values()):
      yield dict(zip(names, values))

  def to_arrow(self, schema: pa.Schema) -> pa.Table:
    """The batch as a table of ``schema``; a schema column the batch lacks is all null."""
    missing = pa.nulls(len(self))
    return pa.Table.from_arrays(
        [pa.array(self.columns[f.name], type=f.type) if f.name in self.columns
         else missing.cast(f.type) for f in schema], schema=schema)


class RecordBatchCoder(beam.coders.Coder):
  """Pickles a RecordBatch, and estimates its size without pickling it.

  Batches stay inside one fused stage, so they are hardly ever encoded; but the SDK harness
  samples elements' sizes for its byte-count metrics, by encoding them. For a batch of
  thousands of records that was a noticeable share of a Flink worker's Python time (measured:
  benchmarks/README.md, "Where the time goes"), so the estimate counts the raw messages' bytes
  instead.
  """

  def encode(self, value: RecordBatch) -> bytes:
    return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)

  def decode(self, encoded: bytes) -> RecordBatch:
    return pickle.loads(encoded)

  def is_deterministic(self) -> bool:
    return False

  def estimate_size(self, value: RecordBatch) -> int:
    return sum(len(m.value or b'') for m in value.messages)

  def to_type_hint(self):
    return RecordBatch


beam.coders.registry.register_coder(RecordBatch, RecordBatchCoder)
