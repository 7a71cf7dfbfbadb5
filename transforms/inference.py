"""RunInference with a scikit-learn ModelHandler that serves the registry's newest model.

The handler serves the newest published version of its detector that loads and verifies
(signature, checksum, trusted types: model/registry.py), at start and while running: it
checks the registry every ``refresh_seconds``, and a newer version that verifies is loaded and
swapped in between batches, so a retrain reaches the stream without a restart. A version that
does not verify is refused once (a log line and the ``models_refused`` counter) and the one
before it keeps serving. This works the same on every runner, unlike a side-input model
watcher (see RUNTIME_NOTES.md).

Beside the model the handler serves its normal profile (model/profile.py, verified with it:
a version whose profile does not verify is refused like a bad model): the records a batch flags
get a ``reasons`` column, the few features furthest from normal traffic, computed for the
flagged rows only; the others' reasons are None, as are all of a model without a profile.

The public keys are read where the pipeline is built (``--model_public_key``, else the default
key file: model/signing.py) and travel inside the handler, so workers need no key file.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from typing import Any, Iterable, Mapping, Optional, Sequence, Union

import apache_beam as beam
import numpy as np
import threadpoolctl
from apache_beam.metrics.metric import Metrics
from apache_beam.ml.inference.base import ModelHandler, RunInference

from model import profile as normal_profile, registry, signing
from model.features import feature_arrays, frame_from_columns
from schemas.records import RecordSchema
from transforms.batch import RecordBatch
from transforms.dead_letter import (DEAD_LETTER, batch_record_dead_letter, dead_letter_counter,
                                    dead_letter_row)

INFERENCE_STAGE = 'inference'
MODELS_REFUSED = 'models_refused'
log = logging.getLogger(__name__)


class LiveModel:
  """The model a worker process serves, replaced in place when a newer version verifies."""

  def __init__(self, model_dir: str, detector: str, refresh_seconds: float,
               public_keys: signing.PublicKeys):
    self._model_dir = model_dir
    self._detector = detector
    self._refresh_seconds = refresh_seconds
    self._public_keys = public_keys
    self._lock = threading.Lock()
    self._count_lock = threading.Lock()
    # Versions that failed to load or verify: logged and counted once, never retried.
    self._refused: dict[str, Exception] = {}
    self._uncounted = 0  # refusals not yet on the counter (loading runs outside a bundle)
    # The normal profile of each loaded version (None: published without one).
    self.profiles: dict[str, Optional[normal_profile.NormalProfile]] = {}
    self.current: registry.LoadedModel = self._newest(newer_than=None) or self._none_verifies()
    self._checked_at = time.monotonic()

  def _refuse(self, version: str, error: Exception) -> None:
    if isinstance(error, registry.RegistryReadError):
      # No verdict on the version (the store did not answer): tried again at the next check.
      log.warning('could not read %s model %s: %s', self._detector, version, error)
      return
    self._refused[version] = error
    with self._count_lock:
      self._uncounted += 1
    serving = getattr(self, 'current', None)
    log.error('refusing %s model %s: %s; %s', self._detector, version, error,
              f'still serving {serving.version}' if serving else 'trying the version before it')

  def _newest(self, newer_than: Optional[str]) -> Optional[registry.LoadedModel]:
    return registry.load_newest(
        self._model_dir, self._detector, self._public_keys, newer_than=newer_than,
        skip=frozenset(self._refused), on_refused=self._refuse,
        loader=self._load_with_profile)

  def _load_with_profile(self, model_dir: str, detector: str, version: str,
                         public_keys: signing.PublicKeys) -> registry.LoadedModel:
    loaded = registry.load_version_for_serving(model_dir, detector, version, public_keys)
    self.profiles[version] = normal_profile.load_profile(loaded, model_dir=model_dir)
    return loaded

  def _none_verifies(self):
    raise registry.no_model_error(self._model_dir, self._detector, self._public_keys,
                                  self._refused)

  def take_refusals(self) -> int:
    """Refusals since the last call, for the caller's counter."""
    with self._count_lock:
      count, self._uncounted = self._uncounted, 0
    return count

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
      try:
        newer = self._newest(newer_than=self.current.version)
      except Exception:  # pylint: disable=broad-except
        # The registry unreachable (an object store's hiccup): keep serving, check again later.
        log.warning('could not check the %s registry under %s; still serving %s',
                    self._detector, self._model_dir, self.current.version, exc_info=True)
        return
      if newer is not None:
        self.current = newer
        log.info('%s detector now serves model %s', self._detector, newer.version)
    finally:
      self._lock.release()


