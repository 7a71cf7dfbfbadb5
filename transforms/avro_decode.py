"""Avro message values to the decoded records ParseAndClean cleans, bad Avro to errors.

Two framings, chosen per stream (``--<stream>_format=avro``, pipelines/stream.py):

* the Confluent wire format, with a schema registry (``--schema_registry_url``): byte 0 is the
  magic byte 0, bytes 1-4 the writer schema's id (big-endian), the rest the Avro binary body::

      00 | 00 00 00 07 | <record, or array of records>

  Writer schemas are fetched once per id (``GET <url>/schemas/ids/<id>``, Confluent's API;
  Apicurio serves it under ``/apis/ccompat/v7``) and cached;
* a bare Avro binary body, written with a fixed schema: the stream's ``--avro_schema_file``,
  else the stream's own schema (schemas/avro.py).

The body is read with the writer schema and resolved to the stream's schema (Avro schema
resolution: writer fields the stream does not know are skipped, missing optional ones are
null, ``int`` widens to ``long``, ...), so the result is what a JSON message decodes to: one
record dict, or a list of them for an array stream. Every failure is an
:class:`AvroDecodeError` (a ``ValueError``), which parsing turns into the message's dead
letter (stage ``parse``): a short or truncated body, another magic byte, an unknown schema id,
an unreachable registry, a writer schema that does not resolve, that is over the bounds of
schemas/limits.py, or bytes left over after the body.
"""

from __future__ import annotations

import collections
import http.client
import io
import json
import struct
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Iterable, Mapping, Optional

import fastavro
from apache_beam.metrics import Metrics

from schemas.avro import message_schema, record_schema
from schemas.limits import (MAX_AVRO_SCHEMA_BYTES, MAX_AVRO_SCHEMA_DEPTH,
                            MAX_CACHED_AVRO_SCHEMAS, MAX_MESSAGE_BYTES, MAX_RECORDS_PER_MESSAGE)
from schemas.records import RecordSchema

MAGIC_BYTE = 0
HEADER_BYTES = 5
# A lookup that takes longer fails: a stalled registry must not stall the job for long.
REGISTRY_TIMEOUT_S = 5.0
# After the registry failed to answer, ids not in the cache are refused without asking it for
# this long (else every message of a batch would wait out its own timeout).
REGISTRY_RETRY_S = 5.0
# An id the registry does not know is asked for again after this long.
UNKNOWN_ID_RETRY_S = 60.0
# Lookups of ids not in the cache, per second and in a burst: a producer sending random ids
# costs the registry this much at most.
LOOKUPS_PER_S = 10.0
LOOKUP_BURST = 20.0
REGISTRY_CONTENT_TYPE = 'application/vnd.schemaregistry.v1+json'

_PRIMITIVE_MIN_BYTES = {'null': 0, 'boolean': 1, 'int': 1, 'long': 1, 'float': 4,
                        'double': 8, 'bytes': 1, 'string': 1}


class AvroDecodeError(ValueError):
  """A message that is not Avro of its stream, or whose writer schema cannot be had."""


class RegistryUnavailable(AvroDecodeError):
  """The schema registry did not answer (down, timed out, or an error status)."""


class UnknownSchemaId(AvroDecodeError):
  """The schema registry has no schema of that id."""


