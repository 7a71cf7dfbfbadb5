"""The three input record schemas (network, process, memory), as in docs/DESIGN.md.

Each field has a type (``int``, ``float`` or ``str``), whether a record without it is unusable
(``required``), and whether it is a raw input column of the detector's model (``feature``).
Parsing casts by these types, the Parquet schemas are built from them and the model pipelines
select their columns by them.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterable

INT = 'int'
FLOAT = 'float'
STR = 'str'

# How a stream's Kafka message carries its records (RecordSchema.payload).
OBJECT = 'object'  # one JSON object, one record
ARRAY = 'array'  # a JSON array of records
# How a stream's event-time field is written (RecordSchema.time_format).
ISO8601 = 'iso8601'  # text, e.g. 2026-01-01T00:00:00Z; without an offset it is UTC
UNIX_SECONDS = 'unix_seconds'  # a number of seconds since 1970-01-01 UTC


@dataclasses.dataclass(frozen=True)
class Field:
  name: str
  kind: str
  required: bool = False
  feature: bool = False


@dataclasses.dataclass(frozen=True)
class RecordSchema:
  """One input stream: its name, default Kafka topic, fields in message order, and everything
  that makes its stages behave differently from another stream's (the transforms ask the
  schema, never the stream's name)."""
  stream: str
  default_topic: str
  fields: tuple[Field, ...]
  # Fields computed during cleaning and enrichment, after the message's own fields.
  derived: tuple[Field, ...] = ()
  # OBJECT (one record per message) or ARRAY (a JSON array of records per message).
  payload: str = OBJECT
  # The record's own event time, and how it is written (ISO8601 or UNIX_SECONDS).
  time_field: str = 'utc'
  time_format: str = ISO8601
  # What identifies a record that carries no uuid, for the derived one; empty: the message's
  # source coordinates (topic, partition, offset), else its content.
  identity_fields: tuple[str, ...] = ()
  # The column a detector may learn from, when the data carries one.
  label_column: str = 'label'
  # The key its records are joined on with the other host stream; empty: not joined.
  join_key: tuple[str, ...] = ()
  # Whether a detector of this stream is trained from labels by default (host archives are
  # labelled); otherwise label-free methods, and an alert-rate threshold.
  supervised_by_default: bool = False
  # Whether its records are KDD Cup 1999 connection records (what KDD CSV files hold).
  kdd_records: bool = False

  @property
  def is_array(self) -> bool:
    return self.payload == ARRAY

  @property
  def joined(self) -> bool:
    return bool(self.join_key)

  # Cached: the scoring path reads these per batch and per column (a frozen dataclass's
  # cached_property writes the instance's __dict__, not its fields).
  @functools.cached_property
  def names(self) -> tuple[str, ...]:
    return tuple(f.name for f in self.fields)

  @functools.cached_property
  def feature_columns(self) -> tuple[str, ...]:
    """The raw columns the detector's model takes, in a fixed order."""
    return tuple(f.name for f in self.fields + self.derived if f.feature)

  @functools.cached_property
  def categorical_features(self) -> tuple[str, ...]:
    return tuple(
        f.name for f in self.fields + self.derived if f.feature and f.kind == STR)

  @functools.cached_property
  def numeric_features(self) -> tuple[str, ...]:
    return tuple(
        f.name for f in self.fields + self.derived if f.feature and f.kind != STR)

  def field(self, name: str) -> Field:
    for f in self.fields + self.derived:
      if f.name == name:
        return f
    raise KeyError(f'{self.stream} records have no field {name!r}')


def _fields(kind: str, names: Iterable[str], **flags) -> tuple[Field, ...]:
  return tuple(Field(name, kind, **flags) for name in names)


# The 41 KDD Cup 1999 features in file order. Three are strings, the rates are fractions and
# the rest are counts.
KDD_FEATURES: tuple[str, ...] = (
    'duration', 'protocol_type', 'service', 'flag', 'src_bytes', 'dst_bytes', 'land',
    'wrong_fragment', 'urgent', 'hot', 'num_failed_logins', 'logged_in', 'num_compromised',
    'root_shell', 'su_attempted', 'num_root', 'num_file_creations', 'num_shells',
    'num_access_files', 'num_outbound_cmds', 'is_host_login', 'is_guest_login', 'count',
    'srv_count', 'serror_rate', 'srv_serror_rate', 'rerror_rate', 'srv_rerror_rate',
    'same_srv_rate', 'diff_srv_rate', 'srv_diff_host_rate', 'dst_host_count',
    'dst_host_srv_count', 'dst_host_same_srv_rate', 'dst_host_diff_srv_rate',
    'dst_host_same_src_port_rate', 'dst_host_srv_diff_host_rate', 'dst_host_serror_rate',
    'dst_host_srv_serror_rate', 'dst_host_rerror_rate', 'dst_host_srv_rerror_rate')