_limited_threads = threading.local()


def _one_native_thread_per_worker() -> None:
  """Limits OpenMP and BLAS (HistGradientBoosting's predict, numpy) to one thread.

  The runner already runs a worker per core; a model that also starts a thread per core
  oversubscribes them, and OpenMP's spinning threads then make scoring many times slower on a
  busy machine (measured: benchmarks/README.md, "Figures behind the code's defaults"). OpenMP
  keeps the setting per calling thread, and Beam runs bundles on a pool of threads: so once
  per thread.
  """
  if not getattr(_limited_threads, 'done', False):
    threadpoolctl.threadpool_limits(limits=1)
    _limited_threads.done = True


REASONS_PER_RECORD = 3


def _feature_keys(schema: RecordSchema, arrays: Mapping[str, np.ndarray]) -> Optional[list]:
  """A key per row of feature arrays (:func:`model.features.feature_arrays`), equal for two
  rows exactly when the profile sees the same values in both (the numbers' float64 bits, so
  0.0 and -0.0 differ; the strings); None when a value cannot be a key."""
  numeric_names = set(schema.numeric_features)
  numeric = [n for n in schema.feature_columns if n in numeric_names]
  rows = normal_profile.row_count(arrays)
  numbers = np.ascontiguousarray(np.column_stack([arrays[n] for n in numeric])) if numeric \
      else None
  bits = numbers.view(np.dtype((np.void, numbers.shape[1] * 8))).ravel().tolist() if numeric \
      else [b''] * rows
  others = [arrays[n].tolist() for n in schema.feature_columns if n not in numeric_names]
  keys = list(zip(bits, *others))
  try:
    set(keys)
  except TypeError:
    return None
  return keys


def flagged_reasons(schema: RecordSchema, profile: normal_profile.NormalProfile,
                    batch: RecordBatch, flagged: Sequence[int]) -> list:
  """``profile.reasons`` of the records of ``batch`` at ``flagged``, computed once per distinct
  feature row: a flood's copies (thousands of records alike in every feature) have the same
  reasons, and the reasons are a flagged record's largest cost. Every record gets its own
  list of its own dicts. The profile reads numpy arrays, not a DataFrame: building one and
  reading its columns back cost more than the reasons themselves (benchmarks/README.md,
  "Alert reasons without pandas")."""
  arrays = feature_arrays(schema, batch.take(list(flagged)).columns)
  keys = _feature_keys(schema, arrays)
  if keys is None:
    return profile.reasons(arrays, REASONS_PER_RECORD)
  first: dict = {}
  for position, key in enumerate(keys):
    first.setdefault(key, position)
  if len(first) == len(keys):
    return profile.reasons(arrays, REASONS_PER_RECORD)
  positions = list(first.values())
  distinct = profile.reasons({name: values[positions] for name, values in arrays.items()},
                             REASONS_PER_RECORD)
  slot = dict(zip(first, distinct))
  return [slot[key] for key in keys]


def score_batch(schema: RecordSchema, loaded: registry.LoadedModel, batch: RecordBatch,
                profile: Optional[normal_profile.NormalProfile] = None) -> RecordBatch:
  """``batch`` with prediction (0/1), score and model_version columns, from one model call,
  and ``reasons`` for the flagged rows when the model has a ``profile``."""
  scored = model_scores(schema, loaded, batch)
  return scored if profile is None else with_reasons(schema, profile, scored)


def model_scores(schema: RecordSchema, loaded: registry.LoadedModel,
                 batch: RecordBatch) -> RecordBatch:
  """:func:`score_batch` without the reasons (every ``reasons`` is None)."""
  _one_native_thread_per_worker()
  estimator = loaded.estimator
  threshold = getattr(estimator, 'threshold', None)
  score_columns = getattr(estimator, 'score_columns', None)
  if score_columns is not None and threshold is not None:
    # The model contract's score, from the batch's columns (model/detector.py).
    scores = score_columns(schema, batch.columns)
    predictions = scores >= threshold
  else:
    frame = frame_from_columns(schema, batch.columns)
    scores = estimator.predict_proba(frame)[:, 1]
    if threshold is None:
      predictions = estimator.predict(frame)
    else:
      predictions = scores >= threshold  # the same rule as predict(), without scoring twice
  return batch.with_columns(
      prediction=np.asarray(predictions, dtype=np.int64).tolist(),
      score=np.asarray(scores, dtype=np.float64).tolist(),
      model_version=[loaded.version] * len(batch),
      reasons=[None] * len(batch))