def _min_bytes(node: Any, depth: int, namespace: str, named: dict[str, Optional[int]]) -> int:
  """The fewest bytes a value of the Avro type ``node`` takes; raises AvroDecodeError for a
  type nested deeper than MAX_AVRO_SCHEMA_DEPTH, a recursive type and an array of items that
  can take no bytes (see schemas/limits.py for why)."""
  if depth > MAX_AVRO_SCHEMA_DEPTH:
    raise AvroDecodeError(f'writer schema nested deeper than {MAX_AVRO_SCHEMA_DEPTH} levels')
  if isinstance(node, str):
    if node in _PRIMITIVE_MIN_BYTES:
      return _PRIMITIVE_MIN_BYTES[node]
    for name in (node if '.' in node or not namespace else f'{namespace}.{node}', node):
      if name in named:
        if named[name] is None:
          raise AvroDecodeError(f'writer schema type {node!r} refers to itself')
        return named[name]
    raise AvroDecodeError(f'writer schema refers to an unknown type {node[:80]!r}')
  if isinstance(node, list):  # a union: the branch index, then the branch
    if not node:
      raise AvroDecodeError('writer schema has an empty union')
    for branch in node:
      _min_bytes(branch, depth + 1, namespace, named)
    return 1
  if not isinstance(node, dict):
    raise AvroDecodeError(f'writer schema has a {type(node).__name__} where a type belongs')
  kind = node.get('type')
  if kind in ('record', 'error', 'enum', 'fixed'):
    name = str(node.get('name', ''))
    full = name if '.' in name else '.'.join(p for p in (node.get('namespace', namespace),
                                                          name) if p)
    named[full] = None  # being defined: a reference to it from inside is recursion
    inner = full.rpartition('.')[0]
    if kind == 'enum':
      size = 1
    elif kind == 'fixed':
      size = node.get('size')
      if type(size) is not int or size < 0:
        raise AvroDecodeError(f'writer schema fixed {name[:80]!r} has no valid size')
    else:
      fields = node.get('fields')
      if not isinstance(fields, list):
        raise AvroDecodeError(f'writer schema record {name[:80]!r} has no list of fields')
      size = sum(_min_bytes(f.get('type') if isinstance(f, dict) else f, depth + 1, inner,
                            named) for f in fields)
    named[full] = size
    return size
  if kind == 'array':
    if _min_bytes(node.get('items'), depth + 1, namespace, named) == 0:
      raise AvroDecodeError('writer schema has an array whose items can take no bytes')
    return 1
  if kind == 'map':
    _min_bytes(node.get('values'), depth + 1, namespace, named)
    return 1
  return _min_bytes(kind, depth + 1, namespace, named)  # {"type": "long", ...}


def check_writer_schema(text: str, schema: RecordSchema) -> dict[str, Any]:
  """A writer schema's text -> the parsed schema, if it is one that messages of ``schema``'s
  stream can be read with: within the bounds, of the stream's shape (a record, or an array of
  records), and valid Avro. Raises AvroDecodeError otherwise."""
  if len(text) > MAX_AVRO_SCHEMA_BYTES:
    raise AvroDecodeError(f'writer schema of {len(text)} characters exceeds '
                          f'{MAX_AVRO_SCHEMA_BYTES}')
  try:
    writer = json.loads(text)
  except (ValueError, RecursionError) as e:
    raise AvroDecodeError(f'writer schema is not JSON: {type(e).__name__}: {e}') from None
  if isinstance(writer, str):
    writer = {'type': writer}
  try:
    _min_bytes(writer, 0, '', {})
  except RecursionError:
    raise AvroDecodeError('writer schema nested too deeply') from None
  except AvroDecodeError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    raise AvroDecodeError(f'writer schema is not valid Avro: {type(e).__name__}: {e}') from None
  wanted = 'array' if schema.is_array else 'record'
  if not isinstance(writer, dict) or writer.get('type') != wanted:
    shape = writer.get('type') if isinstance(writer, dict) else type(writer).__name__
    raise AvroDecodeError(f'a {schema.stream} message is an Avro {wanted}'
                          f'{" of records" if schema.is_array else ""}; the writer schema is '
                          f'{str(shape)[:80]!r}')
  try:
    fastavro.parse_schema(writer)
  except Exception as e:  # pylint: disable=broad-except
    raise AvroDecodeError(f'writer schema is not valid Avro: {type(e).__name__}: {e}') from None
  return writer


class _Resolution:
  """A writer schema and the stream's schema, parsed for fastavro: for an array stream the
  item schemas, since arrays are read item by item (to stop at MAX_RECORDS_PER_MESSAGE before
  building the records past it)."""

  def __init__(self, writer: dict[str, Any], schema: RecordSchema):
    self.is_array = schema.is_array
    record = writer['items'] if self.is_array else writer
    reader = record_schema(schema)
    if isinstance(record, dict) and record.get('type') in ('record', 'error'):
      # Avro resolution matches records by name; the stream's fields are what matter, so the
      # stream's record takes the producer's name.
      name = str(record.get('name', reader['name']))
      reader = dict(reader, name=name, namespace=record.get('namespace', ''))
      if '.' in name:
        reader.pop('namespace')
    self.writer = fastavro.parse_schema(record)
    # A writer of the stream's own fields (the product's schema, as the generator registers
    # it) needs no resolution, which costs a third of the decoding.
    same = isinstance(record, dict) and _fields(record) == _fields(reader)
    self.reader = None if same else fastavro.parse_schema(reader)


