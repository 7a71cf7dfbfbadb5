"""Avro input: the schemas derived from schemas/records.py, the decoder (bare bodies and the
Confluent wire format with a schema registry), and bad Avro of every kind dead-lettered with its
raw bytes, counted, never raised.

No Confluent-compatible registry runs on this machine (docs/avro.md says why): the registry
tests use tests/registry_stub.py, a few lines of http.server answering the two calls of
Confluent's REST API the product makes. "Registry down" is a real closed port.
"""

import json
import pickle
import socket
import time

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from hypothesis import HealthCheck, given, settings, strategies as st
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from generator.avro_messages import (AVRO_KINDS, FRAMED_KINDS, HUGE_VARINT, AvroEncoder,
                                     avro_body, confluent_header, typed_records)
from generator.messages import Message
from generator.source import SourceConfig, generate_messages
from pipelines import generate, stream as stream_job
from schemas import avro as avro_schemas
from schemas.limits import MAX_MESSAGE_BYTES, MAX_RECORDS_PER_MESSAGE
from schemas.records import MEMORY, NETWORK, PROCESS, SCHEMAS, STR
from tests.registry_stub import RegistryStub
from tests.factories import BASE_TS, memory_record, network_record, process_record
from transforms import avro_decode
from transforms.avro_decode import AvroDecodeError, AvroDecoder, avro_decoders
from transforms.dead_letter import DEAD_LETTER
from transforms.batch import RecordBatch
from transforms.parse import ParseAndClean, parse_chunks, parse_messages
from transforms.source import SourceMessage


def _process_records(n=3):
  return [process_record(1, 100 + i, f'cmd{i}', BASE_TS + i, i == 0) for i in range(n)]


def _msg(stream, value, offset=0):
  return SourceMessage(stream, value, source=f'avro-{stream}', partition=0, offset=offset)


@pytest.fixture
def registry():
  server = RegistryStub()
  yield server
  server.close()


def _closed_port_url():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return f'http://127.0.0.1:{s.getsockname()[1]}'


def test_schemas_are_derived_from_the_record_schemas():
  for schema in SCHEMAS.values():
    derived = avro_schemas.message_schema(schema)
    record = derived['items'] if schema.is_array else derived
    assert derived['type'] == ('array' if schema.is_array else 'record')
    assert [f['name'] for f in record['fields']] == list(schema.names)
    for avro_field in record['fields']:
      field = schema.field(avro_field['name'])
      kind = avro_schemas.AVRO_TYPES[field.kind]
      assert avro_field['type'] == (kind if field.required else ['null', kind])
  assert avro_schemas.AVRO_TYPES[STR] == 'string'


def test_schema_cli_writes_every_stream(tmp_path, capsys):
  assert avro_schemas.main(['network']) == 0
  assert json.loads(capsys.readouterr().out) == avro_schemas.message_schema(NETWORK)
  assert avro_schemas.main(['--all', str(tmp_path)]) == 0
  assert sorted(p.name for p in tmp_path.iterdir()) == [f'{s}.avsc' for s in sorted(SCHEMAS)]


@pytest.mark.parametrize('schema, raw', [
    (NETWORK, network_record(7)),
    (PROCESS, _process_records()),
    (MEMORY, [memory_record(2, 9, 'sshd', BASE_TS, True)]),
])
def test_avro_decodes_to_what_json_cleans_to(schema, raw):
  json_batch, json_dead = parse_messages(schema, [_msg(schema.stream, json.dumps(raw).encode())])
  avro_batch, avro_dead = _parse_avro(schema, [avro_body(schema, typed_records(schema, raw))])
  assert not json_dead and not avro_dead
  assert avro_batch.columns == json_batch.columns
  assert len(avro_batch) == (len(raw) if schema.is_array else 1)


