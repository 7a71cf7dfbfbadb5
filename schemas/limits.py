"""What one message, record or batch may cost the stream job: every bound in one place.

A hostile or broken producer controls the bytes of its messages; none of them may stop, stall
or bloat the job. Each bound below turns what is over it into a dead letter (never an error),
except the batch bounds, which only cut batches short.

| bound                        | value   | over it                                                  |
| ---------------------------- | ------- | -------------------------------------------------------- |
| ``MAX_MESSAGE_BYTES``        | 1 MiB   | the message is a dead letter (stage ``parse``)           |
| ``MAX_RECORDS_PER_MESSAGE``  | 10,000  | the whole host array is one dead letter (stage ``parse``)|
| ``MAX_BATCH_BYTES``          | 8 MiB   | BatchByStream closes the batch                           |
| ``MAX_BATCH_RECORDS``        | 10,000  | ParseAndClean closes the batch (host arrays add up)      |
| ``MAX_NUMBER_LENGTH``        | 64      | the numeric string is refused (stage ``clean``)          |
| ``MAX_STRING_LENGTH``        | 4,096   | the string field is refused (stage ``clean``)            |
| ``MAX_ABS_VALUE``            | 2**62   | the number is refused (stage ``clean``)                  |
| ``MAX_ERROR_LENGTH``         | 500     | a dead letter's error text is cut                        |
| ``MAX_AVRO_SCHEMA_BYTES``    | 256 KiB | the writer schema is refused: its messages dead letters  |
| ``MAX_AVRO_SCHEMA_DEPTH``    | 32      | the same (nesting of the writer schema's types)          |
| ``MAX_CACHED_AVRO_SCHEMAS``  | 1,000   | the least recently used writer schema is forgotten       |

Avro writer schemas (transforms/avro_decode.py) are refused too when a type refers to itself
(data nested as deep as the message is long) or when an array's items can take no bytes (a
count of 2**62 items in a few bytes): with neither, decoding costs at most a step per byte.

Event time is bounded relative to the processing time (stage ``enrich`` dead-letters what lies
outside; flags ``--max_event_age_s`` and ``--max_event_lead_s`` of the stream job, 0 turns a
bound off): ``DEFAULT_MAX_EVENT_AGE_S`` is 7 days, Kafka's default retention, so a job that
resumes within a topic's retention archives everything it reads; ``DEFAULT_MAX_EVENT_LEAD_S``
is 5 minutes of producer clock skew. Together they bound the ``dt=`` folders one roll can
create to about nine, however far apart a message's times are.
"""

from __future__ import annotations

MAX_MESSAGE_BYTES = 1 << 20
MAX_RECORDS_PER_MESSAGE = 10_000
MAX_BATCH_BYTES = 8 << 20
# A batch of host messages holds their records; a bundle's memory is bounded by this many
# records (plus one message's) per batch, dead letters included.
MAX_BATCH_RECORDS = 10_000
# The longest plausible numeral is 25 characters ("-1.7976931348623157e+308"); past this,
# a string is not a number but a payload meant to cost CPU.
MAX_NUMBER_LENGTH = 64
MAX_STRING_LENGTH = 4096
# Larger magnitudes are corrupt input, and int64 Parquet columns cannot hold them anyway.
MAX_ABS_VALUE = 2.0**62
# Long enough to debug, short enough that a hostile 1 MB message cannot bloat every row twice.
MAX_ERROR_LENGTH = 500
# Writer schemas of Avro messages, from a schema registry or a file. The streams' own schemas
# (schemas/avro.py) are a few KiB and three levels deep.
MAX_AVRO_SCHEMA_BYTES = 256 << 10
MAX_AVRO_SCHEMA_DEPTH = 32
# Per stream and worker: a producer sending random schema ids must not grow the cache.
MAX_CACHED_AVRO_SCHEMAS = 1000

DEFAULT_MAX_EVENT_AGE_S = 7 * 24 * 3600
DEFAULT_MAX_EVENT_LEAD_S = 5 * 60
