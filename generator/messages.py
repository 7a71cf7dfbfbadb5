"""Records to Kafka messages, and broken messages for robustness runs.

A network message is one JSON object, the record's fields in schema order::

    {"duration": 0, "protocol_type": "tcp", ..., "label": "normal",
     "uuid": "6f1c...", "utc": "2026-11-23T20:04:42.123Z", "sequence_id": 17, "index": 4711,
     "site": "site-1"}

A host message is a JSON array of the messy records of one machine's sample::

    [{"sequence": " 12", "machine": "7", "PID": "1.5K", "CPU": "40%", "CMD": "sshd", ...}, ...]

Values never contain a newline byte, so a file of messages is one message per line.
"""

from __future__ import annotations

import datetime
import json
import random
import uuid
from typing import Any, Iterable, NamedTuple, Optional, Sequence

from generator.synthetic_host import HostSample, messy
from schemas.records import KDD_FEATURES, MEMORY, NETWORK, PROCESS, STR

_HOST_SCHEMAS = {'process': PROCESS, 'memory': MEMORY}
_COMPACT = (',', ':')


class Message(NamedTuple):
  """One message for one topic. ``uuids`` are the uuids of the network records inside (host
  records carry none); ``malformed`` says the value was deliberately broken."""
  topic: str
  key: Optional[bytes]
  value: bytes
  timestamp_ms: int
  uuids: tuple[str, ...] = ()
  malformed: bool = False


_utc_cache: dict[int, str] = {}


def utc_iso(timestamp_ms: int) -> str:
  """Milliseconds since the epoch as ISO-8601 UTC with a 'Z': 2026-11-23T20:04:42.123Z."""
  seconds, millis = divmod(int(timestamp_ms), 1000)
  prefix = _utc_cache.get(seconds)
  if prefix is None:  # formatting is slow; thousands of messages share a second
    if len(_utc_cache) > 4096:
      _utc_cache.clear()
    t = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    prefix = _utc_cache[seconds] = t.strftime('%Y-%m-%dT%H:%M:%S.')
  return f'{prefix}{millis:03d}Z'


def random_uuid(rng: random.Random) -> str:
  """A version-4 uuid from a seeded generator, so that a run with a seed is reproducible."""
  n = rng.getrandbits(128)
  # The version (4) and variant (10) bits, as uuid.UUID(int=n, version=4) sets them.
  n = (n & ~(0xF000 << 64) & ~(0xC000 << 48)) | (0x4000 << 64) | (0x8000 << 48)
  h = f'{n:032x}'
  return f'{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}'


def network_json_rows(frame) -> list[str]:
  """Each row of a DataFrame (read_kdd_csv / generate_network) as JSON object text, encoded
  by pandas in C: much faster than a dict and json.dumps per row."""
  if len(frame) == 0:
    return []
  return frame.to_json(orient='records', lines=True, double_precision=15).splitlines()


def network_message_from_json(row_json: str, *, topic: str, timestamp_ms: int,
                              sequence_id: int, index: int, site: Optional[str],
                              rng: random.Random) -> Message:
  """A network message from the JSON text of a record's features (and label)."""
  ident = random_uuid(rng)
  tail = (f',"uuid":"{ident}","utc":"{utc_iso(timestamp_ms)}",'
          f'"sequence_id":{int(sequence_id)},"index":{int(index)}')
  if site is not None:
    tail += ',"site":' + json.dumps(site)
  value = (row_json[:-1] + tail + '}').encode()
  return Message(topic, None, value, int(timestamp_ms), (ident,))


def network_message(row: dict[str, Any], *, topic: str, timestamp_ms: int, sequence_id: int,
                    index: int, site: Optional[str], rng: random.Random,
                    with_label: bool = True) -> Message:
  """One network record (a dict with the 41 features and optional ``label``) as a message."""
  record = {name: row[name] for name in KDD_FEATURES}
  if with_label and row.get('label') is not None:
    record['label'] = row['label']
  return network_message_from_json(
      json.dumps(record, separators=_COMPACT), topic=topic, timestamp_ms=timestamp_ms,
      sequence_id=sequence_id, index=index, site=site, rng=rng)


def network_rows(frame) -> Iterable[dict[str, Any]]:
  """Rows of a DataFrame as dicts of plain Python values (numpy scalars are not JSON)."""
  names = list(frame.columns)
  columns = [frame[name].tolist() for name in names]
  for values in zip(*columns):
    yield dict(zip(names, values))


def host_message(sample: HostSample, *, topic: str, rng: random.Random,
                 missing: float = 0.01) -> Message:
  """One machine's sample as a JSON array of messy records, keyed by machine so that a
  machine's samples stay in order on one partition."""
  schema = _HOST_SCHEMAS[sample.stream]
  records = [messy(r, rng, missing=missing, schema=schema) for r in sample.records]
  value = json.dumps(records, separators=_COMPACT).encode()
  return Message(topic, str(sample.machine).encode(), value, sample.ts * 1000)


# ---- malformed messages ----------------------------------------------------------------------