def _parse_avro(schema, values, decoder=None):
  """parse_chunks (what ParseAndCleanFn runs) with an Avro decoder: (records or None, dead
  letters)."""
  chunks = list(parse_chunks(schema, [_msg(schema.stream, v, offset=i)
                                      for i, v in enumerate(values)], max_records=None,
                             decode=decoder or AvroDecoder(schema)))
  dead = [row for _, rows in chunks for row in rows]
  batches = [b for b, _ in chunks if len(b)]
  return (RecordBatch.concat(schema.stream, batches) if batches else None), dead


def test_writer_schema_evolution_resolves_by_field_name():
  """A producer's own schema (another name, fields in another order, an extra field, ints
  where longs are, optional fields left out) reads as the stream's records."""
  writer = {'type': 'array', 'items': {
      'type': 'record', 'name': 'Sample', 'namespace': 'com.example.host', 'fields': [
          {'name': 'CMD', 'type': 'string'}, {'name': 'ts', 'type': 'long'},
          {'name': 'PID', 'type': 'int'}, {'name': 'machine', 'type': 'int'},
          {'name': 'agent_version', 'type': 'string'},
          {'name': 'CPU', 'type': ['null', 'float']}]}}
  records = [{'CMD': 'sshd', 'ts': BASE_TS, 'PID': 42, 'machine': 3, 'agent_version': '2.1',
              'CPU': 12.5}]
  decoder = AvroDecoder(PROCESS, writer_schema=json.dumps(writer))
  batch, dead = _parse_avro(PROCESS, [avro_body(PROCESS, records, writer)], decoder)
  assert not dead
  assert (batch.columns['CMD'], batch.columns['PID'], batch.columns['CPU']) == (
      ['sshd'], [42], [12.5])
  assert batch.columns['TRUN'] == [None]


def _bare_network():
  return avro_body(NETWORK, typed_records(NETWORK, network_record(1)))


def _bare_process():
  return avro_body(PROCESS, typed_records(PROCESS, _process_records()))


def _huge_string_length():
  # duration (a long), then protocol_type: a string of 2**62 bytes
  return b'\x00' + HUGE_VARINT


# (stream, value, a fragment of the error): bare bodies read with the stream's own schema.
BAD_BARE = [
    (NETWORK, _bare_network()[:-5], 'truncated'),
    (NETWORK, b'', 'truncated'),
    (NETWORK, _bare_network() + b'\x00', 'bytes left after the Avro body'),
    (NETWORK, _huge_string_length(), 'truncated'),
    (NETWORK, json.dumps(network_record(1)).encode(), ''),
    (NETWORK, b'\x00' * (MAX_MESSAGE_BYTES + 1), 'exceeds'),
    (PROCESS, HUGE_VARINT, f'more than {MAX_RECORDS_PER_MESSAGE}'),
    # a block of -(2**62) items: a count with its size in bytes (here 1)
    (PROCESS, b'\xff' * 8 + b'\x7f\x02', f'more than {MAX_RECORDS_PER_MESSAGE}'),
    (PROCESS, b'\x02', 'truncated'),
    (PROCESS, b'\xff' * 11, 'varint longer than 10 bytes'),
    # sequence null, machine 1, PID 1, then TRUN's union branch 5 of 2
    (PROCESS, b'\x02\x00\x02\x02\x0a\x00', 'IndexError'),
    (PROCESS, _bare_process().replace(b'cmd0', b'\xff\xfecm'), 'UnicodeDecodeError'),
]


def test_bad_bare_avro_is_dead_lettered_with_its_bytes():
  for schema in (NETWORK, PROCESS):
    cases = [(v, reason) for s, v, reason in BAD_BARE if s is schema]
    batch, dead = _parse_avro(schema, [v for v, _ in cases])
    assert batch is None
    assert [row['offset'] for row in dead] == list(range(len(cases)))
    for row, (value, reason) in zip(dead, cases):
      assert (row['stage'], row['payload'], row['stream']) == ('parse', value, schema.stream)
      assert reason in row['error'], (reason, row['error'])


