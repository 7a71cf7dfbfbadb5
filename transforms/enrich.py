"""Enrich: event time (bounded), a stable uuid, the record id, processing time, site, and the
host join key."""

from __future__ import annotations

import dataclasses
import datetime
import operator
from typing import Any, Callable, Optional

import apache_beam as beam

from schemas.limits import DEFAULT_MAX_EVENT_AGE_S, DEFAULT_MAX_EVENT_LEAD_S
from schemas.records import ISO8601, UNIX_SECONDS, RecordSchema
from transforms.batch import RecordBatch
from transforms.dead_letter import (DEAD_LETTER, batch_record_dead_letter, dead_letter_counter,
                                    record_by_record, utc_now)
from transforms.ids import message_digest, record_id, stable_uuid
from transforms.source import SourceMessage

ENRICH_STAGE = 'enrich'
_UTC = datetime.timezone.utc
_EARLIEST = datetime.datetime.min.replace(tzinfo=_UTC)
_LATEST = datetime.datetime.max.replace(tzinfo=_UTC)
_NO_MESSAGE = object()


class EnrichError(ValueError):
  pass


@dataclasses.dataclass(frozen=True)
class EventTimeBounds:
  """How far an event time may lie before (``max_age_s``) or after (``max_lead_s``) the
  processing time; None, 0 or less leaves that side open. A record outside is a dead letter: far
  past and far future times would each open a ``dt=`` folder, and a producer's clock far
  ahead would drag the watermark with it."""
  max_age_s: Optional[float] = DEFAULT_MAX_EVENT_AGE_S
  max_lead_s: Optional[float] = DEFAULT_MAX_EVENT_LEAD_S

  def window(self, now: datetime.datetime) -> tuple[datetime.datetime, datetime.datetime]:
    """The earliest and latest event times accepted at processing time ``now``."""
    return (_shifted(now, -self.max_age_s) if _bounded(self.max_age_s) else _EARLIEST,
            _shifted(now, self.max_lead_s) if _bounded(self.max_lead_s) else _LATEST)

  def refusal(self, when: datetime.datetime, now: datetime.datetime) -> str:
    if when < now:
      return (f'event time {when.isoformat()} is more than {self.max_age_s:g} s before the '
              f'processing time {now.isoformat()} (--max_event_age_s)')
    return (f'event time {when.isoformat()} is more than {self.max_lead_s:g} s after the '
            f'processing time {now.isoformat()} (--max_event_lead_s)')


UNBOUNDED = EventTimeBounds(None, None)


def _bounded(seconds: Optional[float]) -> bool:
  return seconds is not None and seconds > 0  # NaN too is no bound


def _shifted(now: datetime.datetime, seconds: float) -> datetime.datetime:
  try:
    return now + datetime.timedelta(seconds=seconds)
  except OverflowError:  # a bound of centuries: as good as none
    return _EARLIEST if seconds < 0 else _LATEST


def parse_utc(text: str) -> datetime.datetime:
  """ISO-8601 to an aware UTC datetime; a value without an offset is taken as UTC."""
  try:
    parsed = datetime.datetime.fromisoformat(text)
    if parsed.tzinfo is None:
      return parsed.replace(tzinfo=_UTC)
    # Overflows at the calendar's edges: 0001-01-01T00:00:00+14:00 is in year 0 in UTC.
    return parsed.astimezone(_UTC)
  except (TypeError, ValueError, OverflowError):
    raise EnrichError(f'utc: not an ISO-8601 time of years 1-9999: {str(text)[:40]!r}') from None


def from_unix_seconds(seconds: float) -> datetime.datetime:
  try:
    return datetime.datetime.fromtimestamp(seconds, _UTC)
  except (OverflowError, OSError, ValueError, TypeError):
    raise EnrichError(f'ts: {seconds!r} is not a valid Unix time') from None


# How each RecordSchema.time_format is read.
TIME_READERS: dict[str, Callable[[Any], datetime.datetime]] = {
    ISO8601: parse_utc, UNIX_SECONDS: from_unix_seconds}


def event_time(schema: RecordSchema, record_time: Any, message: SourceMessage
               ) -> datetime.datetime:
  """The record's own time (its ``schema.time_field``: ``utc`` of a network record, ``ts`` of
  a host record), else the source's timestamp."""
  return _event_time(TIME_READERS[schema.time_format], record_time, message)


