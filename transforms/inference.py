"""RunInference with a scikit-learn ModelHandler that serves the registry's newest model.

The handler loads the newest published version of its detector at start and checks the
registry every ``refresh_seconds`` while running; a newer version is loaded (sha256 verified)
and swapped in between batches, so a retrain reaches the stream without a restart. This works
the same on every runner, unlike a side-input model watcher (see RUNTIME_NOTES.md).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Iterable, Optional, Sequence

import apache_beam as beam
import numpy as np
import threadpoolctl
from apache_beam.ml.inference.base import ModelHandler, RunInference

from model import registry
from model.features import frame_from_columns
from schemas.records import RecordSchema
from transforms.batch import RecordBatch
from transforms.dead_letter import DEAD_LETTER, batch_record_dead_letter, dead_letter_counter

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
    self.current: registry.LoadedModel = registry.load_for_serving(model_dir, detector)
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
          self.current = registry.load_for_serving(self._model_dir, self._detector, newest)
          log.info('%s detector now serves model %s', self._detector, newest)
        except Exception:  # pylint: disable=broad-except
          # A bad new version must not stop scoring: keep the current one and say why.
          self._refused.add(newest)
          log.exception('could not load %s model %s; still serving %s',
                        self._detector, newest, self.current.version)
    finally:
      self._lock.release()


_limited_threads = threading.local()


def _one_native_thread_per_worker() -> None:
  """Limits OpenMP and BLAS (HistGradientBoosting's predict, numpy) to one thread.

  The runner already runs a worker per core; a model that also starts a thread per core
  oversubscribes them, and OpenMP's spinning threads then make scoring up to 70 times slower
  on a busy 2-core machine (1,450 vs 20 microseconds a record, benchmarks/stages.py). OpenMP
  keeps the setting per calling thread, and Beam runs bundles on a pool of threads: so once
  per thread.
  """
  if not getattr(_limited_threads, 'done', False):
    threadpoolctl.threadpool_limits(limits=1)
    _limited_threads.done = True


def score_batch(schema: RecordSchema, loaded: registry.LoadedModel,
                batch: RecordBatch) -> RecordBatch:
  """``batch`` with prediction (0/1), score and model_version columns, from one model call."""
  _one_native_thread_per_worker()
  frame = frame_from_columns(schema, batch.columns)
  scores = loaded.estimator.predict_proba(frame)[:, 1]
  threshold = getattr(loaded.estimator, 'threshold', None)
  if threshold is None:
    predictions = loaded.estimator.predict(frame)
  else:
    predictions = scores >= threshold  # the same rule as predict(), without scoring twice
  return batch.with_columns(
      prediction=np.asarray(predictions, dtype=np.int64).tolist(),
      score=np.asarray(scores, dtype=np.float64).tolist(),
      model_version=[loaded.version] * len(batch))


class RegistryModelHandler(ModelHandler[RecordBatch, RecordBatch, LiveModel]):
  """Scores RecordBatches with the registry's newest model of their stream.

  Each element is already a batch of records (ParseAndClean batches them), so RunInference
  passes them on one at a time and each is one model call.
  """

  def __init__(self, schema: RecordSchema, model_dir: str, refresh_seconds: float = 10.0):
    super().__init__()
    self._schema = schema
    self._model_dir = model_dir
    self._refresh_seconds = refresh_seconds

  def load_model(self) -> LiveModel:
    return LiveModel(self._model_dir, self._schema.stream, self._refresh_seconds)

  def run_inference(self, batch: Sequence[RecordBatch], model: LiveModel,
                    inference_args: Optional[dict[str, Any]] = None) -> Iterable[RecordBatch]:
    loaded = model.get()
    return [score_batch(self._schema, loaded, records) for records in batch]

  def batch_elements_kwargs(self):
    return {'min_batch_size': 1, 'max_batch_size': 1}

  def get_num_bytes(self, batch: Sequence[RecordBatch]) -> int:
    # For RunInference's byte metrics; the default pickles every batch to measure it.
    return sum(len(m.value or b'') for records in batch for m in records.messages)

  def get_metrics_namespace(self) -> str:
    return f'RunInference_{self._schema.stream}'


def _failed_batch_to_dead_letters(stream: str):
  counter = dead_letter_counter('Score', stream)

  def to_rows(failed):
    batches, error = failed
    for records in batches:
      counter.inc(len(records))
      for position in range(len(records)):
        yield batch_record_dead_letter(records, position, INFERENCE_STAGE, error)
  return to_rows


class Score(beam.PTransform):
  """Enriched RecordBatches of one stream -> scored RecordBatches (``result['records']``),
  plus ``DEAD_LETTER`` rows for the records of a batch the model could not score."""

  def __init__(self, schema: RecordSchema, model_dir: str, refresh_seconds: float = 10.0):
    super().__init__(label=f'Score[{schema.stream}]')
    self._schema = schema
    self._handler = RegistryModelHandler(schema, model_dir, refresh_seconds)

  def expand(self, records):
    scored, failed = records | RunInference(self._handler).with_exception_handling()
    # RunInference declares no output type, so its results would get the generic coder,
    # which measures sampled batches by pickling them (see RecordBatchCoder).
    scored.element_type = RecordBatch
    dead = failed.failed_inferences | 'FailedBatchToDeadLetters' >> beam.FlatMap(
        _failed_batch_to_dead_letters(self._schema.stream))
    return {'records': scored, DEAD_LETTER: dead}