def test_a_record_that_fails_cleaning_is_a_clean_dead_letter():
  typed = typed_records(NETWORK, network_record(1))
  batch, dead = _parse_avro(NETWORK, [avro_body(NETWORK, {**typed, 'serror_rate': float('nan')}),
                                      avro_body(NETWORK, {**typed, 'service': 'x' * 5000})])
  assert batch is None
  assert [(row['stage'], row['offset']) for row in dead] == [('clean', 0), ('clean', 1)]
  assert 'not a finite number' in dead[0]['error'] and 'longer than' in dead[1]['error']


def _writer_record(name, fields):
  return {'type': 'array', 'items': {'type': 'record', 'name': name, 'fields': fields}}


_KEY_FIELDS = [{'name': 'machine', 'type': 'long'}, {'name': 'PID', 'type': 'long'},
               {'name': 'CMD', 'type': 'string'}, {'name': 'ts', 'type': 'long'}]
# Writer schemas a registry may hold that no message of the process stream can be read with.
REFUSED_SCHEMAS = [
    (_writer_record('E', []), 'items can take no bytes'),  # 2**62 items in 9 bytes
    ({'type': 'array', 'items': 'null'}, 'items can take no bytes'),
    (_writer_record('N', _KEY_FIELDS + [{'name': 'next', 'type': ['null', 'N']}]),
     'refers to itself'),  # data nested as deep as the message is long
    (_writer_record('D', _KEY_FIELDS + [{'name': 'deep', 'type': json.loads(
        '{"type":"array","items":' * 40 + '"long"' + '}' * 40)}]), 'deeper than'),
    ({'type': 'record', 'name': 'One', 'fields': _KEY_FIELDS}, 'is an Avro array'),
    (_writer_record('X', [{'name': 'a', 'type': 'no.such.Type'}]), 'unknown type'),
    ({'type': 'array', 'items': {'type': 'record', 'name': 'F', 'fields': 'x'}},
     'no list of fields'),
    ('{"type": "array", ' + ' ' * (300 << 10) + '"items": "long"}', 'exceeds'),
    ('not json', 'not JSON'),
]


@pytest.mark.parametrize('writer, reason', REFUSED_SCHEMAS)
def test_unusable_writer_schemas_are_refused(writer, reason):
  text = writer if isinstance(writer, str) else json.dumps(writer)
  with pytest.raises(AvroDecodeError, match=reason):
    avro_decode.check_writer_schema(text, PROCESS)


def test_schema_file_that_is_refused_stops_the_job_at_start(tmp_path):
  path = tmp_path / 'bad.avsc'
  path.write_text(json.dumps(REFUSED_SCHEMAS[0][0]))
  with pytest.raises(ValueError, match='items can take no bytes'):
    avro_decoders({'process': 'avro'}, SCHEMAS, schema_files=[str(path)])
  with pytest.raises(ValueError, match='say which stream'):
    avro_decoders({'process': 'avro', 'memory': 'avro'}, SCHEMAS, schema_files=[str(path)])
  with pytest.raises(ValueError, match='does not read Avro'):
    avro_decoders({'process': 'avro'}, SCHEMAS, schema_files=[f'network={path}'])
  good = tmp_path / 'process.avsc'
  good.write_text(avro_schemas.message_schema_json(PROCESS))
  decoders = avro_decoders({'network': 'json', 'process': 'avro'}, SCHEMAS,
                           registry_url='http://unused', schema_files=[f'process={good}'])
  assert list(decoders) == ['process'] and decoders['process'].framing == 'bare'
  good.unlink()  # workers get the schema's text, not the path
  records = typed_records(PROCESS, _process_records())
  assert pickle.loads(pickle.dumps(decoders['process']))(avro_body(PROCESS, records)) == records


