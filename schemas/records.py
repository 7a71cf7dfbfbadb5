"""The three input record schemas (network, process, memory), as in docs/DESIGN.md.

Each field has a type (``int``, ``float`` or ``str``), whether a record without it is unusable
(``required``), and whether it is a raw input column of the detector's model (``feature``).
Parsing casts by these types, the Parquet schemas are built from them and the model pipelines
select their columns by them.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable

INT = 'int'
FLOAT = 'float'
STR = 'str'


@dataclasses.dataclass(frozen=True)
class Field:
  name: str
  kind: str
  required: bool = False
  feature: bool = False


@dataclasses.dataclass(frozen=True)
class RecordSchema:
  """One input stream: its name, default Kafka topic and fields in message order."""
  stream: str
  default_topic: str
  fields: tuple[Field, ...]
  # Fields computed during cleaning and enrichment, after the message's own fields.
  derived: tuple[Field, ...] = ()

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(f.name for f in self.fields)

  @property
  def feature_columns(self) -> tuple[str, ...]:
    """The raw columns the detector's model takes, in a fixed order."""
    return tuple(f.name for f in self.fields + self.derived if f.feature)

  @property
  def categorical_features(self) -> tuple[str, ...]:
    return tuple(
        f.name for f in self.fields + self.derived if f.feature and f.kind == STR)

  @property
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
)

# Host records: identifiers, counters and timestamps are integers; percentages and sizes are
# decimals. machine, PID, CMD and ts are required because the join key and event time are
# made of them.
_HOST_KEY = (
    Field('sequence', INT),
    Field('machine', INT, required=True),
    Field('PID', INT, required=True),
)

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
)

SCHEMAS: dict[str, RecordSchema] = {s.stream: s for s in (NETWORK, PROCESS, MEMORY)}
HOST_STREAMS = ('process', 'memory')

# The label column a detector may learn from, when the data carries one.
LABEL_COLUMN = {'network': 'label', 'process': 'attack', 'memory': 'attack'}
