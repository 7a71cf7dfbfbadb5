"""A model version published while the stream runs is picked up without a restart, and every
scored row names the version that scored it (TestStream on the DirectRunner)."""

import datetime
import os
import shutil

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that
from apache_beam.transforms.window import TimestampedValue

from model import registry
from schemas.records import NETWORK
from tests.factories import BASE_TS, message, network_record
from transforms.batch import RecordBatch
from transforms.enrich import UNBOUNDED, Enrich
from transforms.inference import MODELS_REFUSED, Score
from transforms.parse import ParseAndClean

PUBLISH_MARKER = b'publish-v2'


class PublishOnMarker(beam.DoFn):
  """Stands in for the retrain job: publishes a new version when the marker passes by."""

  def __init__(self, model_dir):
    self._model_dir = model_dir

  def process(self, element):
    if PUBLISH_MARKER in element.value:
      current = registry.load(self._model_dir, 'network')
      registry.publish(self._model_dir, 'network', current.estimator,
                       feature_columns=current.manifest['feature_columns'], training_rows=1)
    yield element


def _timed(indices, **overrides):
  return [TimestampedValue(message('network', network_record(i, **overrides), offset=i),
                           BASE_TS + i) for i in indices]


def _records_around_a_publish() -> TestStream:
  """Records 0-9, the marker record 20 (which publishes a new version), then records 40-49."""
  return (TestStream()
          .advance_watermark_to(BASE_TS)
          .add_elements(_timed(range(0, 10)))
          .advance_watermark_to(BASE_TS + 20)
          .add_elements(_timed([20], uuid=PUBLISH_MARKER.decode()))
          .advance_watermark_to(BASE_TS + 30)
          .add_elements(_timed(range(40, 50)))
          .advance_watermark_to_infinity())


def test_rows_after_a_publish_carry_the_new_version(model_dir, tmp_path):
  models = str(tmp_path / 'models')
  shutil.copytree(model_dir, models)
  v1 = registry.latest_version(models, 'network')

  events = _records_around_a_publish()

  def check_versions(rows):
    by_sequence = {r['sequence_id']: r['model_version'] for r in rows}
    v2 = registry.latest_version(models, 'network')
    assert v2 > v1
    assert {by_sequence[i] for i in range(0, 10)} == {v1}
    assert {by_sequence[i] for i in range(40, 50)} == {v2}

  options = PipelineOptions()
  options.view_as(StandardOptions).streaming = True
  with TestPipeline(options=options) as pipeline:
    messages = pipeline | events | beam.ParDo(PublishOnMarker(models))
    parsed = messages | ParseAndClean(NETWORK)
    enriched = parsed['network'] | Enrich(NETWORK, bounds=UNBOUNDED)  # the factories' 2023
    scored = enriched['records'] | Score(NETWORK, models, refresh_seconds=0.001)
    assert_that(scored['records'] | beam.FlatMap(RecordBatch.rows), check_versions)


def test_a_broken_newest_version_is_refused_and_a_later_good_one_served(model_dir, tmp_path):
  """Someone drops an unsigned 'newest' version into the registry before the job starts: the
  job serves the good one before it, counts the refusal, and still picks up the next publish."""
  models = str(tmp_path / 'models')
  shutil.copytree(model_dir, models)
  v1 = registry.latest_version(models, 'network')
  # Newer than v1, older than the publish during the run (v1 may be less than a second old).
  v1_time = registry.version_time(v1)
  forged = registry.new_version(
      v1_time + (datetime.datetime.now(datetime.timezone.utc) - v1_time) / 2)
  assert v1 < forged
  shutil.copytree(f'{models}/network/{v1}', f'{models}/network/{forged}')
  os.remove(f'{models}/network/{forged}/{registry.SIGNATURE_FILE}')

  events = _records_around_a_publish()

  def check_versions(rows):
    by_sequence = {r['sequence_id']: r['model_version'] for r in rows}
    v2 = registry.latest_version(models, 'network')
    assert registry.version_time(v2) > registry.version_time(forged)
    assert {by_sequence[i] for i in range(0, 10)} == {v1}
    assert {by_sequence[i] for i in range(40, 50)} == {v2}
    assert forged not in by_sequence.values()

  options = PipelineOptions()
  options.view_as(StandardOptions).streaming = True
  pipeline = TestPipeline(options=options)
  messages = pipeline | events | beam.ParDo(PublishOnMarker(models))
  parsed = messages | ParseAndClean(NETWORK)
  enriched = parsed['network'] | Enrich(NETWORK, bounds=UNBOUNDED)
  scored = enriched['records'] | Score(NETWORK, models, refresh_seconds=0.001)
  assert_that(scored['records'] | beam.FlatMap(RecordBatch.rows), check_versions)
  result = pipeline.run()
  result.wait_until_finish()
  refused = result.metrics().query(MetricsFilter().with_name(MODELS_REFUSED))['counters']
  assert sum(c.committed for c in refused) == 1