def test_schema_mismatch_is_a_dead_letter():
  writer = _writer_record('P', _KEY_FIELDS[:2] + [{'name': 'CMD', 'type': 'long'},
                                                  _KEY_FIELDS[3]])
  decoder = AvroDecoder(PROCESS, writer_schema=json.dumps(writer))
  value = avro_body(PROCESS, [{'machine': 1, 'PID': 2, 'CMD': 3, 'ts': 4}], writer)
  _, dead = _parse_avro(PROCESS, [value], decoder)
  assert [row['payload'] for row in dead] == [value]
  assert 'does not resolve to the process schema' in dead[0]['error']


def _framed(schema_id, schema, value):
  return confluent_header(schema_id) + avro_body(schema, value)


def test_confluent_wire_format_with_a_registry(registry):
  good_id = registry.add(json.dumps(avro_schemas.message_schema(PROCESS)))
  avro_id = registry.add('{"type": "string"}', schemaType='PROTOBUF')
  refused_id = registry.add(json.dumps(REFUSED_SCHEMAS[2][0]))
  records = typed_records(PROCESS, _process_records())
  good = _framed(good_id, PROCESS, records)
  bad = [
      (good[:3], 'shorter than the 5-byte Confluent header'),
      (b'\x01' + good[1:], 'magic byte 0x01'),
      (json.dumps(_process_records()).encode(), 'JSON on an Avro topic'),
      (confluent_header(999) + good[5:], 'schema id 999 unknown'),
      (confluent_header(999) + good[5:], 'schema id 999 unknown'),  # from the cache
      (confluent_header(avro_id) + good[5:], 'PROTOBUF, not Avro'),
      (confluent_header(refused_id) + good[5:], 'refers to itself'),
      (good[:-2], 'truncated'),
      (confluent_header(good_id) + HUGE_VARINT, f'more than {MAX_RECORDS_PER_MESSAGE}'),
  ]
  decoder = AvroDecoder(PROCESS, registry.url)
  assert decoder.framing == 'confluent'
  batch, dead = _parse_avro(PROCESS, [good, good] + [v for v, _ in bad], decoder)
  assert len(batch) == 2 * len(records)
  assert [row['offset'] for row in dead] == list(range(2, 2 + len(bad)))
  for row, (value, reason) in zip(dead, bad):
    assert (row['stage'], row['payload']) == ('parse', value)
    assert reason in row['error'], (reason, row['error'])
  # one lookup per id: the good one, 999 (its second message read the cache), two more
  assert registry.requests == 4


def test_registry_down_dead_letters_fast_and_recovers(registry, monkeypatch):
  records = typed_records(NETWORK, network_record(1))
  decoder = AvroDecoder(NETWORK, _closed_port_url())
  started = time.monotonic()
  _, dead = _parse_avro(NETWORK, [_framed(1, NETWORK, records)] * 50, decoder)
  assert time.monotonic() - started < 5, 'one failed lookup, then the rest fail at once'
  assert len(dead) == 50 and all(row['payload'] == _framed(1, NETWORK, records)
                                 for row in dead)
  assert 'unreachable' in dead[0]['error'] and 'asked again in' in dead[1]['error']

  # A registry that answers too slowly is down too; the cached schemas keep decoding.
  schema_id = registry.add(json.dumps(avro_schemas.message_schema(NETWORK)))
  monkeypatch.setattr(avro_decode, 'REGISTRY_TIMEOUT_S', 0.5)
  decoder = AvroDecoder(NETWORK, registry.url)
  assert decoder(_framed(schema_id, NETWORK, records)) == records
  registry.delay_s = 2.0
  started = time.monotonic()
  with pytest.raises(avro_decode.RegistryUnavailable):
    decoder(confluent_header(schema_id + 1) + _framed(schema_id, NETWORK, records)[5:])
  assert time.monotonic() - started < 1.5
  assert decoder(_framed(schema_id, NETWORK, records)) == records
  # After REGISTRY_RETRY_S it is asked again.
  registry.delay_s = 0
  monkeypatch.setattr(avro_decode, 'REGISTRY_RETRY_S', 0.0)
  decoder._state['down_until'] = 0.0
  with pytest.raises(avro_decode.UnknownSchemaId):
    decoder(confluent_header(schema_id + 1) + _framed(schema_id, NETWORK, records)[5:])


