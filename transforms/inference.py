"""RunInference with a scikit-learn ModelHandler that serves the registry's newest model.

The handler loads the newest published version of its detector at start and checks the
registry every ``refresh_seconds`` while running; a newer version is loaded (sha256 verified)
and swapped in between batches, so a retrain reaches the stream without a restart. This works
the same on every runner, unlike a side-input model watcher (see RUNTIME_NOTES.md).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Iterable, Optional, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, RunInference
from apache_beam.transforms.window import TimestampedValue

from model import registry
from model.features import frame_from_records
from schemas.records import RecordSchema
from transforms.dead_letter import DEAD_LETTER, DeadLetterCounter, utc_now

INFERENCE_STAGE = 'inference'
log = logging.getLogger(__name__)


class LiveModel:
  """The model a worker process serves, replaced in place when a newer version appears."""

  def __init__(self, model_dir: str, detector: str, refresh_seconds: float):
    self._model_dir = model_dir
    self._detector = detector
    self._refresh_seconds = refresh_seconds
    self._lock = threading.Lock()
    self._refused: set[str] = set()  # versions that failed to load: not retried every poll
    self.current: registry.LoadedModel = registry.load(model_dir, detector)
    self._checked_at = time.monotonic()

  def get(self) -> registry.LoadedModel:
    if self._refresh_seconds > 0 and time.monotonic() - self._checked_at >= self._refresh_seconds:
      self._refresh()
    return self.current

  def _refresh(self) -> None:
    # One thread checks; the others keep scoring with the current model meanwhile.
    if not self._lock.acquire(blocking=False):
      return
    try:
      self._checked_at = time.monotonic()
      newest = registry.latest_version(self._model_dir, self._detector)
      if newest and newest > self.current.version and newest not in self._refused:
        try:
          self.current = registry.load(self._model_dir, self._detector, newest)
          log.info('%s detector now serves model %s', self._detector, newest)
        except Exception:  # pylint: disable=broad-except
          # A bad new version must not stop scoring: keep the current one and say why.
          self._refused.add(newest)
          log.exception('could not load %s model %s; still serving %s',
                        self._detector, newest, self.current.version)
    finally:
      self._lock.release()


class RegistryModelHandler(ModelHandler[dict, dict, LiveModel]):
  """Scores batches of cleaned record dicts; each output dict gains prediction, score and
  model_version."""

  def __init__(self, schema: RecordSchema, model_dir: str, refresh_seconds: float = 10.0,
               max_batch_size: int = 2000):
    super().__init__()
    self._schema = schema
    self._model_dir = model_dir
    self._refresh_seconds = refresh_seconds
    # Batches end with the runner's bundle (Flink closes one at least every second), so no
    # max_batch_duration_secs: its stateful batching would add a shuffle and timers.
    self._batching = {'max_batch_size': max_batch_size}

  def load_model(self) -> LiveModel:
    return LiveModel(self._model_dir, self._schema.stream, self._refresh_seconds)

  def run_inference(self, batch: Sequence[dict], model: LiveModel,
                    inference_args: Optional[dict[str, Any]] = None) -> Iterable[dict]:
    loaded = model.get()
    frame = frame_from_records(self._schema, batch)
    scores = loaded.estimator.predict_proba(frame)[:, 1]
    threshold = getattr(loaded.estimator, 'threshold', None)
    if threshold is None:
      predictions = loaded.estimator.predict(frame)
    else:
      predictions = scores >= threshold  # the same rule as predict(), without scoring twice
    version = loaded.version
    return [
        {**record, 'prediction': int(p), 'score': float(s), 'model_version': version}
        for record, s, p in zip(batch, np.asarray(scores), np.asarray(predictions))]

  def batch_elements_kwargs(self):
    return self._batching

  def get_metrics_namespace(self) -> str:
    return f'RunInference_{self._schema.stream}'


def _failed_batch_to_dead_letters(stream: str, counter: DeadLetterCounter):
  def to_rows(failed):
    batch, error = failed
    for example in batch:
      record = example[1] if isinstance(example, tuple) else example
      counter.inc(stream)
      yield {
          'stream': stream, 'source': 'inference', 'partition': -1, 'offset': -1,
          'record_index': None, 'stage': INFERENCE_STAGE,
          'error': f'{type(error).__name__}: {error}'[:500],
          'payload': json.dumps(record, default=str).encode('utf-8'),
          'failed_at': utc_now(),
      }
  return to_rows


def _restamp(record):
  return TimestampedValue(record, record['event_time'].timestamp())


def _restamp_keyed(keyed_record):
  return TimestampedValue(keyed_record, keyed_record[1]['event_time'].timestamp())


class Score(beam.PTransform):
  """Enriched records of one stream -> scored records (``result.records``), plus
  ``DEAD_LETTER`` for batches the model could not score. Host streams stay keyed."""

  def __init__(self, schema: RecordSchema, model_dir: str, refresh_seconds: float = 10.0):
    super().__init__(label=f'Score[{schema.stream}]')
    self._schema = schema
    self._handler = RegistryModelHandler(schema, model_dir, refresh_seconds)

  def expand(self, records):
    keyed = self._schema.stream != 'network'
    handler = KeyedModelHandler(self._handler) if keyed else self._handler
    scored, failed = records | RunInference(handler).with_exception_handling()
    # RunInference batches without keeping each element's timestamp (a batch flushed at the
    # end of a bundle is stamped at the end of the global window): put event time back.
    restamp = _restamp_keyed if keyed else _restamp
    scored = scored | 'RestoreEventTime' >> beam.Map(restamp)
    dead = failed.failed_inferences | 'FailedBatchToDeadLetters' >> beam.FlatMap(
        _failed_batch_to_dead_letters(self._schema.stream, DeadLetterCounter('Score')))
    return {'records': scored, DEAD_LETTER: dead}
