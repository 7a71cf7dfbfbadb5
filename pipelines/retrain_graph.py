"""The retrain job's Beam graph: the DoFns and the composite transform that turn the input
tables into ``result.json`` (see pipelines/retrain.py for the picture). Each step is a small
function of model.training fanned out as elements, so any runner spreads the grid search and
the final fits over its workers; the choice is model.selection's.
"""

from __future__ import annotations

import logging
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows

from model import dataset, sampling, selection, training
from model.results import CandidateResult, ChampionResult, TrainingSummary
from pipelines.retrain_input import ReadTrainingTables

log = logging.getLogger(__name__)
RESULT_FILE = 'result.json'


class Prepare(beam.DoFn):
  """An input table -> the same rows in model.dataset's prepared layout (feature columns,
  key, group, label, event time); rows lacking a required field are left out."""

  def __init__(self, detector: str):
    self._detector = detector
    self._rows = Metrics.counter('Retrain', 'rows_read')

  def process(self, table: pa.Table):
    prepared = dataset.prepare_batch(self._detector, table)
    self._rows.inc(prepared.num_rows)
    if prepared.num_rows:
      yield prepared


class SampleBundles(beam.DoFn):
  """Each bundle of prepared batches -> one part of the sample (files in the staging dir) and
  its description; the DoFn keeps its cut across bundles (see model.sampling)."""

  def __init__(self, detector: str, k: int, parts_dir: str):
    self._detector = detector
    self._k = k
    self._parts_dir = parts_dir
    self._cut = None
    self._part = None

  def start_bundle(self):
    self._part = sampling.PartWriter(self._detector, self._k, self._parts_dir, self._cut)

  def process(self, table: pa.Table):
    self._part.add(table)

  def finish_bundle(self):
    description = self._part.write()
    self._cut = self._part.sample.cut
    if description is not None:
      yield GlobalWindows.windowed_value(description)


# ---- the steps as Beam functions ---------------------------------------------------------------

def merge_and_stage(parts, config: training.RetrainConfig, k: int) -> dict[str, Any]:
  """The parts' descriptions -> the staged sample's description (with the read stats)."""
  sample, stats = sampling.merge_parts(config.detector, k, parts)
  info = training.stage_sample(config, sample)
  info['stats'] = stats
  sampling.delete_parts(parts)
  return info


def _cv_tasks(info, config):
  return training.cv_tasks(config, info)


def _cross_validate(task, info, config):
  return training.run_cv_task(config, info, task)


def _final_tasks(info, cv_results, config):
  return [(method, row['params'])
          for method, row in selection.best_points(config, info, cv_results).items()]


def _fit_final(task, info, config) -> CandidateResult:
  method, params = task
  return training.fit_final(config, info, method, params)


def _champion(info, config):
  return training.evaluate_champion(config, info)


def conclude(info: dict[str, Any], cv_results: list[dict[str, Any]],
             finals: list[CandidateResult], champion: ChampionResult | None,
             config: training.RetrainConfig, source: tuple[str, str]) -> TrainingSummary:
  """Chooses the model to publish (model.selection) and writes ``result.json`` to the staging
  dir."""
  by_method = {f.method: f for f in finals}
  choice = selection.choose(config, info, cv_results, by_method)
  result = TrainingSummary(
      detector=config.detector, input=source[0], input_format=source[1], stats=info['stats'],
      sample=info, metric=choice.metric, gate_metric=choice.gate_metric, cv=choice.cv,
      cv_folds=config.folds, cv_tasks=len(cv_results), finals=by_method, chosen=choice.chosen,
      why=choice.why, champion=champion)
  training.write_json(FileSystems.join(config.staging_dir, RESULT_FILE), result.to_json())
  return result


def read_result(staging_dir: str) -> TrainingSummary:
  return TrainingSummary.from_json(training.read_json(FileSystems.join(staging_dir,
                                                                        RESULT_FILE)))


class Retrain(beam.PTransform):
  """pbegin -> the run's :class:`TrainingSummary` (also written as ``result.json``)."""

  def __init__(self, config: training.RetrainConfig, pattern: str, input_format: str,
               sample_rows: int):
    super().__init__()
    self._config = config
    self._pattern = pattern
    self._format = input_format
    self._sample_rows = sample_rows

  def expand(self, pbegin):
    config = self._config
    prepared = (pbegin
                | 'Read' >> ReadTrainingTables(config.detector, self._pattern, self._format)
                | 'Prepare' >> beam.ParDo(Prepare(config.detector)))
    parts_dir = FileSystems.join(config.staging_dir, 'parts')
    info = (prepared
            | 'SampleBundles' >> beam.ParDo(SampleBundles(config.detector, self._sample_rows,
                                                          parts_dir))
            | 'CollectParts' >> beam.combiners.ToList()
            | 'MergeAndStage' >> beam.Map(merge_and_stage, config=config, k=self._sample_rows))
    info_side = beam.pvalue.AsSingleton(info)
    cv_results = (info
                  | 'GridTasks' >> beam.FlatMap(_cv_tasks, config=config)
                  | 'SpreadGrid' >> beam.Reshuffle()
                  | 'CrossValidate' >> beam.Map(_cross_validate, info_side, config=config)
                  | 'CollectCV' >> beam.combiners.ToList())
    cv_side = beam.pvalue.AsSingleton(cv_results)
    finals = (info
              | 'FinalTasks' >> beam.FlatMap(_final_tasks, cv_side, config=config)
              | 'SpreadFinals' >> beam.Reshuffle()
              | 'FitFinal' >> beam.Map(_fit_final, info_side, config=config)
              | 'CollectFinals' >> beam.combiners.ToList())
    champion = info | 'EvaluateChampion' >> beam.Map(_champion, config=config)
    return info | 'Conclude' >> beam.Map(
        conclude, cv_side, beam.pvalue.AsSingleton(finals),
        beam.pvalue.AsSingleton(champion), config=config,
        source=(self._pattern, self._format))