def test_random_schema_ids_cost_the_registry_a_bounded_number_of_lookups(registry,
                                                                         monkeypatch):
  monkeypatch.setattr(avro_decode, 'MAX_CACHED_AVRO_SCHEMAS', 8)
  decoder = AvroDecoder(NETWORK, registry.url)
  values = [confluent_header(1000 + i) + b'\x00' for i in range(200)]
  _, dead = _parse_avro(NETWORK, values, decoder)
  assert len(dead) == 200
  assert registry.requests <= avro_decode.LOOKUP_BURST + 2
  assert any('registry lookups per second' in row['error'] for row in dead)
  assert len(decoder._state['cache']) <= 8


def test_avro_through_parse_and_clean_is_counted(registry):
  """On the DirectRunner: good Avro records out, bad Avro dead-lettered and counted in the
  ParseAndClean metrics the job summary reads."""
  schema_id = registry.add(json.dumps(avro_schemas.message_schema(NETWORK)))
  good = [_framed(schema_id, NETWORK, typed_records(NETWORK, network_record(i)))
          for i in range(4)]
  bad = [good[0][:-1], b'\x07' + good[0][1:], b'']
  pipeline = TestPipeline()
  result = (pipeline
            | beam.Create([_msg('network', v, offset=i) for i, v in enumerate(good + bad)])
            | ParseAndClean(NETWORK, decoders={'network': AvroDecoder(NETWORK, registry.url)}))
  assert_that(result['network'] | beam.FlatMap(lambda batch: batch.columns['uuid']),
              equal_to([f'net-{i:06d}' for i in range(4)]), label='Records')
  assert_that(result[DEAD_LETTER] | beam.Map(lambda row: (row['offset'], row['payload'])),
              equal_to([(4 + i, v) for i, v in enumerate(bad)]), label='DeadLetters')
  metrics = pipeline.run().metrics().query(MetricsFilter().with_namespace('ParseAndClean'))
  counts = {c.key.metric.name: c.committed for c in metrics['counters']}
  assert counts['network_messages'] == 7
  assert counts['network_cleaned'] == 4
  assert counts['network_dead_lettered'] == 3


def test_generator_sends_avro_and_breaks_it_unreadably(registry):
  config = SourceConfig(count=300, seed=3, malformed_fraction=0.2, start_ms=BASE_TS * 1000)
  topics = {SCHEMAS[s].default_topic: SCHEMAS[s] for s in SCHEMAS}
  for url in (registry.url, None):
    encoder = AvroEncoder(topics, url, seed=1)
    decoders = {s.default_topic: AvroDecoder(s, url) for s in SCHEMAS.values()}
    kinds = set()
    for message in generate_messages(config):
      sent = encoder.encode(message)
      decode = decoders[message.topic]
      if message.malformed:
        with pytest.raises(AvroDecodeError):
          decode(sent.value)
        kinds.add(sent.value[:1])
      else:
        assert sent.value[:5] == (confluent_header(encoder.schema_ids[message.topic])
                                  if url else sent.value[:5])
        schema = topics[message.topic]
        assert decode(sent.value) == typed_records(schema, json.loads(message.value))
    assert len(kinds) > 2
  assert set(AVRO_KINDS).isdisjoint(FRAMED_KINDS)
  assert Message('t', None, b'x', 0) == AvroEncoder({}).encode(Message('t', None, b'x', 0))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=200), stream=st.sampled_from(sorted(SCHEMAS)),
       framed=st.booleans())