def with_reasons(schema: RecordSchema, profile: normal_profile.NormalProfile,
                 scored: RecordBatch) -> RecordBatch:
  """``scored`` (:func:`model_scores`) with ``profile``'s reasons for its flagged records."""
  flagged = [i for i, p in enumerate(scored.columns['prediction']) if p == 1]
  if not flagged:
    return scored
  reasons = list(scored.columns['reasons'])
  for position, why in zip(flagged, flagged_reasons(schema, profile, scored, flagged)):
    reasons[position] = why
  return scored.with_columns(reasons=reasons)


@dataclasses.dataclass
class PartlyScored:
  """What the handler returns for a batch the model could score only in part: the scored
  records and a dead letter (stage ``inference``) for each record it could not score."""
  records: RecordBatch
  dead: list

  @property
  def messages(self):
    """The scored records' messages: what transforms.batch.RecordBatchCoder measures (the
    handler's results are declared RecordBatches, see :class:`Score`)."""
    return self.records.messages


# Model calls one batch may take while bisecting: a few bad records are found in a few calls
# each, and a model that raises on everything (a broken model, not bad records) costs this
# many calls a batch, not two per record.
MAX_SCORING_CALLS = 64


def score_or_bisect(schema: RecordSchema, loaded: registry.LoadedModel, batch: RecordBatch,
                    profile: Optional[normal_profile.NormalProfile] = None,
                    budget: Optional[dict] = None
                    ) -> tuple[list[RecordBatch], list[dict[str, Any]]]:
  """:func:`score_batch`, and when the model raises on the batch, the same on each half, down
  to the records it raises on alone: (scored parts in record order, their dead letters).
  After MAX_SCORING_CALLS model calls for one batch, the parts not yet scored become dead
  letters whole, with the model's last error."""
  budget = {'calls': 0, 'error': None} if budget is None else budget
  if budget['calls'] >= MAX_SCORING_CALLS:
    return [], [batch_record_dead_letter(batch, p, INFERENCE_STAGE, budget['error'])
                for p in range(len(batch))]
  budget['calls'] += 1
  try:
    return [score_batch(schema, loaded, batch, profile)], []
  except Exception as e:  # pylint: disable=broad-except
    budget['error'] = e
    if len(batch) <= 1:
      return [], [batch_record_dead_letter(batch, p, INFERENCE_STAGE, e)
                  for p in range(len(batch))]
  half = len(batch) // 2
  scored, dead = score_or_bisect(schema, loaded, batch.take(range(half)), profile, budget)
  more_scored, more_dead = score_or_bisect(schema, loaded,
                                           batch.take(range(half, len(batch))), profile, budget)
  return scored + more_scored, dead + more_dead


def _batches(batch: Union[RecordBatch, Sequence[RecordBatch]]) -> Sequence[RecordBatch]:
  return (batch,) if isinstance(batch, RecordBatch) else batch


