"""The bare baseline: one Python process, no Beam. confluent-kafka reads a topic from its
beginning, and batches of ~1000 messages go through the product's own Beam-free functions
(parse, enrich, score with the registry's model) into rolled Parquet archive files.

    python -m benchmarks.baseline --bootstrap_servers 127.0.0.1:9092 --stream network \\
        --topic sensor_messages --model_dir models --output /tmp/baseline-out

It reads until it has consumed every message that was in the topic when it started (the high
watermarks), and prints one ``BENCH {json}`` line: messages, records, dead letters, seconds
(first message received -> last file closed) and records/s. The throughput benchmark runs it
on the same pre-filled topic as the stream job (see benchmarks/throughput.py).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import uuid
from typing import Any, Sequence

BATCH = 1000


def _columnar_functions():
  """The product's Beam-free batch functions, or None while they do not exist yet."""
  try:
    from transforms import enrich, inference, parse  # pylint: disable=import-outside-toplevel
    return parse.parse_messages, enrich.enrich_batch, inference.score_batch
  except (ImportError, AttributeError):
    return None


def process_batch(stream: str, messages: Sequence[Any], loaded_model, site: str):
  """The one adapter onto the product: SourceMessages of one stream -> (archive pyarrow.Table,
  dead letters). Uses ``parse_messages`` / ``enrich_batch`` / ``score_batch`` /
  ``RecordBatch.to_arrow`` when the product has them, else the per-record functions the
  DoFns called before the columnar rewrite."""
  from schemas.outputs import ARCHIVE_SCHEMAS  # pylint: disable=import-outside-toplevel
  from schemas.records import SCHEMAS  # pylint: disable=import-outside-toplevel
  schema = SCHEMAS[stream]
  functions = _columnar_functions()
  if functions is not None:
    parse_messages, enrich_batch, score_batch = functions
    batch, dead = parse_messages(schema, messages)
    batch, dead_enrich = enrich_batch(schema, batch, site)
    batch = score_batch(schema, loaded_model, batch)
    return batch.to_arrow(ARCHIVE_SCHEMAS[stream]), len(dead) + len(dead_enrich)
  return _per_record(schema, messages, loaded_model, site, ARCHIVE_SCHEMAS[stream])


def path_name() -> str:
  return 'columnar (parse_messages/enrich_batch/score_batch)' if _columnar_functions() else \
      'per-record (clean_record/event_time/stable_uuid + predict_proba per batch)'


def _per_record(schema, messages, loaded_model, site, arrow_schema):
  # pylint: disable=import-outside-toplevel
  import numpy as np
  import pyarrow as pa

  from model.features import frame_from_records
  from transforms.cleaning import CleaningError, clean_record
  from transforms.dead_letter import utc_now
  from transforms.enrich import EnrichError, event_time, stable_uuid
  from transforms.parse import CleanRecord, decode_json
  records, dead = [], 0
  # Schemas of those versions had no payload kind; only their host records had a ts.
  array = schema.is_array if hasattr(schema, 'payload') else 'ts' in schema.names
  for message in messages:
    try:
      decoded = decode_json(message.value or b'')
    except (ValueError, RecursionError):
      dead += 1
      continue
    if array != isinstance(decoded, list):
      dead += 1
      continue
    for index, raw in (enumerate(decoded) if array else [(None, decoded)]):
      try:
        item = CleanRecord(clean_record(schema, raw), message, index)
        when = event_time(schema.stream, item)
      except (CleaningError, EnrichError):
        dead += 1
        continue
      record = dict(item.record)
      record['uuid'] = stable_uuid(schema.stream, item)
      record['site'] = record.get('site') or site
      record['event_time'] = when
      record['processing_time'] = utc_now()
      records.append(record)
  if not records:
    return pa.Table.from_pylist([], arrow_schema), dead
  estimator = loaded_model.estimator
  frame = frame_from_records(schema, records)
  scores = np.asarray(estimator.predict_proba(frame)[:, 1])
  threshold = getattr(estimator, 'threshold', None)
  predictions = estimator.predict(frame) if threshold is None else scores >= threshold
  for record, s, p in zip(records, scores, np.asarray(predictions)):
    record.update(prediction=int(p), score=float(s), model_version=loaded_model.version)
  return pa.Table.from_pylist(records, arrow_schema), dead


class RollingParquet:
  """Archive files rolled every ``roll_seconds`` (like the job's sink), written under a
  dot-name and renamed when closed."""

  def __init__(self, folder: str, schema, roll_seconds: float):
    self.folder = folder
    self.schema = schema
    self.roll_seconds = roll_seconds
    self.writer = None
    self.path = None
    self.opened = 0.0
    self.files = 0
    self.rows = 0
    os.makedirs(folder, exist_ok=True)

  def write(self, table) -> None:
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
    if table.num_rows == 0:
      return
    if self.writer is None:
      self.path = os.path.join(self.folder, f'baseline-{self.files:06d}.parquet')
      tmp = os.path.join(self.folder, f'.baseline-{self.files:06d}.parquet.inprogress')
      self.writer = pq.ParquetWriter(tmp, self.schema, compression='zstd')
      self.tmp = tmp
      self.opened = time.monotonic()
    self.writer.write_table(table)
    self.rows += table.num_rows
    if time.monotonic() - self.opened >= self.roll_seconds:
      self.close()

  def close(self) -> None:
    if self.writer is not None:
      self.writer.close()
      os.replace(self.tmp, self.path)
      self.writer = None
      self.files += 1