def _fields(record: dict[str, Any]) -> Any:
  fields = record.get('fields')
  if not isinstance(fields, list) or not all(isinstance(f, dict) for f in fields):
    return None
  return [(f.get('name'), f.get('type'), f.get('default', 'no default')) for f in fields]


def _read_long(stream: io.BytesIO) -> int:
  """One zig-zag varint (an array block's count or size), at most 10 bytes."""
  value = shift = 0
  for _ in range(10):
    byte = stream.read(1)
    if not byte:
      raise AvroDecodeError('Avro body truncated inside an array block header')
    value |= (byte[0] & 0x7F) << shift
    if not byte[0] & 0x80:
      return (value >> 1) ^ -(value & 1)
    shift += 7
  raise AvroDecodeError('Avro varint longer than 10 bytes')


def _read_body(body: bytes, resolution: _Resolution, stream_name: str) -> Any:
  buffer = io.BytesIO(body)
  try:
    if not resolution.is_array:
      value = fastavro.schemaless_reader(buffer, resolution.writer, resolution.reader)
    else:
      value = []
      while True:
        count = _read_long(buffer)
        if count == 0:
          break
        if count < 0:  # a block that also gives its size in bytes
          count = -count
          _read_long(buffer)
        if len(value) + count > MAX_RECORDS_PER_MESSAGE:
          raise AvroDecodeError(f'Avro array of more than {MAX_RECORDS_PER_MESSAGE} '
                                f'{stream_name} records per message')
        for _ in range(count):
          value.append(fastavro.schemaless_reader(buffer, resolution.writer,
                                                  resolution.reader))
  except AvroDecodeError:
    raise
  except fastavro.read.SchemaResolutionError:
    raise AvroDecodeError(f'writer schema does not resolve to the {stream_name} schema') from None
  except EOFError as e:
    raise AvroDecodeError(f'Avro body truncated ({len(body)} bytes): {e}') from None
  except RecursionError:
    raise AvroDecodeError('Avro body nested too deeply') from None
  except Exception as e:  # pylint: disable=broad-except
    raise AvroDecodeError(f'not an Avro {stream_name} body: {type(e).__name__}: {e}') from None
  left = len(body) - buffer.tell()
  if left:
    raise AvroDecodeError(f'{left} bytes left after the Avro body (a different writer '
                          'schema?)')
  return value


def _read_bounded(response, limit: int, deadline: float) -> bytes:
  chunks, size = [], 0
  while True:
    if time.monotonic() > deadline:
      raise RegistryUnavailable('schema registry answer took too long')
    chunk = response.read(64 << 10)
    if not chunk:
      return b''.join(chunks)
    size += len(chunk)
    if size > limit:
      raise AvroDecodeError(f'schema registry answer larger than {limit} bytes')
    chunks.append(chunk)