class RegistryModelHandler(ModelHandler[RecordBatch, RecordBatch, LiveModel]):
  """Scores RecordBatches with the registry's newest model of their stream.

  Each element is already a batch of records (ParseAndClean batches them), so RunInference
  skips its own batching (``should_skip_batching``) and each element is one model call:
  BatchElements, even with batches of one, holds each element back until the next one arrives
  or the bundle ends, and with records streaming into a running bundle an alert would wait
  for that.
  """

  def __init__(self, schema: RecordSchema, model_dir: str, refresh_seconds: float = 10.0,
               public_keys: Optional[signing.PublicKeys] = None):
    """``public_keys``: the keys whose signatures are trusted; default: the reader's key
    file, read here (where the pipeline is built), not on the workers."""
    super().__init__()
    self._schema = schema
    self._model_dir = model_dir
    self._refresh_seconds = refresh_seconds
    self._public_keys = public_keys if public_keys is not None else signing.reader_keys()

  def load_model(self) -> LiveModel:
    return LiveModel(self._model_dir, self._schema.stream, self._refresh_seconds,
                     self._public_keys)

  def run_inference(self, batch: Union[RecordBatch, Sequence[RecordBatch]], model: LiveModel,
                    inference_args: Optional[dict[str, Any]] = None) -> Iterable[RecordBatch]:
    """``batch``: one RecordBatch (how RunInference passes each element, batching skipped),
    or a sequence of them."""
    loaded = model.get()
    refused = model.take_refusals()
    if refused:
      Metrics.counter(self.get_metrics_namespace(), MODELS_REFUSED).inc(refused)
    profile = model.profiles.get(loaded.version)
    return [self._score(loaded, records, profile) for records in _batches(batch)]

  def _score(self, loaded, records: RecordBatch, profile):
    scored, dead = score_or_bisect(self._schema, loaded, records, profile)
    if not dead:
      return scored[0]
    log.warning('the %s model %s could not score %d of %d records; they are dead letters',
                self._schema.stream, loaded.version, len(dead), len(records))
    return PartlyScored(RecordBatch.concat(self._schema.stream, scored) if scored else
                        records.take([]), dead)

  def should_skip_batching(self) -> bool:
    return True

  def get_num_bytes(self, batch: Union[RecordBatch, Sequence[RecordBatch]]) -> int:
    # For RunInference's byte metrics; the default pickles every batch to measure it.
    return sum(len(m.value or b'') for records in _batches(batch) for m in records.messages)

  def get_metrics_namespace(self) -> str:
    return f'RunInference_{self._schema.stream}'


def _failed_batch_to_dead_letters(stream: str):
  counter = dead_letter_counter('Score', stream)

  def to_rows(failed):
    """(batch or batches, exception) -> a dead letter per record; never raises, whatever
    arrives."""
    try:
      batches, error = failed
      batches = list(_batches(batches))
    except Exception as e:  # pylint: disable=broad-except
      counter.inc()
      yield dead_letter_row(failed, INFERENCE_STAGE, e)
      return
    for records in batches:
      if not isinstance(records, RecordBatch):
        counter.inc()
        yield dead_letter_row(records, INFERENCE_STAGE, error)
        continue
      counter.inc(len(records))
      for position in range(len(records)):
        yield batch_record_dead_letter(records, position, INFERENCE_STAGE, error)
  return to_rows


class SplitPartlyScored(beam.DoFn):
  """RecordBatch | PartlyScored -> scored RecordBatches, and ``DEAD_LETTER`` rows for the
  records the model could not score (counted as the stage's dead letters)."""

  def __init__(self, stream: str):
    self._dead = dead_letter_counter('Score', stream)

  def process(self, element):
    if not isinstance(element, PartlyScored):
      yield element
      return
    self._dead.inc(len(element.dead))
    for row in element.dead:
      yield beam.pvalue.TaggedOutput(DEAD_LETTER, row)
    if len(element.records):
      yield element.records


class Score(beam.PTransform):
  """Enriched RecordBatches of one stream -> scored RecordBatches (``result['records']``),
  plus ``DEAD_LETTER`` rows for the records the model could not score (found by bisecting a
  batch it raised on: the rest of the batch is scored)."""

  def __init__(self, schema: RecordSchema, model_dir: str, refresh_seconds: float = 10.0,
               public_keys: Optional[signing.PublicKeys] = None):
    super().__init__(label=f'Score[{schema.stream}]')
    self._schema = schema
    self._model_dir = model_dir
    self._refresh_seconds = refresh_seconds
    self._public_keys = public_keys

  def expand(self, records):
    # Read here, where the job is built: the handler carries the keys to the workers.
    keys = self._public_keys if self._public_keys is not None else signing.reader_keys()
    handler = RegistryModelHandler(self._schema, self._model_dir, self._refresh_seconds, keys)
    results, failed = records | RunInference(handler).with_exception_handling()
    # Declared, here and below, or the results would get the generic coder, which measures
    # the batches the harness samples by pickling them whole (see RecordBatchCoder; a
    # PartlyScored is measured by its records' messages).
    results.element_type = RecordBatch
    split = results | 'SplitPartlyScored' >> beam.ParDo(
        SplitPartlyScored(self._schema.stream)).with_outputs(DEAD_LETTER, main='records')
    scored = split.records
    scored.element_type = RecordBatch
    dead = failed.failed_inferences | 'FailedBatchToDeadLetters' >> beam.FlatMap(
        _failed_batch_to_dead_letters(self._schema.stream))
    return {'records': scored,
            DEAD_LETTER: (dead, split[DEAD_LETTER]) | 'ScoreDeadLetters' >> beam.Flatten()}