def run(bootstrap: str, stream: str, topic: str, model_dir: str, output: str, *,
        site: str = 'local', batch: int = BATCH, roll_seconds: float = 1.0,
        timeout_s: float = 600.0) -> dict[str, Any]:
  """Reads ``topic`` from its beginning to the high watermarks at start; returns the numbers."""
  # pylint: disable=import-outside-toplevel
  from confluent_kafka import Consumer, TopicPartition

  from model import registry
  from schemas.outputs import ARCHIVE_SCHEMAS
  from schemas.records import HOST_STREAMS
  from transforms.source import SourceMessage
  detectors = list(HOST_STREAMS) if stream == 'host' else [stream]
  streams = detectors
  topics = topic.split(',')
  by_topic = dict(zip(topics, streams))
  models = {d: registry.load_for_serving(model_dir, d) for d in detectors}
  writers = {s: RollingParquet(os.path.join(output, 'archive', s), ARCHIVE_SCHEMAS[s],
                               roll_seconds) for s in streams}
  consumer = Consumer({'bootstrap.servers': bootstrap, 'group.id': f'baseline-{uuid.uuid4().hex}',
                       'auto.offset.reset': 'earliest', 'enable.auto.commit': False,
                       'fetch.max.bytes': 52428800, 'queued.max.messages.kbytes': 262144})
  end: dict[tuple[str, int], int] = {}
  for t in topics:
    meta = consumer.list_topics(t, timeout=30).topics[t]
    for p in meta.partitions:
      low, high = consumer.get_watermark_offsets(TopicPartition(t, p), timeout=30)
      if high > low:
        end[(t, p)] = high
  expected = sum(end.values())  # offsets start at 0 in a fresh topic
  consumer.assign([TopicPartition(t, p, 0) for (t, p) in end])
  pending = {s: [] for s in streams}
  messages = records = dead = 0
  first = None
  done: set = set()
  deadline = time.monotonic() + timeout_s
  busy = 0.0
  while len(done) < len(end) and time.monotonic() < deadline:
    got = consumer.consume(num_messages=batch, timeout=0.5)
    if not got:
      continue
    if first is None:
      first = time.monotonic()
    t0 = time.monotonic()
    for m in got:
      if m.error():
        continue
      key = (m.topic(), m.partition())
      if m.offset() + 1 >= end.get(key, 0):
        done.add(key)
      s = by_topic[m.topic()]
      ts_type, ts = m.timestamp()
      pending[s].append(SourceMessage(s, m.value() or b'', m.topic(), m.partition(), m.offset(),
                                      ts if ts_type else None))
      messages += 1
    for s, msgs in pending.items():
      if len(msgs) >= batch or (msgs and len(done) == len(end)):
        table, d = process_batch(s, msgs, models[s], site)
        writers[s].write(table)
        records += table.num_rows
        dead += d
        pending[s] = []
    busy += time.monotonic() - t0
  for s, msgs in pending.items():
    if msgs:
      table, d = process_batch(s, msgs, models[s], site)
      writers[s].write(table)
      records += table.num_rows
      dead += d
  for w in writers.values():
    w.close()
  finished = time.monotonic()
  consumer.close()
  seconds = finished - first if first else None
  return {
      'stream': stream, 'topics': topics, 'path': path_name(), 'batch': batch,
      'messages_expected': expected, 'messages': messages, 'records': records,
      'dead_letters': dead, 'files': sum(w.files for w in writers.values()),
      'seconds': seconds, 'processing_seconds': busy,
      'records_per_s': records / seconds if seconds else None,
      'complete': len(done) == len(end),
      'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
  }


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--bootstrap_servers', required=True)
  parser.add_argument('--stream', choices=('network', 'process', 'memory', 'host'),
                      required=True, help='"host" reads process,memory topics (--topic a,b).')
  parser.add_argument('--topic', required=True, help='Topic (host: process_topic,memory_topic).')
  parser.add_argument('--model_dir', default='models')
  parser.add_argument('--output', required=True)
  parser.add_argument('--batch', type=int, default=BATCH)
  parser.add_argument('--roll_seconds', type=float, default=1.0)
  parser.add_argument('--timeout_s', type=float, default=600.0)
  args = parser.parse_args(argv)
  result = run(args.bootstrap_servers, args.stream, args.topic, args.model_dir, args.output,
               batch=args.batch, roll_seconds=args.roll_seconds, timeout_s=args.timeout_s)
  print('BENCH ' + json.dumps(result), flush=True)


if __name__ == '__main__':
  main()