def _event_time(read: Callable[[Any], datetime.datetime], record_time: Any,
                message: SourceMessage) -> datetime.datetime:
  """Kafka says -1 for "no timestamp": a source time of 0 or less is none."""
  if record_time is not None and record_time != '':
    return read(record_time)
  source_ms = message.timestamp_ms
  if source_ms is not None and source_ms > 0:
    return from_unix_seconds(source_ms / 1000)
  raise EnrichError('no event time: the record has no utc/ts and its source no timestamp')


def join_key(schema: RecordSchema) -> Callable[[dict[str, Any]], tuple]:
  """The function that gives a record of ``schema`` its join key (``schema.join_key``; for
  host records ``(machine, CMD_PID)``: the same program on the same machine)."""
  return operator.itemgetter(*schema.join_key)


def _record_ids(stream: str, uuids: list, batch: RecordBatch) -> list[str]:
  ids, last, digest = [], _NO_MESSAGE, ''
  for record_uuid, message, index in zip(uuids, batch.messages, batch.record_indexes):
    if message is not last:  # the records of a host array are neighbours: one hash each
      last, digest = message, message_digest(message)
    ids.append(record_id(stream, record_uuid, digest, index))
  return ids


def enrich_batch(schema: RecordSchema, batch: RecordBatch, default_site: str,
                 bounds: EventTimeBounds = EventTimeBounds()
                 ) -> tuple[RecordBatch, list[dict[str, Any]]]:
  """Adds uuid, record_id, site, event_time and processing_time to every record of ``batch``.

  Returns the enriched records and a dead-letter row (stage ``enrich``) for each record
  without a usable event time, or with one outside ``bounds``.
  """
  if not len(batch):
    return batch, []
  stream, columns = schema.stream, batch.columns
  now = utc_now()  # one processing time per batch: its records were enriched together
  earliest, latest = bounds.window(now)
  time_column = columns[schema.time_field]
  read = TIME_READERS[schema.time_format]
  times, kept, dead = [], [], []
  for position, (record_time, message) in enumerate(zip(time_column, batch.messages)):
    try:
      when = _event_time(read, record_time, message)
      if not earliest <= when <= latest:
        raise EnrichError(bounds.refusal(when, now))
      times.append(when)
      kept.append(position)
    except EnrichError as e:
      dead.append(batch_record_dead_letter(batch, position, ENRICH_STAGE, str(e)))
  batch = batch.take(kept)
  columns = batch.columns
  identity_columns = [c for c in ('uuid',) + schema.identity_fields if c in columns]
  uuids = [
      stable_uuid(schema, dict(zip(identity_columns, values)), message, index)
      for values, message, index in zip(zip(*(columns[c] for c in identity_columns)),
                                        batch.messages, batch.record_indexes)]
  sites = columns.get('site') or [None] * len(batch)
  return batch.with_columns(
      uuid=uuids, record_id=_record_ids(stream, uuids, batch),
      site=[site or default_site for site in sites], event_time=times,
      processing_time=[now] * len(batch)), dead


class EnrichFn(beam.DoFn):
  """RecordBatch -> the same records with uuid, site, event_time and processing_time."""

  def __init__(self, schema: RecordSchema, default_site: str, bounds: EventTimeBounds):
    self._schema = schema
    self._default_site = default_site
    self._bounds = bounds
    self._dead = dead_letter_counter('Enrich', schema.stream)

  def _enrich(self, batch: RecordBatch):
    return enrich_batch(self._schema, batch, self._default_site, self._bounds)

  def process(self, batch: RecordBatch):
    enriched, dead = record_by_record(self._enrich, batch, ENRICH_STAGE)
    self._dead.inc(len(dead))
    for row in dead:
      yield beam.pvalue.TaggedOutput(DEAD_LETTER, row)
    if len(enriched):
      yield enriched


class Enrich(beam.PTransform):
  """RecordBatches of one stream -> enriched RecordBatches, plus ``DEAD_LETTER`` (records
  without a usable event time, or outside ``bounds``)."""

  def __init__(self, schema: RecordSchema, default_site: str = 'local',
               bounds: EventTimeBounds = EventTimeBounds()):
    super().__init__(label=f'Enrich[{schema.stream}]')
    self._schema = schema
    self._default_site = default_site
    self._bounds = bounds

  def expand(self, records):
    return records | beam.ParDo(
        EnrichFn(self._schema, self._default_site, self._bounds)).with_output_types(
        RecordBatch).with_outputs(DEAD_LETTER, main='records')
