"""Progress of a running job, seen from outside it: what is in Kafka and what is on disk.

    python -m pipelines.monitor --output output --bootstrap_servers 127.0.0.1:9092 --every 5
    python -m pipelines.monitor --output output --once        # one line and the latency summary

Each line: messages in the input topics, alerts published, and rows in each Parquet output.
``--once`` adds the end-to-end latency of alerts (alert made - event time; percentiles), the
figure a security analyst cares about.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems

from pipelines import storage
from schemas.layout import ALERTS, FOLDERS, finished_files, output_folder
from schemas.records import ALERTS_TOPIC, SCHEMAS


def output_files(output: str, folder: str) -> list[str]:
  """The finished Parquet files of an output folder (any Beam file system)."""
  try:
    return [m.path for m in finished_files(output_folder(output, folder))]
  except Exception:  # pylint: disable=broad-except
    return []  # a file system that cannot list it: nothing to count


def parquet_rows(output: str, folder: str) -> int:
  """Rows in the finished files of an output folder (from footers only: cheap)."""
  total = 0
  for path in output_files(output, folder):
    try:
      with FileSystems.open(path, mime_type='application/octet-stream') as handle:
        total += pq.ParquetFile(handle).metadata.num_rows
    except Exception:  # pylint: disable=broad-except
      pass  # being replaced by a rename this instant
  return total


def topic_messages(bootstrap: str, topics: list[str]) -> dict[str, int]:
  """Messages in each topic (high minus low watermark over its partitions)."""
  from confluent_kafka import Consumer, TopicPartition  # pylint: disable=import-outside-toplevel
  consumer = Consumer({'bootstrap.servers': bootstrap, 'group.id': 'pipelines-monitor',
                       'enable.auto.commit': False})
  try:
    counts = {}
    metadata = consumer.list_topics(timeout=5)
    for topic in topics:
      partitions = metadata.topics.get(topic)
      total = 0
      for partition in (partitions.partitions if partitions else {}):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)
        total += high - low
      counts[topic] = total
    return counts
  finally:
    consumer.close()


def alert_latency(output: str) -> Optional[dict[str, float]]:
  """Percentiles of (processing_time - event_time) over the alerts written, in seconds."""
  tables = []
  for path in output_files(output, ALERTS):
    with FileSystems.open(path, mime_type='application/octet-stream') as handle:
      tables.append(pq.read_table(handle, columns=['event_time', 'processing_time']))
  if not tables or sum(t.num_rows for t in tables) == 0:
    return None
  frame = pa.concat_tables(tables).to_pandas()
  seconds = (frame['processing_time'] - frame['event_time']).dt.total_seconds()
  return {f'p{q}': float(seconds.quantile(q / 100)) for q in (50, 95, 99)}


def status_line(output: str, bootstrap: Optional[str], input_topics: list[str],
                alerts_topic: str) -> str:
  parts = []
  if bootstrap:
    try:
      counts = topic_messages(bootstrap, input_topics + [alerts_topic])
      parts.append(f'kafka in={sum(counts[t] for t in input_topics)} '
                   f'alerts={counts[alerts_topic]}')
    except Exception as e:  # pylint: disable=broad-except
      parts.append(f'kafka unavailable ({type(e).__name__})')
  rows = {folder: parquet_rows(output, folder) for folder in FOLDERS}
  parts.append(' '.join(f'{folder}={count}' for folder, count in rows.items()))
  return time.strftime('%H:%M:%S ') + ' | '.join(parts)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog='python -m pipelines.monitor', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--output', default='output',
                      help='the job\'s --output: local, s3://... or gs://... (default: output)')
  parser.add_argument('--bootstrap_servers', default=None,
                      help='Kafka to count topic messages in (default: none)')
  parser.add_argument('--input_topics', default=','.join(s.default_topic for s in SCHEMAS.values()),
                      help='comma-separated input topics (default: %(default)s)')
  parser.add_argument('--alerts_topic', default=ALERTS_TOPIC, help='(default: %(default)s)')
  parser.add_argument('--every', type=float, default=5.0, help='seconds between lines')
  parser.add_argument('--once', action='store_true', help='print one line and the latency')
  storage.add_arguments(parser)
  args = parser.parse_args(argv)
  storage.configure(storage.options_from_args(args))
  topics = [t for t in args.input_topics.split(',') if t]
  while True:
    print(status_line(args.output, args.bootstrap_servers, topics, args.alerts_topic),
          flush=True)
    if args.once:
      latency = alert_latency(args.output)
      if latency:
        print('alert latency (alert made - event time): ' +
              ', '.join(f'{k} {v:.2f} s' for k, v in latency.items()))
      return 0
    time.sleep(args.every)


if __name__ == '__main__':
  sys.exit(main())
