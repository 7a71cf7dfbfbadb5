"""The peer of the stream job: the original design's PySpark Structured Streaming job, for
``benchmarks/peer.py`` (not part of the product; it runs in the peer venv that peer.py makes).

    .cache/peer/venv/bin/python -m benchmarks.peer_spark_job --bootstrap_servers HOST:PORT \\
        --topic TOPIC --model_dir models --output DIR --jars a.jar,b.jar

Kafka source (earliest offsets, ``maxOffsetsPerTrigger``) -> ``from_json`` with the network
record schema of ``schemas/records.py`` -> the enrichment the product archives (site, event
time, processing time) -> ``mapInPandas`` scoring with the newest network model of the
registry, loaded by the product's verified loader (``model.registry.load_for_serving``: signed
manifest, checksum, trusted types, the same ONNX compilation) -> Parquet files under
``DIR/archive/network`` (the product's archive columns, less its own ``record_id``), trigger
``availableNow``, ``local[2]``. It has no dead-letter output: a record whose required fields
do not parse is written with null prediction, and peer.py's row-for-row comparison shows it.
Prints one ``PEER {json}`` line when the query has finished.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from schemas.outputs import ARCHIVE_SCHEMAS
from schemas.records import FLOAT, INT, SCHEMAS

STREAM = 'network'
SCHEMA = SCHEMAS[STREAM]
_SPARK_TYPES = {INT: T.LongType(), FLOAT: T.DoubleType(), 'str': T.StringType()}
# The product's own id of a record (transforms/ids.py) has no counterpart in the original design.
_LEFT_OUT = ('record_id',)


def input_schema() -> T.StructType:
  """The message's JSON fields as ``schemas.records`` defines them."""
  return T.StructType([T.StructField(f.name, _SPARK_TYPES[f.kind]) for f in SCHEMA.fields])


def _spark_type(arrow_type: pa.DataType) -> T.DataType:
  if pa.types.is_int64(arrow_type):
    return T.LongType()
  if pa.types.is_float64(arrow_type):
    return T.DoubleType()
  if pa.types.is_string(arrow_type):
    return T.StringType()
  if pa.types.is_timestamp(arrow_type):
    return T.TimestampType()
  raise TypeError(f'no Spark type for {arrow_type}')


def output_schema() -> T.StructType:
  """The product's archive schema (``schemas.outputs``), less what only the product has."""
  return T.StructType([T.StructField(f.name, _spark_type(f.type))
                       for f in ARCHIVE_SCHEMAS[STREAM] if f.name not in _LEFT_OUT])


_MODELS: dict = {}


def serving_model(model_dir: str):
  """The registry's newest network model, verified and compiled once per Python worker (Spark
  reuses its workers from task to task, as Beam reuses the product's)."""
  # pylint: disable=import-outside-toplevel
  from model import registry
  from transforms.inference import _one_native_thread_per_worker
  _one_native_thread_per_worker()
  if model_dir not in _MODELS:
    _MODELS[model_dir] = registry.load_for_serving(model_dir, STREAM)
  return _MODELS[model_dir]


def make_scorer(model_dir: str):
  """The mapInPandas function."""
  def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    # pylint: disable=import-outside-toplevel
    # Imported in the Python worker, by name: the driver runs this file as __main__, and a
    # function of __main__ travels by value, with a fresh copy of its globals every task.
    from benchmarks import peer_spark_job
    from model.features import frame_from_columns
    loaded = peer_spark_job.serving_model(model_dir)
    threshold = getattr(loaded.estimator, 'threshold', None)
    required = [f.name for f in SCHEMA.fields if f.required]
    for frame in batches:
      usable = frame[required].notna().all(axis=1).to_numpy()
      prediction = pd.Series(pd.NA, index=frame.index, dtype='Int64')
      score = pd.Series(np.nan, index=frame.index, dtype='float64')
      if usable.any():
        part = frame[usable].reset_index(drop=True)
        features = frame_from_columns(SCHEMA, part)
        scores = np.asarray(loaded.estimator.predict_proba(features)[:, 1], dtype='float64')
        if threshold is None:
          predicted = np.asarray(loaded.estimator.predict(features), dtype='int64')
        else:
          predicted = (scores >= threshold).astype('int64')
        prediction[usable] = predicted
        score[usable] = scores
      yield frame.assign(prediction=prediction, score=score, model_version=loaded.version)
  return score


def build_query(spark: SparkSession, args):
  raw = (spark.readStream.format('kafka')
         .option('kafka.bootstrap.servers', args.bootstrap_servers)
         .option('subscribe', args.topic)
         .option('startingOffsets', 'earliest')
         .option('failOnDataLoss', 'true')
         .option('maxOffsetsPerTrigger', args.max_offsets_per_trigger)
         .load())
  parsed = raw.select(F.from_json(F.col('value').cast('string'), input_schema()).alias('r'),
                      F.col('timestamp').alias('kafka_timestamp'))
  enriched = parsed.select(
      'r.*',
      F.coalesce(F.try_to_timestamp(F.col('r.utc')), F.col('kafka_timestamp')).alias('event_time'),
      F.current_timestamp().alias('processing_time'))
  enriched = enriched.withColumn('site', F.coalesce(F.col('site'), F.lit(args.site)))
  columns = [f.name for f in output_schema() if f.name not in ('prediction', 'score',
                                                               'model_version')]
  scored = enriched.select(*columns).mapInPandas(make_scorer(args.model_dir), output_schema())
  return (scored.writeStream.format('parquet')
          .option('path', os.path.join(args.output, 'archive', STREAM))
          .option('checkpointLocation', os.path.join(args.output, 'checkpoint'))
          .trigger(availableNow=True)
          .start())


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--bootstrap_servers', required=True)
  parser.add_argument('--topic', required=True)
  parser.add_argument('--model_dir', required=True)
  parser.add_argument('--output', required=True)
  parser.add_argument('--jars', default='', help='Comma-separated: the Kafka source and its '
                      'dependencies (peer.py fetches them with Maven).')
  parser.add_argument('--master', default='local[2]')
  parser.add_argument('--max_offsets_per_trigger', type=int, default=50_000)
  parser.add_argument('--site', default='local')
  parser.add_argument('--driver_memory', default='2g')
  args = parser.parse_args(argv)
  started = time.monotonic()
  spark = (SparkSession.builder.master(args.master).appName('peer-structured-streaming')
           .config('spark.jars', args.jars)
           .config('spark.driver.memory', args.driver_memory)
           .config('spark.sql.session.timeZone', 'UTC')
           .config('spark.sql.shuffle.partitions', '2')
           .config('spark.sql.parquet.outputTimestampType', 'TIMESTAMP_MICROS')
           .config('spark.ui.enabled', 'false')
           .config('spark.ui.showConsoleProgress', 'false')
           .getOrCreate())
  spark.sparkContext.setLogLevel('WARN')
  query = build_query(spark, args)
  query.awaitTermination()
  progress = query.recentProgress
  rows = sum(p.get('numInputRows', 0) for p in (json.loads(p.json) for p in progress))
  print('PEER ' + json.dumps({
      'input_rows': rows, 'micro_batches': len(progress), 'seconds': time.monotonic() - started,
      'spark': spark.version}), flush=True)
  spark.stop()


if __name__ == '__main__':
  main()
