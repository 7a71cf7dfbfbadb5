"""RegistryModelHandler: scoring batches and switching to newer versions while running."""

import datetime
import logging
import os
import pickle
import shutil
import time

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from model import registry, signing
from model.features import frame_from_columns, frame_from_records
from model.profile import NormalProfile, row_count
from schemas.records import NETWORK
from tests.factories import message, network_record
from transforms import inference
from transforms.dead_letter import DEAD_LETTER
from transforms.inference import (REASONS_PER_RECORD, PartlyScored, RegistryModelHandler, Score,
                                  flagged_reasons, score_batch)
from transforms.parse import parse_messages


def network_batch(*records):
  batch, dead = parse_messages(NETWORK, [message('network', r, offset=i)
                                         for i, r in enumerate(records)])
  assert not dead
  return batch


def test_handler_scores_a_batch_and_names_the_version(model_dir):
  handler = RegistryModelHandler(NETWORK, model_dir, refresh_seconds=0)
  live = handler.load_model()
  batch = network_batch(*(network_record(i, attack=i == 1) for i in range(3)))
  [scored] = handler.run_inference([batch], live)
  assert scored.columns['prediction'] == [0, 1, 0]
  assert scored.columns['score'][1] > scored.columns['score'][0]
  assert set(scored.columns['model_version']) == {registry.latest_version(model_dir, 'network')}
  # The records themselves are carried through, with where they came from.
  assert scored.columns['uuid'] == batch.columns['uuid']
  assert scored.messages == batch.messages


def test_a_newly_published_version_is_served_without_a_restart(model_dir, tmp_path):
  models = str(tmp_path / 'models')
  shutil.copytree(model_dir, models)
  handler = RegistryModelHandler(NETWORK, models, refresh_seconds=0.05)
  live = handler.load_model()
  batch = [network_batch(network_record(0))]

  def served_version():
    [scored] = handler.run_inference(batch, live)
    return scored.columns['model_version'][0]
  v1 = served_version()

  # A corrupt newer version is skipped: scoring goes on with the current model.
  estimator = registry.load(models, 'network').estimator
  bad = registry.publish(models, 'network', estimator, feature_columns=[], training_rows=1)
  with open(f'{models}/network/{bad}/{registry.MODEL_FILE}', 'ab') as f:
    f.write(b'tampered')
  time.sleep(0.1)
  assert served_version() == v1

  good = registry.publish(models, 'network', estimator, feature_columns=[], training_rows=1)
  time.sleep(0.1)
  assert served_version() == good > v1


def _unsigned_newer(models, detector='network', seconds=60):
  """A newer version anyone with write access could drop in: a copy of the newest, unsigned."""
  newest = registry.latest_version(models, detector)
  version = registry.new_version(registry.version_time(newest) + datetime.timedelta(seconds=seconds))
  shutil.copytree(f'{models}/{detector}/{newest}', f'{models}/{detector}/{version}')
  os.remove(f'{models}/{detector}/{version}/{registry.SIGNATURE_FILE}')
  return version


def test_a_broken_newest_version_at_start_serves_the_one_before_and_counts(model_dir, tmp_path,
                                                                           caplog):
  models = str(tmp_path / 'models')
  shutil.copytree(model_dir, models)
  good = registry.latest_version(models, 'network')
  broken = _unsigned_newer(models)
  handler = RegistryModelHandler(NETWORK, models, refresh_seconds=0.05)
  with caplog.at_level(logging.ERROR, logger='transforms.inference'):
    live = handler.load_model()
  assert f'refusing network model {broken}' in caplog.text and 'unsigned' in caplog.text
  assert f'trying the version before it' in caplog.text
  assert live.current.version == good
  assert live.take_refusals() == 1 and live.take_refusals() == 0

  # Still refused on every later check, logged and counted once; then a good one is served.
  caplog.clear()
  batch = [network_batch(network_record(0))]
  time.sleep(0.1)
  [scored] = handler.run_inference(batch, live)
  assert set(scored.columns['model_version']) == {good}
  assert broken not in caplog.text
  newer = registry.publish(models, 'network', live.current.estimator, feature_columns=[],
                           training_rows=1)
  time.sleep(0.1)
  [scored] = handler.run_inference(batch, live)
  assert set(scored.columns['model_version']) == {newer}


def test_when_no_version_verifies_the_handler_says_what_to_do(model_dir, tmp_path):
  models = str(tmp_path / 'models')
  shutil.copytree(model_dir, models)
  for version in registry.list_versions(models, 'network'):
    os.remove(f'{models}/network/{version}/{registry.SIGNATURE_FILE}')
  with pytest.raises(registry.NoModelError, match='none of the 1 network versions .* loads and '
                     'verifies .*unsigned.*python -m pipelines.retrain'):
    RegistryModelHandler(NETWORK, models).load_model()


