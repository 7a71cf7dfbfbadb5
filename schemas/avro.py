"""The Avro schemas of the input streams, derived from :mod:`schemas.records` (one definition).

A stream's Avro message has the shape of its JSON message: for a ``payload=OBJECT`` stream
(network) one record, for a ``payload=ARRAY`` stream (process, memory) an array of records.
Field types follow the field kinds (``int`` -> ``long``, ``float`` -> ``double``, ``str`` ->
``string``); a required field is a plain type, any other is ``["null", type]`` with default
null, so that a producer may leave it out (the cleaned record then has no value, as when a JSON
message lacks the key). Unknown writer fields are skipped on reading (Avro schema resolution),
like unknown JSON keys.

    python -m schemas.avro network          # the network stream's schema, as a .avsc file holds it
    python -m schemas.avro --all out/       # network.avsc, process.avsc, memory.avsc in out/
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Optional, Sequence

from schemas.records import FLOAT, INT, SCHEMAS, STR, RecordSchema

NAMESPACE = 'streaming_attack_detection'
AVRO_TYPES = {INT: 'long', FLOAT: 'double', STR: 'string'}


def record_name(schema: RecordSchema) -> str:
  return f'{schema.stream.capitalize()}Record'


def record_schema(schema: RecordSchema) -> dict[str, Any]:
  """The Avro record of one of ``schema``'s records: its fields in message order."""
  fields = []
  for field in schema.fields:
    avro_type = AVRO_TYPES[field.kind]
    if field.required:
      fields.append({'name': field.name, 'type': avro_type})
    else:
      fields.append({'name': field.name, 'type': ['null', avro_type], 'default': None})
  return {'type': 'record', 'name': record_name(schema), 'namespace': NAMESPACE,
          'doc': f'One {schema.stream} record (schemas/records.py).', 'fields': fields}


def message_schema(schema: RecordSchema) -> dict[str, Any]:
  """The Avro schema of one Kafka message of ``schema.stream``: a record, or an array of
  records for a stream whose messages carry several."""
  record = record_schema(schema)
  return {'type': 'array', 'items': record} if schema.is_array else record


def message_schema_json(schema: RecordSchema) -> str:
  """:func:`message_schema` as the text a ``.avsc`` file or a schema registry holds."""
  return json.dumps(message_schema(schema), indent=2) + '\n'


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m schemas.avro', description='Prints (or writes) the Avro schemas of the '
      'input streams, derived from schemas/records.py.')
  parser.add_argument('stream', nargs='?', choices=tuple(SCHEMAS))
  parser.add_argument('--all', metavar='DIR', help='write <stream>.avsc for every stream here')
  args = parser.parse_args(argv)
  if bool(args.stream) == bool(args.all):
    parser.error('give one stream, or --all DIR')
  if args.stream:
    sys.stdout.write(message_schema_json(SCHEMAS[args.stream]))
    return 0
  os.makedirs(args.all, exist_ok=True)
  for stream, schema in SCHEMAS.items():
    with open(os.path.join(args.all, f'{stream}.avsc'), 'w', encoding='utf-8') as f:
      f.write(message_schema_json(schema))
  return 0


if __name__ == '__main__':
  sys.exit(main())
