"""The batch retrain job: archive (or KDD CSV) -> better model -> registry, with a report.

    python -m pipelines.retrain --help
    python -m pipelines.retrain --detector network --input output/archive/network \\
        --model_dir models
    python -m pipelines.retrain --detector network --input kddcup.data_10_percent.gz \\
        --model_dir models --alert_rate 0.01
    python -m pipelines.retrain --detector process --input 'output/archive/process/dt=*/*.parquet' \\
        --model_dir models --runner FlinkRunner --flink_master localhost:8081 \\
        --environment_type LOOPBACK

Where things are: this file is the entry point (options, run, summary); the input is
pipelines/retrain_input.py, the Beam graph pipelines/retrain_graph.py, the steps
model/training.py, the choice model/selection.py, the gate and manifest model/publishing.py,
the typed results model/results.py, the report model/report.py.

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
import json
import logging
import os
import sys
import time
import uuid
from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, SetupOptions

from pipelines import options as job_options, runners, storage
from pipelines.options import ModelRegistryOptions
from model import dataset, methods, publishing, registry, signing, training
from model.results import Decision, RetrainOutcome, TrainingSummary
from pipelines.retrain_graph import Retrain, read_result
from pipelines.retrain_input import resolve_input

log = logging.getLogger('pipelines.retrain')


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
                       'gaussian_mixture, rf_synthetic and isolation_forest when the data has '
                       'labels (held-out labels choose); without labels the gaussian_mixture, '
                       'its grid point chosen by the mass-volume criterion, with '
                       'isolation_forest beside it (docs/models.md); process/memory try hgb '
                       'and random_forest (supervised on the attack labels).')
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


# ---- the launcher: gate, report, publish ------------------------------------------------------

def config_from(opts: RetrainOptions, staging_dir: str) -> training.RetrainConfig:
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


def print_summary(result: TrainingSummary, decision: Decision, seconds: float,
                  out=None) -> None:
  stats, sample = result.stats, result.sample
  chosen, final = result.chosen, result.final
  headline = publishing.HEADLINE

  def figures(metrics):
    return '  '.join(f'{k} {metrics[k]:.4f}' for k in headline if metrics.get(k) is not None)

  lines = [
      f"\nRetrain summary: {result.detector} detector, {seconds:.0f} s",
      f"  input           {result.input} ({result.input_format})",
      f"  rows read       {stats['rows']:,}   duplicate uuids dropped {stats['duplicates']:,}"
      + ('   event time {} .. {}'.format(*stats['time_range']) if stats['time_range'][0]
         else '   event time unknown'),
      f"  sample          {sample['rows']:,} rows (train/calibration/test "
      + '/'.join(f"{sample['split_rows'][s]:,}" for s in dataset.SPLITS)
      + f"), labelled {sample['labelled_rows']:,}, attacks {sample['attack_rows']:,}"
      + (f", reference {sample['reference']}" if set(sample['methods']) & set(methods.UNSUPERVISED)
         else ''),
      f"  grid search     {result.cv_tasks} fits (grid point x fold)",
      f"  chosen          {chosen} {final.params}",
      f"  why             {result.why}",
      '  test metrics    ' + figures(final.metrics),
  ]
  for method, fin in result.finals.items():
    if method != chosen:
      lines.append(f'  {method:<16} ' + figures(fin.metrics))
  champion = result.champion
  if champion:
    lines.append(f"  current model   {champion.version}: "
                 + (champion.error or figures(champion.metrics)))
  if decision.publish:
    lines.append(f"  PUBLISHED       version {decision.version} ({decision.reason})")
  else:
    lines.append(f"  NOT PUBLISHED   {decision.reason}")
  lines.append(f"  report          {decision.report}")
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


def run(argv: Optional[Sequence[str]] = None) -> RetrainOutcome:
  """Runs the job: the pipeline, then (once, in the launcher) the gate and the publication."""
  with runners.job_server(runners.with_runner_defaults(argv or [], runners.BATCH)) as args:
    return _run(args)


def _run(argv: Sequence[str]) -> RetrainOutcome:
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
    _ = pipeline | 'Retrain' >> Retrain(config, pattern, input_format, opts.sample_rows)
    pipeline.run().wait_until_finish()
    log.info('pipeline done in %.1fs', time.perf_counter() - started)
    result = read_result(staging_dir)
    decision = publishing.publish(result, config, gate_tolerance=opts.gate_tolerance,
                                  force=opts.force, no_publish=opts.no_publish,
                                  sample_rows=opts.sample_rows, signing_key=signing_key)
  finally:
    if not opts.keep_staging:
      _remove(staging_dir)
  seconds = time.perf_counter() - started
  print_summary(result, decision, seconds)
  return RetrainOutcome(result=result, decision=decision, seconds=seconds)


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
