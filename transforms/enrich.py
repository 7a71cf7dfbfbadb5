"""Enrich: event time, a stable uuid, processing time, site, and the host join key."""

from __future__ import annotations

import datetime
import hashlib
import json
import uuid
from typing import Any, Optional

import apache_beam as beam
from apache_beam.transforms.window import TimestampedValue

from schemas.records import RecordSchema
from transforms.dead_letter import DEAD_LETTER, DeadLetterCounter, dead_letter_row, utc_now
from transforms.parse import CleanRecord

ENRICH_STAGE = 'enrich'
# uuid5 namespace of this product: the same record always gets the same uuid, so a replay
# after a restart archives duplicates that dedupe by uuid instead of new, unrelated rows.
UUID_NAMESPACE = uuid.UUID('5b1c3a1e-9f44-4b8e-a4f1-6d0e8f2f7a10')


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


def event_time(stream: str, item: CleanRecord) -> datetime.datetime:
  """The record's own time: ``utc`` (network) or ``ts`` (host); else the source timestamp."""
  record = item.record
  if stream == 'network':
    if record.get('utc'):
      return parse_utc(record['utc'])
  elif record.get('ts') is not None:
    return from_unix_seconds(record['ts'])
  if item.message.timestamp_ms is not None:
    return from_unix_seconds(item.message.timestamp_ms / 1000)
  raise EnrichError('no event time: the record has no utc/ts and its source no timestamp')


def stable_uuid(stream: str, item: CleanRecord) -> str:
  """The producer's uuid when present, else one derived from what identifies the record."""
  record, message = item.record, item.message
  if record.get('uuid'):
    return record['uuid']
  if stream != 'network':
    identity = [stream] + [record.get(k) for k in ('machine', 'PID', 'CMD', 'ts', 'sequence')]
  elif message.offset >= 0:
    identity = [stream, message.source, message.partition, message.offset]
  else:
    # No coordinates (files, tests): the content is the identity.
    identity = [stream, hashlib.sha256(message.value).hexdigest(), item.record_index]
  return str(uuid.uuid5(UUID_NAMESPACE, json.dumps(identity)))


def host_key(record: dict[str, Any]) -> tuple[int, str]:
  """The join key of host records: the same program on the same machine."""
  return record['machine'], record['CMD_PID']


class EnrichFn(beam.DoFn):
  """CleanRecord -> the record dict with uuid, site, event_time and processing_time added,
  stamped with its event time; host records are emitted as ``((machine, CMD_PID), record)``.
  """

  def __init__(self, schema: RecordSchema, default_site: str):
    self._stream = schema.stream
    self._keyed = schema.stream != 'network'
    self._default_site = default_site
    self._dead = DeadLetterCounter('Enrich')

  def process(self, item: CleanRecord):
    try:
      when = event_time(self._stream, item)
    except EnrichError as e:
      self._dead.inc(self._stream)
      yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter_row(
          item.message, ENRICH_STAGE, str(e), record_index=item.record_index,
          payload=_record_payload(item)))
      return
    record = dict(item.record)
    record['uuid'] = stable_uuid(self._stream, item)
    record['site'] = record.get('site') or self._default_site
    record['event_time'] = when
    record['processing_time'] = utc_now()
    element = (host_key(record), record) if self._keyed else record
    yield TimestampedValue(element, when.timestamp())


def _record_payload(item: CleanRecord) -> Optional[bytes]:
  if item.record_index is None:
    return None  # the whole message is the record
  return json.dumps(item.record, default=str).encode('utf-8')


class Enrich(beam.PTransform):
  """CleanRecords of one stream -> enriched, timestamped records, plus ``DEAD_LETTER``."""

  def __init__(self, schema: RecordSchema, default_site: str = 'local'):
    super().__init__(label=f'Enrich[{schema.stream}]')
    self._schema = schema
    self._default_site = default_site

  def expand(self, records):
    return records | beam.ParDo(EnrichFn(self._schema, self._default_site)).with_outputs(
        DEAD_LETTER, main='records')