_BAD_NUMBERS = ('12 apples', 'n/a', '0x1F', '1,5K', '--3', '4.2.1', '1e', 'K', '%', 'NaN%')
_HUGE = ('1e999', '-1e999', '1' + '0' * 30, '9' * 400, '1.5e308')
_INVALID_UTF8 = (b'\xff', b'\xfe\xff', b'\xc3\x28', b'\xed\xa0\x80', b'\x80abc', b'\xf8\x88')
_GARBAGE = (b'<html><body>502 Bad Gateway</body></html>', b'\x00\x01\x02\x03',
            b'hello world', b'{"a": 1}{"b": 2}', b"{'single': 'quotes'}", b'null', b'42',
            b'"just a string"', b'true')
_REQUIRED_HOST = tuple(f.name for f in PROCESS.fields if f.required)
KINDS = ('truncated', 'bad_number', 'wrong_shape', 'non_utf8', 'nan', 'huge', 'empty',
         'garbage', 'wrong_type', 'missing_required', 'deep_nesting')


def _target(decoded: Any, rng: random.Random) -> Optional[dict]:
  """The object to damage: the message itself, or one record of a host array."""
  if isinstance(decoded, dict):
    return decoded
  if isinstance(decoded, list) and decoded and isinstance(decoded[0], dict):
    return rng.choice(decoded)
  return None


def _numeric_field(record: dict, rng: random.Random) -> str:
  schema = NETWORK if 'protocol_type' in record else (PROCESS if 'CPU' in record else MEMORY)
  names = [f.name for f in schema.fields if f.kind != STR and f.name in record
           and f.name not in ('attack', 'label')]
  return rng.choice(names)


def _string_field(record: dict, rng: random.Random) -> str:
  schema = NETWORK if 'protocol_type' in record else (PROCESS if 'CPU' in record else MEMORY)
  return rng.choice([f.name for f in schema.fields if f.kind == STR and f.name in record
                     and f.name not in ('label', 'uuid', 'utc')])


def _dumps_with(decoded: Any, record: dict, name: str, raw_text: str) -> bytes:
  """``decoded`` as JSON with ``record[name]`` written as the raw text (not valid JSON)."""
  marker = '__malformed_value_marker__'
  record[name] = marker
  return json.dumps(decoded, separators=_COMPACT).replace(f'"{marker}"', raw_text).encode()


def malform_kind(value: bytes, rng: random.Random, kinds: Sequence[str] = KINDS
                 ) -> tuple[str, bytes]:
  """A broken version of a JSON message and what was done to it (one of ``KINDS``).

  Every result is refused by a strict reader of the DESIGN.md formats: invalid JSON or UTF-8,
  a value of the wrong type or shape, a number that does not parse or is not finite / out of
  range, a missing join key. None contains a newline byte.
  """
  try:
    decoded = json.loads(value)
  except ValueError:
    decoded = None
  record = _target(decoded, rng)
  is_host = isinstance(decoded, list)
  possible = [k for k in kinds
              if record is not None or k in ('truncated', 'non_utf8', 'empty', 'garbage',
                                             'deep_nesting')]
  if not is_host:
    possible = [k for k in possible if k != 'missing_required']  # network fields are optional
  kind = rng.choice(possible or ['empty'])
  if kind == 'truncated':
    out = value[:rng.randint(1, len(value) - 1)] if len(value) > 1 else b'{'
  elif kind == 'bad_number':
    record[_numeric_field(record, rng)] = rng.choice(_BAD_NUMBERS)
    out = json.dumps(decoded, separators=_COMPACT).encode()
  elif kind == 'wrong_shape':  # a host message that is an object, a network one in an array
    out = json.dumps(decoded[0] if is_host else [decoded], separators=_COMPACT).encode()
  elif kind == 'non_utf8':
    cut = rng.randint(0, len(value))
    out = value[:cut] + rng.choice(_INVALID_UTF8) + value[cut:]
  elif kind == 'nan':
    out = _dumps_with(decoded, record, _numeric_field(record, rng),
                      rng.choice(('NaN', 'Infinity', '-Infinity')))
  elif kind == 'huge':
    out = _dumps_with(decoded, record, _numeric_field(record, rng), rng.choice(_HUGE))
  elif kind == 'empty':
    out = b''
  elif kind == 'garbage':
    out = rng.choice(_GARBAGE)
  elif kind == 'wrong_type':  # an object or a boolean where a string or a number belongs
    if rng.random() < .5:
      record[_string_field(record, rng)] = rng.choice(({'nested': 1}, [1, 2], True))
    else:
      record[_numeric_field(record, rng)] = rng.choice((True, False, {'value': 1}, [3]))
    out = json.dumps(decoded, separators=_COMPACT).encode()
  elif kind == 'missing_required':
    del record[rng.choice([k for k in _REQUIRED_HOST if k in record])]
    out = json.dumps(decoded, separators=_COMPACT).encode()
  else:  # deep_nesting: exhausts a recursive parser's stack
    out = b'[' * rng.randint(10_000, 100_000)
  return kind, out.replace(b'\n', b' ')


def malform(value: bytes, rng: random.Random) -> bytes:
  """A broken version of ``value``; see :func:`malform_kind`."""
  return malform_kind(value, rng)[1]
