"""Enrich: event time, a stable uuid, processing time, site, and the host join key."""

from __future__ import annotations

import datetime
import hashlib
import json
import uuid
from typing import Any, Mapping, Optional

import apache_beam as beam

from schemas.records import RecordSchema
from transforms.batch import RecordBatch
from transforms.dead_letter import (DEAD_LETTER, batch_record_dead_letter, dead_letter_counter,
                                    utc_now)
from transforms.source import SourceMessage

ENRICH_STAGE = 'enrich'
# uuid5 namespace of this product: the same record always gets the same uuid, so a replay
# after a restart archives duplicates that dedupe by uuid instead of new, unrelated rows.
UUID_NAMESPACE = uuid.UUID('5b1c3a1e-9f44-4b8e-a4f1-6d0e8f2f7a10')
# What identifies a host record that carries no uuid: the same sample read twice is the same.
HOST_IDENTITY = ('machine', 'PID', 'CMD', 'ts', 'sequence')


class EnrichError(ValueError):
  pass


def parse_utc(text: str) -> datetime.datetime:
  """ISO-8601 to an aware UTC datetime; a value without an offset is taken as UTC."""
  try:
    parsed = datetime.datetime.fromisoformat(text)
  except (TypeError, ValueError):
    raise EnrichError(f'utc: not an ISO-8601 time: {str(text)[:40]!r}') from None
  if parsed.tzinfo is None:
    return parsed.replace(tzinfo=datetime.timezone.utc)
  return parsed.astimezone(datetime.timezone.utc)


def from_unix_seconds(seconds: float) -> datetime.datetime:
  try:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
  except (OverflowError, OSError, ValueError):
    raise EnrichError(f'ts: {seconds!r} is not a valid Unix time') from None


def event_time(stream: str, record_time: Any, message: SourceMessage) -> datetime.datetime:
  """The record's own time (``utc`` of a network record, ``ts`` of a host record), else the
  source's timestamp."""
  if record_time is not None and record_time != '':
    return parse_utc(record_time) if stream == 'network' else from_unix_seconds(record_time)
  if message.timestamp_ms is not None:
    return from_unix_seconds(message.timestamp_ms / 1000)
  raise EnrichError('no event time: the record has no utc/ts and its source no timestamp')


def stable_uuid(stream: str, record: Mapping[str, Any], message: SourceMessage,
                record_index: Optional[int]) -> str:
  """The producer's uuid when present, else one derived from what identifies the record."""
  if record.get('uuid'):
    return record['uuid']
  if stream != 'network':
    identity = [stream] + [record.get(k) for k in HOST_IDENTITY]
  elif message.offset >= 0:
    identity = [stream, message.source, message.partition, message.offset]
  else:
    # No coordinates (files, tests): the content is the identity.
    identity = [stream, hashlib.sha256(message.value).hexdigest(), record_index]
  return str(uuid.uuid5(UUID_NAMESPACE, json.dumps(identity)))


def host_key(record: dict[str, Any]) -> tuple[int, str]:
  """The join key of host records: the same program on the same machine."""
  return record['machine'], record['CMD_PID']


def enrich_batch(schema: RecordSchema, batch: RecordBatch, default_site: str
                 ) -> tuple[RecordBatch, list[dict[str, Any]]]:
  """Adds uuid, site, event_time and processing_time to every record of ``batch``.

  Returns the enriched records and a dead-letter row (stage ``enrich``) for each record
  without a usable event time.
  """
  stream, columns = schema.stream, batch.columns
  time_column = columns['utc'] if stream == 'network' else columns['ts']
  times, kept, dead = [], [], []
  for position, (record_time, message) in enumerate(zip(time_column, batch.messages)):
    try:
      times.append(event_time(stream, record_time, message))
      kept.append(position)
    except EnrichError as e:
      dead.append(batch_record_dead_letter(batch, position, ENRICH_STAGE, str(e)))
  batch = batch.take(kept)
  columns = batch.columns
  identity_columns = [c for c in ('uuid',) + HOST_IDENTITY if c in columns]
  uuids = [
      stable_uuid(stream, dict(zip(identity_columns, values)), message, index)
      for values, message, index in zip(zip(*(columns[c] for c in identity_columns)),
                                        batch.messages, batch.record_indexes)]
  sites = columns.get('site') or [None] * len(batch)
  now = utc_now()  # one processing time per batch: its records were enriched together
  return batch.with_columns(
      uuid=uuids, site=[site or default_site for site in sites], event_time=times,
      processing_time=[now] * len(batch)), dead


class EnrichFn(beam.DoFn):
  """RecordBatch -> the same records with uuid, site, event_time and processing_time."""

  def __init__(self, schema: RecordSchema, default_site: str):
    self._schema = schema
    self._default_site = default_site
    self._dead = dead_letter_counter('Enrich', schema.stream)

  def process(self, batch: RecordBatch):
    enriched, dead = enrich_batch(self._schema, batch, self._default_site)
    self._dead.inc(len(dead))
    for row in dead:
      yield beam.pvalue.TaggedOutput(DEAD_LETTER, row)
    if len(enriched):
      yield enriched


class Enrich(beam.PTransform):
  """RecordBatches of one stream -> enriched RecordBatches, plus ``DEAD_LETTER``."""

  def __init__(self, schema: RecordSchema, default_site: str = 'local'):
    super().__init__(label=f'Enrich[{schema.stream}]')
    self._schema = schema
    self._default_site = default_site

  def expand(self, records):
    return records | beam.ParDo(EnrichFn(self._schema, self._default_site)).with_output_types(
        RecordBatch).with_outputs(DEAD_LETTER, main='records')
