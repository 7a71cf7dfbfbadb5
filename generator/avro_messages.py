"""Generated messages in Avro, as a Kafka producer with an Avro serializer sends them.

The generator makes JSON messages (generator/messages.py); :class:`AvroEncoder` turns each
into the Avro message of the same records, written with the stream's own schema
(schemas/avro.py): bare, or in the Confluent wire format with the schema registered in a schema
registry under the topic's ``<topic>-value`` subject (Confluent's default naming). Host
records' messy strings ("1.5K", " 2%") are read as the stream job reads them
(transforms/cleaning.py): an Avro producer sends typed values. A message the generator broke
becomes broken Avro (:data:`AVRO_KINDS`).
"""

from __future__ import annotations

import io
import json
import random
import struct
from typing import Any, Mapping, Optional

import fastavro

from generator.messages import Message
from schemas.avro import message_schema
from schemas.records import RecordSchema
from transforms.avro_decode import MAGIC_BYTE, SchemaRegistry
from transforms.cleaning import clean_record

# A varint of 2**62: as a length or an array count, far more than any message holds.
HUGE_VARINT = b'\xfe\xff\xff\xff\xff\xff\xff\xff\x7f'
AVRO_KINDS = ('truncated', 'empty', 'json', 'huge_length', 'trailing')
FRAMED_KINDS = ('wrong_magic', 'unknown_schema_id')


def confluent_header(schema_id: int) -> bytes:
  return struct.pack('>bI', MAGIC_BYTE, schema_id)


def typed_records(schema: RecordSchema, decoded: Any) -> Any:
  """A decoded JSON message's records with the values the stream job cleans them to, and only
  the schema's fields (what an Avro writer of the stream's schema takes)."""
  def typed(record):
    cleaned = clean_record(schema, record)
    return {name: cleaned[name] for name in schema.names}
  return [typed(r) for r in decoded] if schema.is_array else typed(decoded)


def avro_body(schema: RecordSchema, value: Any, writer: Optional[dict] = None) -> bytes:
  """``value`` (a record, or a list of them) as a bare Avro body of ``writer`` (default: the
  stream's own schema)."""
  out = io.BytesIO()
  fastavro.schemaless_writer(out, fastavro.parse_schema(writer or message_schema(schema)), value)
  return out.getvalue()


class AvroEncoder:
  """JSON :class:`Message`s -> Avro ones, for the topics in ``schemas`` (topic -> schema);
  messages of other topics pass unchanged.

  With ``registry_url``, the stream schemas are registered there at construction and every
  message carries the Confluent header; else messages are bare bodies.
  """

  def __init__(self, schemas: Mapping[str, RecordSchema], registry_url: Optional[str] = None,
               seed: int = 0):
    self._schemas = dict(schemas)
    self._parsed = {topic: fastavro.parse_schema(message_schema(s))
                    for topic, s in self._schemas.items()}
    self._ids: dict[str, int] = {}
    if registry_url:
      registry = SchemaRegistry(registry_url)
      for topic, schema in self._schemas.items():
        self._ids[topic] = registry.register(f'{topic}-value',
                                             json.dumps(message_schema(schema)))
    self._rng = random.Random(seed)
    self._last_good: dict[str, bytes] = {}

  @property
  def schema_ids(self) -> dict[str, int]:
    return dict(self._ids)

  def encode(self, message: Message) -> Message:
    schema = self._schemas.get(message.topic)
    if schema is None:
      return message
    if message.malformed:
      return message._replace(value=self.malformed(message.topic, message.value))
    out = io.BytesIO()
    fastavro.schemaless_writer(out, self._parsed[message.topic],
                               typed_records(schema, json.loads(message.value)))
    value = self._header(message.topic) + out.getvalue()
    self._last_good[message.topic] = value
    return message._replace(value=value)

  def _header(self, topic: str) -> bytes:
    return confluent_header(self._ids[topic]) if topic in self._ids else b''

  def malformed(self, topic: str, broken_json: bytes) -> bytes:
    """A message no reader of the topic's format accepts (one of AVRO_KINDS, and with the
    Confluent header also FRAMED_KINDS)."""
    rng, header = self._rng, self._header(topic)
    kind = rng.choice(AVRO_KINDS + (FRAMED_KINDS if header else ()))
    good = self._last_good.get(topic)
    if kind == 'truncated':
      if good and len(good) > len(header) + 1:
        return good[:rng.randint(len(header) + 1, len(good) - 1)]
      return header + HUGE_VARINT[:3]  # a varint cut short
    if kind == 'trailing':  # a body of another writer schema, or two bodies in one message
      return (good or header + HUGE_VARINT * 3) + b'\x00'
    if kind == 'empty':
      return b''
    if kind == 'json':
      return broken_json  # a producer with the wrong serializer
    if kind == 'huge_length':
      return header + HUGE_VARINT * 3
    if kind == 'wrong_magic':
      return bytes([rng.randint(1, 255)]) + header[1:] + (good or b'')[len(header):]
    # unknown_schema_id: an id far above those this registry gave
    return confluent_header(self._ids[topic] + 1_000_000) + (good or b'')[len(header):]
