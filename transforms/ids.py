"""Every id the product derives, in one place: record uuids, record ids, alert and event ids.

* ``uuid``: the producer's own (any string), or when a record has none one derived from what
  identifies it. Kept as sent, so an analyst finds the producer's record; but it is the
  producer's claim, and two different records can carry the same one.
* ``record_id``: the product's id of a record: uuid5 of its stream, uuid, the sha256 of its
  message's raw bytes and its index in a host array. A replay of the same message (after a
  restart) gives the same id, so exactly-once consumers still drop repeats; two records that
  differ in any byte of their message, or sit at different indexes of one array, never share
  one, whatever uuid they claim.
* alert and attack ``event_id``: uuid5 of the record ids behind them.

Rows written before record ids existed have none; :func:`row_identity` falls back to their
uuid there (older archives in the retrain, reference joins over them).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any, Mapping, Optional

from schemas.records import RecordSchema
from transforms.source import SourceMessage

# uuid5 namespace of this product: the same record always gets the same ids.
UUID_NAMESPACE = uuid.UUID('5b1c3a1e-9f44-4b8e-a4f1-6d0e8f2f7a10')
_NAMESPACED = hashlib.sha1(UUID_NAMESPACE.bytes)
_VARIANT = {digit: '89ab'[int(digit, 16) & 0x3] for digit in '0123456789abcdef'}


def uuid5(name: str) -> str:
  """``str(uuid.uuid5(UUID_NAMESPACE, name))``, without building a UUID object (one per
  record on the hot path).

  >>> uuid5('x') == str(uuid.uuid5(UUID_NAMESPACE, 'x'))
  True
  """
  digest = _NAMESPACED.copy()
  digest.update(name.encode('utf-8', 'surrogatepass'))
  h = digest.hexdigest()
  # The version nibble is 5 and the variant's two top bits are 10 (RFC 4122), set on the hex
  # digits themselves.
  return f'{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}'


def message_digest(message: SourceMessage) -> str:
  """The sha256 of a message's raw bytes (hex)."""
  return hashlib.sha256(message.value or b'').hexdigest()


def stable_uuid(schema: RecordSchema, record: Mapping[str, Any], message: SourceMessage,
                record_index: Optional[int]) -> str:
  """The producer's uuid when present, else one derived from what identifies the record
  (``schema.identity_fields``: the same sample read twice is the same), else from where its
  message came from."""
  if record.get('uuid'):
    return record['uuid']
  stream = schema.stream
  if schema.identity_fields:
    identity = [stream] + [record.get(k) for k in schema.identity_fields]
  elif message.offset >= 0:
    identity = [stream, message.source, message.partition, message.offset]
  else:
    # No coordinates (files, tests): the content is the identity.
    identity = [stream, message_digest(message), record_index]
  return uuid5(json.dumps(identity))


def record_id(stream: str, record_uuid: str, digest: str, record_index: Optional[int]) -> str:
  """The product's id of one record (see the module docstring); ``digest`` is
  :func:`message_digest` of its message."""
  index = '' if record_index is None else record_index
  return uuid5(f'record|{stream}|{record_uuid}|{digest}|{index}')


def row_identity(row: Mapping[str, Any]) -> str:
  """A row's record id, or its uuid when it was written before record ids existed."""
  return row.get('record_id') or row['uuid']


def network_alert_id(record: Mapping[str, Any]) -> str:
  """The event id of a network record's alert."""
  return uuid5(f'network|{row_identity(record)}')


def attack_event_id(process: Mapping[str, Any], memory: Mapping[str, Any]) -> str:
  """Deterministic: a replay of the same two records yields the same id downstream."""
  return uuid5(f'attack|{row_identity(process)}|{row_identity(memory)}')