def test_the_handler_carries_its_public_keys_to_the_workers(model_dir, model_keys, monkeypatch,
                                                            tmp_path):
  """Workers verify with the keys read where the pipeline was built, not with a file of their
  own: the pickled handler loads where no key file exists, and refuses another key's models."""
  handler = pickle.dumps(RegistryModelHandler(NETWORK, model_dir, refresh_seconds=0))
  monkeypatch.setenv(signing.PUBLIC_KEY_ENV, str(tmp_path / 'nowhere.pub'))
  monkeypatch.setenv('XDG_CONFIG_HOME', str(tmp_path / 'no-config'))
  with pytest.raises(signing.KeyFileError, match='python -m pipelines.keys generate'):
    signing.reader_keys()
  live = pickle.loads(handler).load_model()
  assert live.current.version == registry.latest_version(model_dir, 'network')

  stranger = RegistryModelHandler(NETWORK, model_dir, refresh_seconds=0,
                                  public_keys=signing.SigningKey.generate().public)
  with pytest.raises(registry.NoModelError, match='does not verify against'):
    pickle.loads(pickle.dumps(stranger)).load_model()


def test_a_forged_far_future_version_does_not_block_later_publishes(model_dir, tmp_path):
  """Versions sort by time, so a forged '9999' version would be newest forever: refused, it
  must not stop the real next version from being served."""
  models = str(tmp_path / 'models')
  shutil.copytree(model_dir, models)
  good = registry.latest_version(models, 'network')
  forged = '99991231T235959999999Z'
  shutil.copytree(f'{models}/network/{good}', f'{models}/network/{forged}')
  handler = RegistryModelHandler(NETWORK, models, refresh_seconds=0.05)
  live = handler.load_model()
  assert live.current.version == good and live.take_refusals() == 1
  newer = registry.publish(models, 'network', live.current.estimator, feature_columns=[],
                           training_rows=1)
  time.sleep(0.1)
  [scored] = handler.run_inference([network_batch(network_record(0))], live)
  assert set(scored.columns['model_version']) == {newer}
  assert registry.latest_version(models, 'network') == forged


def test_reasons_of_records_alike_are_computed_once_and_equal_the_profiles(model_dir):
  """A flood's copies share their reasons; every record's reasons are still exactly what the
  profile gives it alone, and 0.0 and -0.0 (or a missing value) are not taken as alike."""
  normal = [network_record(i) for i in range(200)]
  profile = NormalProfile.fit(NETWORK, frame_from_records(NETWORK, normal))
  flood = [network_record(1000 + i, attack=True) for i in range(30)]
  odd = [network_record(2000, attack=True, serror_rate=-0.0),  # the flood's is 0.0
         network_record(2001, attack=True, hot=None),
         network_record(2002, attack=True, service='never-seen')]
  batch = network_batch(*(flood + odd + flood[:5]))
  flagged = list(range(len(batch)))
  calls = []
  real_reasons = profile.reasons

  def counted(frame, top_k):
    calls.append(row_count(frame))
    return real_reasons(frame, top_k)
  profile.reasons = counted
  got = flagged_reasons(NETWORK, profile, batch, flagged)
  expected = real_reasons(frame_from_columns(NETWORK, batch.columns), REASONS_PER_RECORD)
  assert got == expected
  assert all(got), 'the records must have reasons for this to mean much'
  assert calls == [1 + len(odd)]  # the flood once, each odd record once
  # A subset of the flagged records, in another order of appearance.
  calls.clear()
  assert flagged_reasons(NETWORK, profile, batch, [31, 2, 32, 5]) == [
      expected[31], expected[2], expected[32], expected[5]]
  assert calls == [3]


def test_score_batch_gives_reasons_to_the_flagged_records_only(model_dir):
  loaded = registry.load_for_serving(model_dir, 'network')
  normal = [network_record(i) for i in range(200)]
  profile = NormalProfile.fit(NETWORK, frame_from_records(NETWORK, normal))
  batch = network_batch(*(network_record(i, attack=i % 3 == 0) for i in range(30)))
  scored = score_batch(NETWORK, loaded, batch, profile)
  flagged = [i for i, p in enumerate(scored.columns['prediction']) if p == 1]
  assert flagged == [i for i in range(30) if i % 3 == 0]
  expected = profile.reasons(frame_from_columns(NETWORK, batch.take(flagged).columns), 3)
  assert [scored.columns['reasons'][i] for i in flagged] == expected
  assert all(scored.columns['reasons'][i] is None for i in range(30) if i not in flagged)
  # The compiled path scores as the model's own frame path does.
  frame = frame_from_columns(NETWORK, batch.columns)
  assert scored.columns['score'] == loaded.estimator.predict_proba(frame)[:, 1].tolist()


def _with_unscorable(batch, positions):
  """The batch with an infinity at ``positions``: cleaning never lets one through, and the
  model's imputer refuses it (a real failure of the real model on those records only)."""
  src_bytes = list(batch.columns['src_bytes'])
  for p in positions:
    src_bytes[p] = float('inf')
  return batch.with_columns(src_bytes=src_bytes)


