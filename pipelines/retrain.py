"""The batch retrain job: archive (or KDD CSV) -> better model -> registry, with a report.

    python -m pipelines.retrain --help
    python -m pipelines.retrain --detector network --input output/archive/network \\
        --model_dir models
    python -m pipelines.retrain --detector network --input kddcup.data_10_percent.gz \\
        --model_dir models --alert_rate 0.01
    python -m pipelines.retrain --detector process --input 'output/archive/process/dt=*/*.parquet' \\
        --model_dir models --runner FlinkRunner --flink_master localhost:8081 \\
        --environment_type LOOPBACK

The pipeline (the same on every runner; only ``--runner`` changes):

    Parquet row groups (ReadFromParquetBatched) | KDD CSV blocks (fileio + pyarrow)
      -> Prepare: feature columns, uuid hash, label, event time (pyarrow batches)
      -> SampleBundles: per bundle, the ``--sample_rows`` records with the smallest uuid
         hashes (one per uuid: uniform and deduplicated) and the distinct uuid hashes, written
         as a part file; only the part's description travels on (model.sampling)
      -> MergeAndStage: the sample, exact rows / duplicates / time range, and one Parquet
         file beside the run with train / calibration / test splits and CV folds
      -> grid point x fold as elements -> Reshuffle -> CrossValidate (in parallel)
      -> each method's best point -> Reshuffle -> FitFinal (in parallel): threshold on the
         calibration split, metrics on the test split
      -> EvaluateChampion: the published model on the same test split
      -> Conclude: the chosen model and why (``result.json``)

Then, once and only in the launcher (a retried worker never publishes twice): the champion /
challenger gate, the HTML report, and the atomic publication to the registry.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import time
import uuid
from typing import Any, Optional, Sequence

import apache_beam as beam
import pyarrow as pa
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindows
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, SetupOptions

from pipelines import options as job_options, runners, storage
from pipelines.options import ModelRegistryOptions
from model import dataset, evaluation, methods, registry, report, sampling, signing, training

log = logging.getLogger('pipelines.retrain')
RESULT_FILE = 'result.json'


class RetrainOptions(PipelineOptions):
  """The job's own flags; Beam's (--runner, --flink_master, ...) are listed after them."""

  @classmethod
  def _add_argparse_args(cls, parser):
    group = parser.add_argument_group('retrain job')
    group.add_argument('--detector', choices=registry.DETECTORS, default=None,
                       help='Which detector to retrain (required).')
    group.add_argument('--input', default=None,
                       help='The training data (required): an archive folder '
                       '(output/archive/<detector> or the --output root of the stream job), a '
                       'Parquet glob (output/archive/network/dt=2026-*/*.parquet), or for '
                       'network a KDD Cup 1999 CSV file (kddcup.data_10_percent[.gz]). Local, '
                       's3:// or gs://.')
    group.add_argument('--input_format', choices=('auto', 'parquet', 'kdd_csv'),
                       default='auto', help='Default: Parquet unless the files are not '
                       '*.parquet (then KDD CSV).')
    group.add_argument('--method', default='auto',
                       help='Training method(s), comma-separated: '
                       f'{", ".join(methods.METHODS)}. auto (default): network tries '
                       'rf_synthetic and isolation_forest (label-free; held-out labels choose '
                       'when the data has them), process/memory try hgb and random_forest '
                       '(supervised on the attack labels).')
    group.add_argument('--grid', choices=('default', 'small', 'none'), default='default',
                       help='Hyperparameter grid searched by cross-validation when the data '
                       'has labels (default: %(default)s; none: each method\'s defaults).')
    group.add_argument('--param_grid', default=None,
                       help='A JSON grid replacing --grid: {"isolation_forest": '
                       '{"max_samples": [256, 1024]}}.')
    group.add_argument('--folds', type=int, default=3,
                       help='Cross-validation folds (default: %(default)s).')
    group.add_argument('--sample_rows', type=int, default=250_000,
                       help='Records in the uniform, deduplicated training sample; all of '
                       'them when fewer (default: %(default)s). 70%% train, 10%% calibration, '
                       '20%% test.')
    group.add_argument('--grid_rows', type=int, default=50_000,
                       help='Train-split records the grid search uses, per fold set '
                       '(default: %(default)s); the chosen model is fit on the whole train '
                       'split.')
    group.add_argument('--alert_rate', type=float, default=0.01,
                       help='Target alert rate: the share of normal records (labelled normal, '
                       'or all records when unlabelled) that score above the alert threshold '
                       '(default: %(default)s).')
    group.add_argument('--threshold_policy', choices=('auto', 'alert_rate', 'f1'),
                       default='auto', help='How the alert threshold is set on the '
                       'calibration split; auto: alert_rate for network, f1 for host '
                       'detectors.')
    group.add_argument('--reference', choices=('auto', 'normal', 'all'), default='auto',
                       help='What the label-free methods learn as normal traffic. auto '
                       '(default): the records labelled normal when there are labels, else '
                       'all records.')
    group.add_argument('--select_metric', choices=('auto', 'roc_auc', 'pr_auc'),
                       default='auto', help='Chooses method and hyperparameters, and the '
                       'gate compares by it; auto: roc_auc for network, pr_auc for host '
                       'detectors (contrast_auc when there are no labels).')
    group.add_argument('--gate_tolerance', type=float, default=0.002,
                       help='The new model may be this much worse than the current one on '
                       'the gate metric and still be published (default: %(default)s).')
    group.add_argument('--force', action='store_true',
                       help='Publish even if the new model is worse than the current one.')
    group.add_argument('--no_publish', action='store_true',
                       help='Train, evaluate and report, but do not publish.')
    group.add_argument('--staging_dir', default=None,
                       help='Where workers exchange the sample and candidate models '
                       '(default: <model_dir>/.staging/<detector>-<run>); every worker must '
                       'reach it.')
    group.add_argument('--keep_staging', action='store_true',
                       help='Keep the staging files (sample, candidates, result.json) after '
                       'the run.')
    group.add_argument('--n_jobs', type=int, default=-1,
                       help='Cores one training task uses (default: all of the worker\'s, -1). '
                       'On a cluster running several tasks per machine, use 1.')
    group.add_argument('--seed', type=int, default=0, help='Random seed (default: 0).')
    group.add_argument('--model_signing_key', default=None,
                       help='PEM file of the Ed25519 private key that signs the published '
                       'manifest (default: $ATTACK_DETECTION_MODEL_SIGNING_KEY, else '
                       '~/.config/attack-detection/model-signing.key; `python -m '
                       'pipelines.keys generate` makes one; see docs/model-registry.md).')


# ---- reading ---------------------------------------------------------------------------------

def _matches(pattern: str) -> list[str]:
  try:
    return [m.path for m in FileSystems.match([pattern])[0].metadata_list]
  except Exception:  # pylint: disable=broad-except
    return []


def resolve_input(path: str, detector: str, input_format: str) -> tuple[str, str]:
  """(file pattern, format) for ``--input``: a glob or file as given; a folder as the archive
  of ``detector`` inside it (the stream's --output root, or archive/<detector> itself)."""
  if any(c in path for c in '*?[') or _is_file(path):
    candidates = [path]
  else:
    candidates = [
        FileSystems.join(path, 'archive', detector, 'dt=*', '*.parquet'),
        FileSystems.join(path, 'dt=*', '*.parquet'),
        FileSystems.join(path, '*.parquet'),
    ]
  for pattern in candidates:
    files = [f for f in _matches(pattern) if is_visible(f)]
    if files:
      if input_format == 'auto':
        input_format = ('parquet' if all(f.endswith('.parquet') for f in files) else 'kdd_csv')
      if input_format == 'kdd_csv' and detector != 'network':
        raise SystemExit('KDD CSV input holds network records: use --detector network')
      return pattern, input_format
  raise SystemExit(f'--input {path}: no files found (tried {", ".join(candidates)})')


def is_visible(path: str) -> bool:
  """False for names starting with '.': in-progress output files, staging, candidates."""
  return not path.replace('\\', '/').rstrip('/').rsplit('/', 1)[-1].startswith('.')


def _is_file(path: str) -> bool:
  if '://' not in path:
    return os.path.isfile(path)
  files = _matches(path)
  return len(files) == 1 and files[0].rstrip('/') == path.rstrip('/')


class _ReadKddCsv(beam.DoFn):

  def process(self, readable):
    name = readable.metadata.path
    handle = FileSystems.open(name, compression_type=CompressionTypes.UNCOMPRESSED)
    try:
      yield from dataset.kdd_csv_batches(handle, name)
    finally:
      handle.close()


class ReadTrainingTables(beam.PTransform):
  """pyarrow Tables of the archive (projected on the columns training needs) or of KDD CSV
  files; never one element per record."""

  def __init__(self, detector: str, pattern: str, input_format: str):
    super().__init__()
    self._detector = detector
    self._pattern = pattern
    self._format = input_format

  def expand(self, pbegin):
    if self._format == 'parquet':
      columns = dataset.archive_columns(self._detector)
      files = _matches(self._pattern)
      visible = [f for f in files if is_visible(f)]
      if len(visible) == len(files):
        return pbegin | 'ReadParquet' >> beam.io.ReadFromParquetBatched(
            self._pattern, columns=columns)
      # A glob such as dt=*/* also matches the stream's temporary '.<name>.inprogress' files:
      # half-written on a local disk, or a complete duplicate on S3 for the instant between
      # its copy and its delete (rename). Read the finished files only.
      log.info('skipping %d hidden or in-progress files of %s', len(files) - len(visible),
               self._pattern)
      return (pbegin
              | 'VisibleParquet' >> beam.Create(visible)
              | 'ReadParquet' >> beam.io.ReadAllFromParquetBatched(columns=columns))
    return (pbegin
            | 'MatchCsv' >> fileio.MatchFiles(self._pattern)
            | 'SkipHidden' >> beam.Filter(lambda match: is_visible(match.path))
            | 'OpenCsv' >> fileio.ReadMatches()
            | 'ReadCsv' >> beam.ParDo(_ReadKddCsv()))


class _Prepare(beam.DoFn):

  def __init__(self, detector: str):
    self._detector = detector
    self._rows = Metrics.counter('Retrain', 'rows_read')

  def process(self, table: pa.Table):
    prepared = dataset.prepare_batch(self._detector, table)
    self._rows.inc(prepared.num_rows)
    if prepared.num_rows:
      yield prepared


# ---- combining -------------------------------------------------------------------------------

class _SampleBundles(beam.DoFn):
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


def _merge_and_stage(parts, config, k):
  sample, stats = sampling.merge_parts(config.detector, k, parts)
  info = training.stage_sample(config, sample)
  info['stats'] = stats
  sampling.delete_parts(parts)
  return info


# ---- the steps as Beam functions ---------------------------------------------------------------

def _cv_tasks(info, config):
  return training.cv_tasks(config, info)


def _cross_validate(task, info, config):
  return training.run_cv_task(config, info, task)


def _final_tasks(info, cv_results, config):
  return [(method, row['params'])
          for method, row in training.best_points(config, info, cv_results).items()]


def _fit_final(task, info, config):
  method, params = task
  return training.fit_final(config, info, method, params)


def _champion(info, config):
  return training.evaluate_champion(config, info)


def conclude(info, cv_results, finals, champion, config, source) -> dict[str, Any]:
  """Chooses the model to publish and says why; writes ``result.json`` to the staging dir."""
  stats = info['stats']
  finals = {f['method']: f for f in finals}
  best = training.best_points(config, info, cv_results)
  metric = config.metric
  reference = info['reference']
  scored = {m: b['mean'] for m, b in best.items() if b.get('mean') is not None}
  if scored:
    chosen = max(scored, key=scored.get)
    others = ', '.join(f'{m} {v:.4f}' for m, v in sorted(scored.items()) if m != chosen)
    why = (f'{chosen} ({methods.describe(chosen)}) has the best mean {metric} over '
           f'{config.folds} cross-validation folds of the train split: {scored[chosen]:.4f}'
           + (f' (vs {others})' if others else '') + '.')
  elif info['has_labels'] and len(finals) > 1:
    by_calibration = {m: f['metrics']['calibration'].get(metric) or -1 for m, f in
                      finals.items()}
    chosen = max(by_calibration, key=by_calibration.get)
    why = f'{chosen} has the best {metric} on the calibration split (no grid search).'
  else:
    chosen = info['methods'][0]
    why = f'{chosen} ({methods.describe(chosen)}): '
    if len(info['methods']) > 1:
      why += 'the first method asked for; without labels nothing can tell them apart.'
    elif config.methods:
      why += 'the method asked for.'
    elif not info['has_labels'] and config.detector == 'network':
      why += ('the default without labels: the real-vs-synthetic forest learns every frequent '
              'pattern as normal, floods of near-identical attack records included, while '
              "IsolationForest's small subsamples isolate such clusters. Its parameters are "
              'the defaults (nothing to judge a grid by).')
    else:
      why += 'the only candidate.'
  if chosen in methods.UNSUPERVISED:
    if reference == 'normal':
      why += (f" It learned what normal traffic looks like from the "
              f"{finals[chosen]['training_rows']:,} train-split records labelled normal "
              '(reference=normal): it never sees an attack '
              'while training, so it flags any traffic unlike normal, including attack '
              'families it has never seen. Learning density from all records would call '
              'whatever dominates the archive normal; in the KDD Cup data that is the smurf '
              'and neptune floods (about 80% of records).')
    else:
      why += (' It learned from all records (reference=all): this assumes that attacks are a '
              'small minority of the archive, as on a real network; records labelled normal '
              'make a better reference when there are any.')
  else:
    why += (' A supervised classifier of the labelled attack column, with balanced class '
            'weights for the rare attack class; unseen categories fall into an '
            '"infrequent" column.')
  final = finals[chosen]
  why += f" Alert threshold {final['threshold']:.6g}: {final['threshold_rule']}."
  gate_metric = metric if info['has_labels'] else evaluation.UNLABELLED_METRIC
  result = {
      'detector': config.detector, 'input': source[0], 'input_format': source[1],
      'stats': stats, 'sample': info, 'metric': metric, 'gate_metric': gate_metric,
      'cv': training.summarise_cv(cv_results, metric), 'cv_folds': config.folds,
      'cv_tasks': len(cv_results), 'finals': finals, 'chosen': chosen, 'why': why,
      'champion': champion,
  }
  training.write_json(FileSystems.join(config.staging_dir, RESULT_FILE), result)
  return result


def build(pipeline: beam.Pipeline, config: training.RetrainConfig, pattern: str,
          input_format: str, sample_rows: int) -> None:
  prepared = (pipeline
              | 'Read' >> ReadTrainingTables(config.detector, pattern, input_format)
              | 'Prepare' >> beam.ParDo(_Prepare(config.detector)))
  parts_dir = FileSystems.join(config.staging_dir, 'parts')
  info = (prepared
          | 'SampleBundles' >> beam.ParDo(_SampleBundles(config.detector, sample_rows,
                                                         parts_dir))
          | 'CollectParts' >> beam.combiners.ToList()
          | 'MergeAndStage' >> beam.Map(_merge_and_stage, config=config, k=sample_rows))
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
  _ = info | 'Conclude' >> beam.Map(
      conclude, cv_side, beam.pvalue.AsSingleton(finals),
      beam.pvalue.AsSingleton(champion), config=config, source=(pattern, input_format))


# ---- the launcher: gate, report, publish ------------------------------------------------------

def config_from(opts: RetrainOptions, staging_dir: str) -> training.RetrainConfig:
  import json
  chosen = () if opts.method in ('auto', '') else tuple(
      m.strip() for m in opts.method.split(',') if m.strip())
  unknown = [m for m in chosen if m not in methods.METHODS]
  if unknown:
    raise SystemExit(f'--method: unknown {unknown}; expected auto or {", ".join(methods.METHODS)}')
  try:
    grid = json.loads(opts.param_grid) if opts.param_grid else opts.grid
  except ValueError as e:
    raise SystemExit(f'--param_grid is not JSON: {e}') from None
  if opts.sample_rows < 100:
    raise SystemExit('--sample_rows must be at least 100')
  if not 0 < opts.alert_rate < 1:
    raise SystemExit('--alert_rate must be between 0 and 1')
  return training.RetrainConfig(
      detector=opts.detector, model_dir=opts.view_as(ModelRegistryOptions).model_dir,
      staging_dir=staging_dir,
      methods=chosen, grid=grid, folds=opts.folds, grid_rows=opts.grid_rows,
      alert_rate=opts.alert_rate, threshold_policy=opts.threshold_policy,
      reference=opts.reference, select_metric=opts.select_metric, n_jobs=opts.n_jobs,
      seed=opts.seed)


def publish(result: dict[str, Any], config: training.RetrainConfig, opts: RetrainOptions,
            signing_key: Optional[signing.SigningKey] = None) -> dict[str, Any]:
  """The gate, the report and the publication, signed with ``signing_key``. Returns the
  decision."""
  chosen = result['chosen']
  final = result['finals'][chosen]
  champion = result.get('champion')
  metric = result['gate_metric']
  publish_it, reason = evaluation.gate(final['metrics'], (champion or {}).get('metrics')
                                       if champion and not champion.get('error') else champion,
                                       metric, opts.gate_tolerance, opts.force)
  if opts.no_publish:
    publish_it, reason = False, f'--no_publish (the gate would have said: {reason})'
  version = registry.new_version()
  decision = {'publish': publish_it, 'reason': reason, 'metric': metric,
              'tolerance': opts.gate_tolerance, 'version': version if publish_it else None,
              'champion': champion.get('version') if champion else None}
  evals = {name: training.read_arrays(f['eval_path']) for name, f in result['finals'].items()}
  if champion and champion.get('eval_path'):
    evals['champion'] = training.read_arrays(champion['eval_path'])
  detector_dir = FileSystems.join(config.model_dir, config.detector)
  target = FileSystems.join(detector_dir, version if publish_it else f'.candidates/{version}')
  page = report.render(result, evals, decision)
  decision['report'] = report.write(target, page)
  if publish_it:
    # A staged candidate is skops (only trusted types are built); a joblib one exists only
    # when skops cannot hold the model (registry.dumps_model), as its registry copy will be.
    model_format = final.get('model_format', 'skops')
    estimator = registry.loads_model(training.read_bytes(final['model_path']), model_format,
                                     allow_pickle=model_format == 'joblib')
    decision['version'] = registry.publish(
        config.model_dir, config.detector, estimator, signing_key=signing_key,
        feature_columns=list(config.schema.feature_columns),
        training_rows=final['training_rows'],
        training_time_range=tuple(result['stats']['time_range']),
        parameters=_manifest_parameters(result, config, opts),
        metrics=_manifest_metrics(result, decision), version=version)
  return decision


_HEADLINE = ('roc_auc', 'pr_auc', 'precision', 'recall', 'f1', 'alert_rate',
             'false_positive_rate', 'contrast_auc')


def _manifest_parameters(result, config, opts) -> dict[str, Any]:
  chosen = result['chosen']
  final = result['finals'][chosen]
  return {
      'method': chosen, 'method_description': methods.describe(chosen),
      'params': final['params'], 'choice': result['why'],
      'reference': result['sample']['reference'],
      'threshold_policy': config.policy, 'alert_rate': config.alert_rate,
      'threshold_rule': final['threshold_rule'], 'select_metric': result['metric'],
      'methods_tried': result['sample']['methods'], 'grid': config.grid,
      'folds': config.folds, 'grid_rows': config.grid_rows, 'sample_rows': opts.sample_rows,
      'seed': config.seed, 'input': result['input'], 'input_format': result['input_format'],
      'rows_read': result['stats']['rows'], 'duplicates_dropped': result['stats']['duplicates'],
      'sample_split_rows': result['sample']['split_rows'],
      'sample_time_range': result['sample']['sample_time_range'],
      'report': report.REPORT_FILE,
  }


def _manifest_metrics(result, decision) -> dict[str, Any]:
  chosen = result['chosen']
  test = result['finals'][chosen]['metrics']
  champion = result.get('champion') or {}
  return {
      **{k: test.get(k) for k in _HEADLINE},
      'test': test,
      'methods': {m: {k: f['metrics'].get(k) for k in _HEADLINE}
                  for m, f in result['finals'].items()},
      'cv': result['cv'],
      'champion': ({'version': champion.get('version'), 'error': champion.get('error'),
                    **{k: (champion.get('metrics') or {}).get(k) for k in _HEADLINE}}
                   if champion else None),
      'gate': {k: decision[k] for k in ('publish', 'reason', 'metric', 'tolerance')},
  }


def print_summary(result: dict[str, Any], decision: dict[str, Any], seconds: float,
                  out=None) -> None:
  stats, sample = result['stats'], result['sample']
  chosen = result['chosen']
  final = result['finals'][chosen]
  lines = [
      f"\nRetrain summary: {result['detector']} detector, {seconds:.0f} s",
      f"  input           {result['input']} ({result['input_format']})",
      f"  rows read       {stats['rows']:,}   duplicate uuids dropped {stats['duplicates']:,}"
      + ('   event time {} .. {}'.format(*stats['time_range']) if stats['time_range'][0]
         else '   event time unknown'),
      f"  sample          {sample['rows']:,} rows (train/calibration/test "
      + '/'.join(f"{sample['split_rows'][s]:,}" for s in dataset.SPLITS)
      + f"), labelled {sample['labelled_rows']:,}, attacks {sample['attack_rows']:,}"
      + (f", reference {sample['reference']}" if set(sample['methods']) & set(methods.UNSUPERVISED)
         else ''),
      f"  grid search     {result['cv_tasks']} fits (grid point x fold)",
      f"  chosen          {chosen} {final['params']}",
      f"  why             {result['why']}",
      '  test metrics    ' + '  '.join(
          f'{k} {final["metrics"][k]:.4f}' for k in _HEADLINE
          if final['metrics'].get(k) is not None),
  ]
  for method, fin in result['finals'].items():
    if method != chosen:
      lines.append(f'  {method:<16} ' + '  '.join(
          f'{k} {fin["metrics"][k]:.4f}' for k in _HEADLINE
          if fin['metrics'].get(k) is not None))
  champion = result.get('champion')
  if champion:
    lines.append(f"  current model   {champion.get('version')}: " + (
        champion.get('error') or '  '.join(
            f'{k} {champion["metrics"][k]:.4f}' for k in _HEADLINE
            if champion['metrics'].get(k) is not None)))
  if decision['publish']:
    lines.append(f"  PUBLISHED       version {decision['version']} ({decision['reason']})")
  else:
    lines.append(f"  NOT PUBLISHED   {decision['reason']}")
  lines.append(f"  report          {decision['report']}")
  print('\n'.join(lines), file=out or sys.stdout)


def _keys(opts: RetrainOptions
          ) -> tuple[Optional[signing.SigningKey], Optional[signing.PublicKeys]]:
  """The key that signs what this run publishes (checked before any training: a run that
  cannot publish fails at once) and the public keys the current model must verify against:
  the readers' (--model_public_key or the default file, when there) and the signing key's."""
  signing_key = None
  if not opts.no_publish:
    try:
      signing_key = signing.SigningKey.load(opts.model_signing_key)
    except signing.KeyFileError as e:
      raise SystemExit(f'cannot publish without the model signing key: {e}') from None
  try:
    public_keys = signing.reader_keys(opts.view_as(ModelRegistryOptions).model_public_key)
  except signing.KeyFileError:
    public_keys = None
  if signing_key is not None:
    public_keys = signing_key.public if public_keys is None else public_keys + signing_key.public
  return signing_key, public_keys


def run(argv: Optional[Sequence[str]] = None) -> dict[str, Any]:
  """Runs the job; returns ``{'result': ..., 'decision': ..., 'seconds': ...}``."""
  with runners.job_server(runners.with_runner_defaults(argv or [], runners.BATCH)) as args:
    return _run(args)


def _run(argv: Sequence[str]) -> dict[str, Any]:
  options = PipelineOptions(argv)
  opts = options.view_as(RetrainOptions)
  if not opts.detector or not opts.input:
    raise SystemExit('--detector and --input are required (see --help)')
  # --input is resolved and the registry read before the pipeline exists (pipelines.storage).
  storage.configure(options)
  if storage.uses_s3(opts.input, opts.view_as(ModelRegistryOptions).model_dir, opts.staging_dir):
    log.info('%s', storage.describe(options))
  # Workers import this project's packages; on a cluster they get them from --setup_file.
  options.view_as(SetupOptions).save_main_session = False
  pattern, input_format = resolve_input(opts.input, opts.detector, opts.input_format)
  run_id = f'{registry.new_version()}-{uuid.uuid4().hex[:6]}'
  staging_dir = opts.staging_dir or FileSystems.join(
      opts.view_as(ModelRegistryOptions).model_dir, '.staging', f'{opts.detector}-{run_id}')
  signing_key, public_keys = _keys(opts)
  config = dataclasses.replace(config_from(opts, staging_dir), public_keys=public_keys)
  log.info('retraining %s from %s (%s); staging in %s', opts.detector, pattern, input_format,
           staging_dir)
  started = time.perf_counter()
  try:
    pipeline = beam.Pipeline(options=options)
    build(pipeline, config, pattern, input_format, opts.sample_rows)
    pipeline.run().wait_until_finish()
    log.info('pipeline done in %.1fs', time.perf_counter() - started)
    result = training.read_json(FileSystems.join(staging_dir, RESULT_FILE))
    decision = publish(result, config, opts, signing_key)
  finally:
    if not opts.keep_staging:
      _remove(staging_dir)
  seconds = time.perf_counter() - started
  print_summary(result, decision, seconds)
  return {'result': result, 'decision': decision, 'seconds': seconds}


def help_parser() -> argparse.ArgumentParser:
  return job_options.help_parser(
      'python -m pipelines.retrain', '%(prog)s --detector D --input PATH [options]', __doc__,
      [RetrainOptions], [('Beam: direct runner', DirectOptions)])


def _remove(directory: str) -> None:
  """Deletes the run's staging dir (Beam's filesystems delete folders recursively)."""
  try:
    FileSystems.delete([directory if '://' not in directory else directory.rstrip('/') + '/'])
    parent = os.path.dirname(directory.rstrip('/'))
    if '://' not in directory and os.path.basename(parent) == '.staging' and not os.listdir(
        parent):
      os.rmdir(parent)
  except Exception:  # pylint: disable=broad-except
    log.warning('could not remove the staging dir %s', directory, exc_info=True)


def main(argv: Optional[Sequence[str]] = None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  if {'-h', '--help'} & set(argv):
    help_parser().print_help()
    return 0
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(name)s: %(message)s',
                      force=True)
  for noisy in ('apache_beam', 'absl', 'FlinkJarJobServer'):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  try:
    run(argv)
  except SystemExit:
    raise
  except Exception as e:  # pylint: disable=broad-except
    log.debug('retrain failed', exc_info=True)
    # Beam wraps a worker's error in its own; the last line is the one that says what is wrong.
    lines = [l for l in str(e).strip().splitlines() if l.strip()]
    print(f'\nretrain failed: {lines[-1] if lines else type(e).__name__}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