KDD_CATEGORICAL = ('protocol_type', 'service', 'flag')
# KDD's "basic features of individual TCP connections", the first nine: what any connection
# record has (the other 32 are counts and rates derived from them and from traffic around
# it). A record without all nine is refused (stage clean): a message of none or a few of the
# 41 features is not a connection record, and must neither be scored nor learned from.
KDD_BASIC_FEATURES = KDD_FEATURES[:9]


def _kdd_kind(name: str) -> str:
  if name in KDD_CATEGORICAL:
    return STR
  return FLOAT if name.endswith('_rate') else INT


NETWORK = RecordSchema(
    stream='network',
    default_topic='sensor_messages',
    fields=tuple(Field(n, _kdd_kind(n), required=n in KDD_BASIC_FEATURES, feature=True)
                 for n in KDD_FEATURES) + (
        Field('label', STR),
        Field('uuid', STR),
        Field('utc', STR),
        Field('sequence_id', INT),
        Field('index', INT),
        Field('site', STR),
    ),
    kdd_records=True,
)

# Host records: identifiers, counters and timestamps are integers; percentages and sizes are
# decimals. machine, PID, CMD and ts are required because the join key and event time are
# made of them.
_HOST_KEY = (
    Field('sequence', INT),
    Field('machine', INT, required=True),
    Field('PID', INT, required=True),
)
# What the host streams share beyond their fields: arrays of records, a Unix ``ts``, identity
# of the same sample read twice, the ``attack`` label and the (machine, program) join key.
_HOST = dict(
    payload=ARRAY, time_field='ts', time_format=UNIX_SECONDS,
    identity_fields=('machine', 'PID', 'CMD', 'ts', 'sequence'), label_column='attack',
    join_key=('machine', 'CMD_PID'), supervised_by_default=True)

PROCESS = RecordSchema(
    stream='process',
    default_topic='process_activity',
    fields=_HOST_KEY + _fields(INT, ['TRUN', 'TSLPI', 'TSLPU'], feature=True) + (
        Field('POLI', STR, feature=True),
        Field('NICE', INT, feature=True),
        Field('PRI', INT, feature=True),
        Field('RTPR', INT, feature=True),
        Field('CPUNR', INT, feature=True),
        Field('Status', STR, feature=True),
        Field('EXC', INT, feature=True),
        Field('State', STR, feature=True),
        Field('CPU', FLOAT, feature=True),
        Field('CMD', STR, required=True, feature=True),
        Field('ts', INT, required=True),
        Field('attack', INT),
    ),
    derived=(Field('CMD_PID', STR),),
    **_HOST,
)

MEMORY = RecordSchema(
    stream='memory',
    default_topic='memory_activity',
    fields=_HOST_KEY + _fields(INT, ['MINFLT', 'MAJFLT', 'VSTEXT'], feature=True) +
    _fields(FLOAT, ['VSIZE', 'RSIZE', 'VGROW', 'RGROW', 'MEM'], feature=True) + (
        Field('CMD', STR, required=True, feature=True),
        Field('ts', INT, required=True),
        Field('attack', INT),
    ),
    derived=(Field('CMD_PID', STR),),
    **_HOST,
)

SCHEMAS: dict[str, RecordSchema] = {s.stream: s for s in (NETWORK, PROCESS, MEMORY)}
# The Kafka topic the stream job publishes alerts to, unless told otherwise.
ALERTS_TOPIC = 'alerts'
# ... and incidents (alerts grouped: transforms/incidents.py).
INCIDENTS_TOPIC = 'incidents'
STREAMS: tuple[str, ...] = tuple(SCHEMAS)
# The streams joined with each other (host attacks need both).
HOST_STREAMS = tuple(s.stream for s in SCHEMAS.values() if s.joined)