def test_only_the_records_the_model_cannot_score_are_dead_letters(model_dir):
  handler = RegistryModelHandler(NETWORK, model_dir, refresh_seconds=0)
  live = handler.load_model()
  batch = network_batch(*(network_record(i, attack=i % 4 == 1) for i in range(40)))
  [good] = handler.run_inference([batch], live)
  [partly] = handler.run_inference([_with_unscorable(batch, [3, 17, 18])], live)
  assert isinstance(partly, PartlyScored)
  kept = [i for i in range(40) if i not in (3, 17, 18)]
  assert partly.records.columns['uuid'] == [batch.columns['uuid'][i] for i in kept]
  assert partly.records.columns['prediction'] == [good.columns['prediction'][i] for i in kept]
  assert partly.records.columns['score'] == [good.columns['score'][i] for i in kept]
  assert [d['offset'] for d in partly.dead] == [3, 17, 18]
  assert all(d['stage'] == 'inference' and 'infinity' in d['error'].lower()
             for d in partly.dead)
  assert [d['payload'] for d in partly.dead] == [batch.messages[i].value for i in (3, 17, 18)]


def test_score_sends_unscorable_records_to_dead_letters_and_counts_them(model_dir):
  batch = network_batch(*(network_record(i) for i in range(20)))
  bad = _with_unscorable(batch, list(range(20)))  # nothing in it scores
  with TestPipeline() as p:
    result = p | beam.Create([_with_unscorable(batch, [5]), bad, batch]) | Score(
        NETWORK, model_dir, refresh_seconds=0)
    assert_that(result['records'] | beam.Map(len), equal_to([19, 20]), label='scored')
    assert_that(result[DEAD_LETTER] | beam.Map(lambda d: d['offset']),
                equal_to([5] + list(range(20))), label='dead')
  counters = p.result.metrics().query(MetricsFilter().with_name('network_dead_lettered'))
  assert sum(c.committed for c in counters['counters']) == 21


def test_a_batch_nothing_in_which_scores_costs_a_bounded_number_of_model_calls(
    model_dir, monkeypatch):
  """A model that raises on every record (broken, not the records) must not be called twice
  per record: past the budget the rest becomes dead letters whole."""
  loaded = registry.load_for_serving(model_dir, 'network')
  batch = network_batch(*(network_record(i) for i in range(300)))
  calls = []
  real_score_batch = inference.score_batch
  monkeypatch.setattr(inference, 'score_batch',
                      lambda *args: calls.append(1) or real_score_batch(*args))
  scored, dead = inference.score_or_bisect(NETWORK, loaded,
                                           _with_unscorable(batch, list(range(300))))
  assert scored == [] and len(calls) <= inference.MAX_SCORING_CALLS
  assert sorted(d['offset'] for d in dead) == list(range(300))


def test_runinference_hands_each_batch_to_the_model_as_it_comes(model_dir):
  """Batches are made upstream: RunInference's BatchElements, which keeps each element until
  the next one arrives or the bundle ends, is skipped; a single RecordBatch (how RunInference
  then passes an element) is one model call, and its failure dead-letters every record."""
  handler = RegistryModelHandler(NETWORK, model_dir)
  assert handler.should_skip_batching()
  batch = network_batch(*(network_record(i) for i in range(4)))
  [scored] = handler.run_inference(batch, handler.load_model())
  assert len(scored) == 4 and scored.messages == batch.messages
  assert handler.get_num_bytes(batch) == handler.get_num_bytes([batch]) > 0
  rows = list(inference._failed_batch_to_dead_letters('network')((batch, ValueError('boom'))))  # pylint: disable=protected-access
  assert [r['offset'] for r in rows] == [0, 1, 2, 3]
  assert all('boom' in r['error'] for r in rows)


def test_the_scored_batches_are_measured_without_pickling(model_dir):
  """The harness samples element sizes with each PCollection's coder; the generic one pickles
  a whole batch to measure it. Every batch PCollection of Score has
  the batch coder, which measures a PartlyScored too, and carries it whole."""
  from apache_beam.runners import pipeline_context  # pylint: disable=import-outside-toplevel
  from transforms.batch import RecordBatchCoder  # pylint: disable=import-outside-toplevel
  p = beam.Pipeline()
  _ = (p | beam.Create([network_batch(network_record(0))]).with_output_types(
      inference.RecordBatch) | Score(NETWORK, model_dir, refresh_seconds=0))
  proto = p.to_runner_api()
  context = pipeline_context.PipelineContext(proto.components)
  coders = {pc.unique_name: context.coders.get_by_id(pc.coder_id)
            for pc in proto.components.pcollections.values() if 'Score[network]' in pc.unique_name}
  run_inference = [c for name, c in coders.items() if name.endswith('ParDo(_RunInferenceDoFn).None')]
  assert run_inference and all(isinstance(c, RecordBatchCoder) for c in run_inference), coders
  handler = RegistryModelHandler(NETWORK, model_dir, refresh_seconds=0)
  batch = network_batch(*(network_record(i) for i in range(10)))
  [partly] = handler.run_inference([_with_unscorable(batch, [2])], handler.load_model())
  coder = RecordBatchCoder()
  assert coder.estimate_size(partly) == sum(len(m.value) for m in partly.records.messages) > 0
  again = coder.decode(coder.encode(partly))
  assert isinstance(again, PartlyScored) and again.records.columns == partly.records.columns