def test_any_bytes_decode_or_raise_avro_decode_error_quickly(data, stream, framed):
  """Whatever the bytes, the decoder returns records or raises AvroDecodeError (what parsing
  dead-letters), in bounded time; with the header, ids resolve to the stream's own schema."""
  decoder = AvroDecoder(SCHEMAS[stream])
  if framed:
    decoder = AvroDecoder(SCHEMAS[stream], 'http://unused')
    decoder._resolution = lambda schema_id: avro_decode._Resolution(  # no registry: a fixed id
        avro_schemas.message_schema(SCHEMAS[stream]), SCHEMAS[stream])
    data = confluent_header(1) + data
  started = time.monotonic()
  try:
    decoded = decoder(data)
  except AvroDecodeError:
    decoded = None
  assert time.monotonic() - started < 1.0
  if decoded is not None:
    assert isinstance(decoded, list if SCHEMAS[stream].is_array else dict)


@settings(max_examples=200, deadline=None)
@given(position=st.integers(min_value=0), byte=st.integers(min_value=0, max_value=255))
def test_a_changed_byte_of_a_host_message_is_decoded_or_refused(position, byte):
  good = avro_body(PROCESS, typed_records(PROCESS, _process_records(20)))
  value = bytearray(good)
  value[position % len(value)] = byte
  batch, dead = _parse_avro(PROCESS, [bytes(value)])
  if any(row['stage'] == 'parse' for row in dead):  # the message, whole
    assert batch is None and [row['payload'] for row in dead] == [bytes(value)]
  else:  # decoded: each record archived or, alone, a dead letter of stage clean
    assert all(row['stage'] == 'clean' and row['record_index'] is not None for row in dead)
    assert sorted((batch.record_indexes if batch else []) +
                  [row['record_index'] for row in dead]) == list(range(20)) or (
                      value[0] != good[0])  # a changed count: another number of records


def test_stream_job_flags_build_the_decoders(tmp_path):
  path = tmp_path / 'process.avsc'
  path.write_text(avro_schemas.message_schema_json(PROCESS))
  opts = PipelineOptions(['--network_format=avro', '--schema_registry_url=http://r:8081',
                          '--process_format=avro', '--memory_format=avro',
                          f'--avro_schema_file=process={path}']
                         ).view_as(stream_job.StreamOptions)
  decoders = stream_job.message_decoders(opts)
  assert {s: d.framing for s, d in decoders.items()} == {
      'network': 'confluent', 'process': 'bare', 'memory': 'confluent'}
  assert stream_job.message_decoders(PipelineOptions([]).view_as(stream_job.StreamOptions)) == {}
  files = PipelineOptions(['--source=files', f'--input_dir={tmp_path}',
                           '--memory_format=avro']).view_as(stream_job.StreamOptions)
  with pytest.raises(SystemExit, match='JSON lines'):
    stream_job.message_decoders(files)
  missing = PipelineOptions(['--memory_format=avro', f'--avro_schema_file={tmp_path}/none.avsc']
                            ).view_as(stream_job.StreamOptions)
  with pytest.raises(SystemExit, match='No such file'):
    stream_job.message_decoders(missing)


def test_generator_cli_refuses_avro_into_files(tmp_path, capsys):
  with pytest.raises(SystemExit):
    generate.main(['--output_dir', str(tmp_path), '--count', '3', '--network_format', 'avro'])
  assert 'Avro messages go to Kafka' in capsys.readouterr().err


def test_malformed_registry_urls_schema_texts_and_ids_are_refused():
  with pytest.raises(ValueError, match='not http'):
    AvroDecoder(NETWORK, 'registry:8081')
  with pytest.raises(SystemExit, match='not http'):
    stream_job.message_decoders(PipelineOptions(
        ['--network_format=avro', '--schema_registry_url=ftp://x']).view_as(
            stream_job.StreamOptions))
  with pytest.raises(AvroDecodeError, match='not JSON'):
    avro_decode.check_writer_schema('[' * 200_000, NETWORK)
  decoder = AvroDecoder(NETWORK, _closed_port_url())
  with pytest.raises(AvroDecodeError, match='negative'):
    decoder(b'\x00\xff\xff\xff\xfe' + _bare_network())
  assert decoder._state is None, 'refused without asking the registry'