class SchemaRegistry:
  """A Confluent-compatible schema registry's REST API: the two calls this product needs."""

  def __init__(self, url: str, timeout_s: Optional[float] = None):
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ('http', 'https') or not parts.netloc:
      raise ValueError(f'schema registry URL {url!r} is not http(s)://host[:port][/path]')
    self.url = url.rstrip('/')
    self._timeout_s = REGISTRY_TIMEOUT_S if timeout_s is None else timeout_s

  def _call(self, path: str, body: Optional[bytes] = None) -> Any:
    request = urllib.request.Request(
        self.url + path, data=body, method='POST' if body is not None else 'GET',
        headers={'Accept': f'{REGISTRY_CONTENT_TYPE}, application/json',
                 **({'Content-Type': REGISTRY_CONTENT_TYPE} if body is not None else {})})
    deadline = time.monotonic() + self._timeout_s
    try:
      with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
        answer = _read_bounded(response, 2 * MAX_AVRO_SCHEMA_BYTES, deadline)
    except urllib.error.HTTPError as e:
      if 400 <= e.code < 500 and e.code not in (401, 403, 408, 429):
        # The registry's answer about this id or subject, not about itself.
        raise UnknownSchemaId(f'schema registry {self.url} answered HTTP {e.code} for '
                              f'{path}') from None
      raise RegistryUnavailable(f'schema registry {self.url} answered HTTP {e.code} '
                                f'for {path}') from None
    except (OSError, http.client.HTTPException, ValueError) as e:
      raise RegistryUnavailable(f'schema registry {self.url} unreachable: '
                                f'{type(e).__name__}: {e}') from None
    try:
      return json.loads(answer)
    except (ValueError, RecursionError):
      raise RegistryUnavailable(f'schema registry {self.url} answered no JSON for '
                                f'{path}') from None

  def schema_text(self, schema_id: int) -> str:
    """The Avro schema of ``schema_id``, as text."""
    answer = self._call(f'/schemas/ids/{schema_id}')
    if not isinstance(answer, dict) or not isinstance(answer.get('schema'), str):
      raise RegistryUnavailable(f'schema registry answer for id {schema_id} has no schema')
    schema_type = answer.get('schemaType', 'AVRO')
    if schema_type != 'AVRO':
      raise AvroDecodeError(f'schema id {schema_id} is {str(schema_type)[:40]}, not Avro')
    if answer.get('references'):
      raise AvroDecodeError(f'schema id {schema_id} has references, which are not supported')
    return answer['schema']

  def register(self, subject: str, schema_text: str) -> int:
    """Registers ``schema_text`` under ``subject`` (or finds it there); returns its id."""
    answer = self._call(f'/subjects/{urllib.parse.quote(subject, safe="")}/versions',
                        json.dumps({'schema': schema_text}).encode())
    if not isinstance(answer, dict) or type(answer.get('id')) is not int:
      raise RegistryUnavailable(f'schema registry gave no id for subject {subject!r}')
    return answer['id']


