"""Output rows and their Parquet schemas, derived from the input schemas in :mod:`schemas.records`
(folder names and file naming: :mod:`schemas.layout`).

| folder                | rows                                                                     |
| archive/<stream>/     | a cleaned input record + enrichment + prediction (ARCHIVE_SCHEMAS)       |
| attacks/              | a joined (process, memory) pair, fields prefixed Process_ / Memory_     |
| alerts/               | a network anomaly, a volume anomaly or a host attack event               |
| incidents/            | a state of an incident (alerts grouped): opened, updated or closed      |
| dead_letter/          | anything that could not be processed, with its raw payload              |
"""

from __future__ import annotations

import pyarrow as pa

from schemas.layout import ALERTS, ARCHIVE_FOLDERS, ATTACKS, DEAD_LETTERS, INCIDENTS
from schemas.records import FLOAT, INT, SCHEMAS, RecordSchema

_ARROW_TYPES = {INT: pa.int64(), FLOAT: pa.float64(), 'str': pa.string()}
TIMESTAMP = pa.timestamp('us', tz='UTC')

# Added to every archived record by Enrich and RunInference. A field already in the input
# schema (network records carry their own uuid and site) keeps its input position. ``uuid`` is
# the producer's (or derived when it sent none); ``record_id`` is the product's own id of the
# record, distinct for distinct records whatever uuid they claim (transforms/ids.py): dedupe
# by it.
ENRICHMENT_FIELDS = (
    pa.field('uuid', pa.string()),
    pa.field('record_id', pa.string()),
    pa.field('site', pa.string()),
    pa.field('event_time', TIMESTAMP),
    pa.field('processing_time', TIMESTAMP),
)
PREDICTION_FIELDS = (
    pa.field('prediction', pa.int64()),
    pa.field('score', pa.float64()),
    pa.field('model_version', pa.string()),
)


def archive_schema(schema: RecordSchema) -> pa.Schema:
  """The Parquet schema of archive/<stream>/: input fields, derived, enrichment, prediction."""
  fields = [pa.field(f.name, _ARROW_TYPES[f.kind]) for f in schema.fields + schema.derived]
  names = {f.name for f in fields}
  fields += [f for f in ENRICHMENT_FIELDS if f.name not in names]
  fields += PREDICTION_FIELDS
  return pa.schema(fields)


ARCHIVE_SCHEMAS: dict[str, pa.Schema] = {
    stream: archive_schema(schema) for stream, schema in SCHEMAS.items()}


def _prefixed(prefix: str, schema: pa.Schema) -> list[pa.Field]:
  return [f.with_name(prefix + f.name) for f in schema]


ATTACK_SCHEMA = pa.schema(
    _prefixed('Process_', ARCHIVE_SCHEMAS['process']) +
    _prefixed('Memory_', ARCHIVE_SCHEMAS['memory']) + [
        pa.field('delta_time', pa.float64()),  # memory ts - process ts, seconds
        pa.field('processing_time', TIMESTAMP),
        pa.field('event_id', pa.string()),
    ])

# network_anomaly: one network record the model flags; host_attack: a joined (process, memory)
# pair; volume_anomaly: a surge of connections in one short event-time window
# (transforms/volume.py).
ALERT_KINDS = ('network_anomaly', 'host_attack', 'volume_anomaly')
ALERT_SCHEMA = pa.schema([
    pa.field('event_id', pa.string()),
    pa.field('kind', pa.string()),
    pa.field('event_time', TIMESTAMP),
    pa.field('processing_time', TIMESTAMP),
    pa.field('site', pa.string()),
    pa.field('score', pa.float64()),
    pa.field('model_version', pa.string()),
    # What an analyst reads first; the rest of the record is in `details` (JSON).
    pa.field('machine', pa.int64()),
    pa.field('program', pa.string()),
    pa.field('service', pa.string()),
    pa.field('protocol_type', pa.string()),
    pa.field('details', pa.string()),
    # Added by issue 14 (older files lack them: null). The connection flag (network and
    # volume alerts), and why: JSON, a list of {feature, value, normal_low, normal_high,
    # normal, deviation}, the features furthest from the model's normal profile (a volume
    # alert: its count against the recent baseline).
    pa.field('flag', pa.string()),
    pa.field('reasons', pa.string()),
])

INCIDENT_STATUSES = ('open', 'updated', 'closed')
# One row per state of an incident (transforms/incidents.py): its opening, bounded updates
# while it is open, its closing. (incident_id, update_seq) identifies a row; a replay of the
# same alerts writes the same rows.
INCIDENT_SCHEMA = pa.schema([
    pa.field('incident_id', pa.string()),
    pa.field('update_seq', pa.int64()),
    pa.field('status', pa.string()),
    pa.field('kind', pa.string()),  # the kind of its alerts
    pa.field('group_key', pa.string()),  # what its alerts share, as text
    pa.field('site', pa.string()),
    pa.field('service', pa.string()),
    pa.field('flag', pa.string()),
    pa.field('protocol_type', pa.string()),
    pa.field('machine', pa.int64()),
    pa.field('program', pa.string()),
    pa.field('first_seen', TIMESTAMP),
    pa.field('last_seen', TIMESTAMP),
    pa.field('count', pa.int64()),  # alerts in it so far
    pa.field('max_score', pa.float64()),
    pa.field('severity', pa.string()),  # low, medium, high
    pa.field('top_features', pa.string()),  # JSON: [{feature, alerts}], most frequent first
    pa.field('reasons', pa.string()),  # JSON: the reasons of its highest-scored alert
    pa.field('first_alert_id', pa.string()),
    pa.field('last_alert_id', pa.string()),
    pa.field('processing_time', TIMESTAMP),
])

DEAD_LETTER_SCHEMA = pa.schema([
    pa.field('stream', pa.string()),
    pa.field('source', pa.string()),  # topic name, or file path in file mode
    pa.field('partition', pa.int64()),
    pa.field('offset', pa.int64()),
    pa.field('record_index', pa.int64()),  # position inside a host JSON array, else null
    pa.field('stage', pa.string()),
    pa.field('error', pa.string()),
    pa.field('payload', pa.binary()),
    pa.field('failed_at', TIMESTAMP),
])

OUTPUT_SCHEMAS: dict[str, pa.Schema] = {
    **{ARCHIVE_FOLDERS[stream]: s for stream, s in ARCHIVE_SCHEMAS.items()},
    ATTACKS: ATTACK_SCHEMA,
    ALERTS: ALERT_SCHEMA,
    INCIDENTS: INCIDENT_SCHEMA,
    DEAD_LETTERS: DEAD_LETTER_SCHEMA,
}