class AvroDecoder:
  """Message bytes of ``schema``'s stream -> a record dict (a list of them for an array
  stream), read as the module doc says; raises AvroDecodeError for anything else.

  ``registry_url``: Confluent wire format, writer schemas by id from that registry;
  ``writer_schema``: the text of a fixed writer schema for bare bodies (read where the job is
  launched: workers get the text, not the path); neither: bare bodies written with the
  stream's own schema. The cache and the registry client are made on the worker.
  """

  def __init__(self, schema: RecordSchema, registry_url: Optional[str] = None,
               writer_schema: Optional[str] = None):
    self.schema = schema
    self.registry_url = None if writer_schema is not None else registry_url
    self.writer_schema = writer_schema
    if self.registry_url is not None:
      SchemaRegistry(self.registry_url)  # a malformed URL fails at start
    else:
      text = writer_schema if writer_schema is not None else json.dumps(message_schema(schema))
      self._fixed = _Resolution(check_writer_schema(text, schema), schema)  # fails at start
    self._state = None

  @property
  def framing(self) -> str:
    return 'confluent' if self.registry_url else 'bare'

  def __getstate__(self):
    return {'schema': self.schema, 'registry_url': self.registry_url,
            'writer_schema': self.writer_schema}

  def __setstate__(self, state):
    self.__init__(**state)

  def _setup(self):
    stream = self.schema.stream
    self._state = {
        'registry': SchemaRegistry(self.registry_url),
        'cache': collections.OrderedDict(),  # id -> (_Resolution or error, retry at)
        'down_until': 0.0, 'tokens': LOOKUP_BURST, 'refilled': time.monotonic(),
        'lookups': Metrics.counter('AvroDecode', f'{stream}_schema_lookups'),
        'unreachable': Metrics.counter('AvroDecode', f'{stream}_registry_unreachable'),
    }

  def __call__(self, payload: bytes) -> Any:
    if len(payload) > MAX_MESSAGE_BYTES:
      raise AvroDecodeError(f'message of {len(payload)} bytes exceeds {MAX_MESSAGE_BYTES}')
    if self.registry_url is None:
      return _read_body(payload, self._fixed, self.schema.stream)
    if len(payload) < HEADER_BYTES:
      raise AvroDecodeError(f'message of {len(payload)} bytes is shorter than the '
                            f'{HEADER_BYTES}-byte Confluent header')
    if payload[0] != MAGIC_BYTE:
      hint = ' (JSON on an Avro topic?)' if payload[:1] in (b'{', b'[') else ''
      raise AvroDecodeError(f'magic byte 0x{payload[0]:02x}, not 0x00: not the Confluent '
                            f'wire format{hint}')
    schema_id = struct.unpack_from('>i', payload, 1)[0]
    if schema_id < 0:
      raise AvroDecodeError(f'schema id {schema_id} is negative')
    return _read_body(payload[HEADER_BYTES:], self._resolution(schema_id), self.schema.stream)

  def _resolution(self, schema_id: int) -> _Resolution:
    if self._state is None:
      self._setup()
    state, now = self._state, time.monotonic()
    cache = state['cache']
    entry = cache.get(schema_id)
    if entry is not None:
      cache.move_to_end(schema_id)
      found, retry_at = entry
      if isinstance(found, _Resolution):
        return found
      if now < retry_at:
        raise found
    if now < state['down_until']:
      raise RegistryUnavailable(f'schema registry unreachable; schema id {schema_id} not '
                                f'cached (asked again in {state["down_until"] - now:.1f} s)')
    state['tokens'] = min(LOOKUP_BURST,
                          state['tokens'] + (now - state['refilled']) * LOOKUPS_PER_S)
    state['refilled'] = now
    if state['tokens'] < 1:
      raise RegistryUnavailable(f'schema id {schema_id} not cached and over '
                                f'{LOOKUPS_PER_S:g} registry lookups per second')
    state['tokens'] -= 1
    state['lookups'].inc()
    try:
      text = state['registry'].schema_text(schema_id)
      found, retry_at = _Resolution(check_writer_schema(text, self.schema), self.schema), 0.0
    except RegistryUnavailable as e:
      state['unreachable'].inc()
      state['down_until'] = time.monotonic() + REGISTRY_RETRY_S
      raise e
    except UnknownSchemaId:
      found = UnknownSchemaId(f'schema id {schema_id} unknown to the schema registry')
      retry_at = time.monotonic() + UNKNOWN_ID_RETRY_S
    except AvroDecodeError as e:
      found, retry_at = AvroDecodeError(f'schema id {schema_id}: {e}'), float('inf')
    except Exception as e:  # pylint: disable=broad-except
      found = AvroDecodeError(f'schema id {schema_id}: {type(e).__name__}: {e}')
      retry_at = float('inf')
    cache[schema_id] = (found, retry_at)
    while len(cache) > MAX_CACHED_AVRO_SCHEMAS:
      cache.popitem(last=False)
    if isinstance(found, _Resolution):
      return found
    raise found


def avro_decoders(formats: Mapping[str, str], schemas: Mapping[str, RecordSchema],
                  registry_url: Optional[str] = None,
                  schema_files: Iterable[str] = ()) -> dict[str, AvroDecoder]:
  """The decoders of the streams whose format is ``avro`` (``formats``: stream -> json|avro).

  ``schema_files``: ``STREAM=PATH`` items (or one ``PATH`` when only one stream reads Avro),
  each read here. Raises ValueError for a bad combination or an unusable schema file.
  """
  avro = [stream for stream, kind in formats.items() if kind == 'avro']
  files: dict[str, str] = {}
  for item in schema_files:
    stream, sep, path = item.partition('=')
    if not sep:
      if len(avro) != 1:
        raise ValueError(f'--avro_schema_file {item}: say which stream it is for '
                         '(STREAM=PATH) when several streams read Avro')
      stream, path = avro[0], item
    if stream not in avro:
      raise ValueError(f'--avro_schema_file {item}: stream {stream!r} does not read Avro')
    files[stream] = path
  decoders = {}
  for stream in avro:
    text = None
    if stream in files:
      with open(files[stream], encoding='utf-8') as f:
        text = f.read(MAX_AVRO_SCHEMA_BYTES + 1)
    try:
      decoders[stream] = AvroDecoder(schemas[stream], registry_url, text)
    except AvroDecodeError as e:
      raise ValueError(f'--avro_schema_file {files[stream]}: {e}') from None
  return decoders
