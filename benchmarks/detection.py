"""Benchmark (not a test): what the retrain's network model detects on the real KDD Cup 1999
10% file, beside a plain IsolationForest on the same rows in the same run.

    python -m benchmarks.detection                      # SA, http, smtp and the whole file
    python -m benchmarks.detection --subset SA --no-labelled
    python -m benchmarks.detection --kdd_file /data/kddcup.data_10_percent.gz --no-readme

The subsets are the anomaly-detection literature's (Goix 2016 and others; scikit-learn's
``fetch_kddcup99``): **SA** is every normal record plus 1% of the attack records, drawn with a
fixed seed; **http** and **smtp** are the records of that service with ``logged_in`` = 1. The
literature keeps 3 or 4 columns for http and smtp; here every model uses all 41 features.
**whole** is the whole file (80% smurf and neptune floods), scored on the SA rows.

For each subset the rows are written as a KDD CSV with every label set to ``normal`` (nobody
labels production traffic) and ``python -m pipelines.retrain --detector network`` trains and
publishes from it, through the same code as a user's run; the published model (loaded and
compiled for serving as the stream does) then scores every row of the subset, and the true
labels measure ROC-AUC. The IsolationForest baseline (scikit-learn's defaults: 100 trees,
256-record subsamples) is fitted on the same rows through the same preprocessor. With
``--labelled`` (default: on, for SA) the retrain also runs on the labelled rows (records
labelled normal as the reference; ``--grid small``).

Scoring cost: microseconds per record of the published model on batches of 1,000 records
(one thread, as a stream worker scores), timed in turn with today's forest (the real-vs-synthetic
RandomForest compiled to ONNX Runtime, model/serving.py) on the same batches.

Per-family coverage: on the whole file, the share of each attack family's records (families
with at least 50) that score above the model's alert threshold, for the model trained on the
whole file without labels, and for IsolationForest at the same alert rate.

Writes benchmarks/results/detection.json, detection_roc.png, detection_families.png, and the
table into benchmarks/README.md (section "Detection on real traffic").
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import logging
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Optional

import numpy as np
import pandas as pd
import threadpoolctl
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score, roc_curve

from benchmarks import common
from harness.scripts import ROOT
from model import methods, registry
from model.serving import compile_for_serving
from model.features import frame_from_columns, preprocessor
from pipelines import retrain
from schemas.kdd import COLUMNS, LABEL, read_kdd_csv
from schemas.records import NETWORK

KDD_FILE = os.path.join(os.path.dirname(ROOT), 'shared', 'data', 'kddcup.data_10_percent.gz')
SUBSETS = ('SA', 'http', 'smtp', 'whole')
GOALS = {'SA': 0.97, 'http': 0.995, 'smtp': 0.90}
LABELLED_GOAL = 0.995
SA_ATTACK_SHARE = 0.01
SEED = 0
BATCH = 1_000
TIMING_BATCHES = 20
MIN_FAMILY_ROWS = 50
README = os.path.join(ROOT, 'benchmarks', 'README.md')
START, END = '<!-- detection:start -->', '<!-- detection:end -->'


def subset_rows(frame: pd.DataFrame, name: str, seed: int = SEED) -> np.ndarray:
  """Row positions of a standard subset of the KDD file (see the module docstring)."""
  attack = (frame[LABEL] != 'normal').to_numpy()
  if name == 'SA':
    rng = np.random.default_rng(seed)
    attacks = np.flatnonzero(attack)
    chosen = rng.choice(attacks, int(round(len(attacks) * SA_ATTACK_SHARE)), replace=False)
    return np.sort(np.r_[np.flatnonzero(~attack), chosen])
  if name in ('http', 'smtp'):
    return np.flatnonzero((frame['service'] == name).to_numpy()
                          & (frame['logged_in'] == 1).to_numpy())
  if name == 'whole':
    return np.arange(len(frame))
  raise ValueError(f'unknown subset {name!r}; expected one of {SUBSETS}')


def write_csv(frame: pd.DataFrame, path: str, labelled: bool) -> str:
  """The rows as a KDD CSV file; unlabelled: every label ``normal.``."""
  out = frame.loc[:, list(COLUMNS)].copy()
  out[LABEL] = (out[LABEL] + '.') if labelled else 'normal.'
  with gzip.open(path, 'wt', compresslevel=1) as f:
    out.to_csv(f, header=False, index=False)
  return path


def model_input(frame: pd.DataFrame) -> pd.DataFrame:
  """The frame as the stream hands it to a model (model.features.frame_from_columns)."""
  return frame_from_columns(NETWORK, {c: frame[c].tolist() for c in NETWORK.feature_columns})


def run_retrain(csv: str, model_dir: str, extra: list[str]) -> tuple[Any, Any]:
  """One retrain through the product's CLI code; returns (outcome, the served model)."""
  outcome = retrain.run(['--detector', 'network', '--input', csv, '--model_dir', model_dir,
                         '--force', *extra])
  loaded = registry.load_for_serving(model_dir, 'network')
  return outcome, loaded


def isolation_forest_scores(X: pd.DataFrame, seed: int) -> np.ndarray:
  pipeline = preprocessor(NETWORK).fit(X)
  matrix = pipeline.transform(X)
  forest = IsolationForest(random_state=seed, n_jobs=-1).fit(matrix)
  return -forest.score_samples(matrix)


def microseconds_per_record(estimators: dict[str, Any], X: pd.DataFrame,
                            rounds: int = 3) -> dict[str, float]:
  """{name: microseconds per record}: up to TIMING_BATCHES batches of BATCH records, one thread,
  the estimators in turn in each round and the best round of each (the machine is shared:
  measured side by side, a load change hits all of them alike)."""
  batches = [X.iloc[i:i + BATCH] for i in range(0, min(len(X), BATCH * TIMING_BATCHES), BATCH)]
  records = sum(len(b) for b in batches)
  best = {name: float('inf') for name in estimators}
  with threadpoolctl.threadpool_limits(limits=1):
    for estimator in estimators.values():
      estimator.predict_proba(batches[0])
    for _ in range(rounds):
      for name, estimator in estimators.items():
        started = time.perf_counter()
        for batch in batches:
          estimator.predict_proba(batch)
        best[name] = min(best[name], time.perf_counter() - started)
  return {name: seconds / records * 1e6 for name, seconds in best.items()}


def todays_forest(X_normal: pd.DataFrame, seed: int):
  """The real-vs-synthetic forest as today's retrain publishes it, compiled for serving."""
  detector = methods.fit(NETWORK, 'rf_synthetic', {}, X_normal, random_state=seed)
  return compile_for_serving(detector)


def family_coverage(labels: np.ndarray, scores: np.ndarray, threshold: float
                    ) -> dict[str, float]:
  out = {}
  frame = pd.DataFrame({'label': labels, 'flagged': scores >= threshold})
  for label, group in frame.groupby('label'):
    if len(group) >= MIN_FAMILY_ROWS:
      out[str(label)] = float(group['flagged'].mean())
  return dict(sorted(out.items(), key=lambda kv: -int((labels == kv[0]).sum())))


def run(args) -> dict[str, Any]:
  if not os.path.exists(args.kdd_file):
    raise SystemExit(f'no KDD Cup file at {args.kdd_file} (--kdd_file)')
  common.log(f'reading {args.kdd_file}')
  frame = read_kdd_csv(args.kdd_file)
  y_all = (frame[LABEL] != 'normal').to_numpy().astype(int)
  work = args.work_dir or tempfile.mkdtemp(prefix='detection-')
  rows, curves, coverage = [], {}, {}
  sa = subset_rows(frame, 'SA', args.seed)
  timing_X = model_input(frame.iloc[sa[:BATCH * TIMING_BATCHES]])
  common.log('fitting today\'s forest (rf_synthetic on the SA normal records) for the timing')
  normal_sa = frame.iloc[sa][frame.iloc[sa][LABEL] == 'normal']
  forest = todays_forest(model_input(normal_sa.iloc[:50_000]), args.seed)
  runs = [(s, False) for s in args.subset]
  if args.labelled:
    runs += [(s, True) for s in args.subset if s == 'SA']
  for subset, labelled in runs:
    index = subset_rows(frame, subset, args.seed)
    rows_frame = frame.iloc[index].reset_index(drop=True)
    tag = f'{subset}{" labelled" if labelled else ""}'
    common.log(f'{tag}: {len(index):,} rows, {int(y_all[index].sum()):,} attacks; retraining')
    folder = os.path.join(work, tag.replace(' ', '-'))
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder)
    csv = write_csv(rows_frame, os.path.join(folder, 'input.csv.gz'), labelled)
    extra = ['--grid', 'small'] if labelled else []
    started = time.perf_counter()
    outcome, loaded = run_retrain(csv, os.path.join(folder, 'models'), extra)
    seconds = time.perf_counter() - started
    # Evaluated on the subset's rows; the whole file's model on the SA rows.
    eval_index = sa if subset == 'whole' else index
    X = model_input(frame.iloc[eval_index])
    y = y_all[eval_index]
    common.log(f'{tag}: scoring {len(X):,} rows with model {loaded.version} '
               f'({outcome.result.chosen})')
    scores = loaded.estimator.predict_proba(X)[:, 1]
    train_X = model_input(rows_frame)
    if_scores_train = isolation_forest_scores(train_X, args.seed)
    if_scores = (if_scores_train if subset != 'whole'
                 else if_scores_train[np.searchsorted(index, sa)])
    product_auc = float(roc_auc_score(y, scores))
    if_auc = float(roc_auc_score(y, if_scores))
    timing = microseconds_per_record({'product': loaded.estimator, 'forest': forest}, timing_X)
    us, forest_us = timing['product'], timing['forest']
    goal = LABELLED_GOAL if labelled and subset == 'SA' else GOALS.get(subset)
    row = {'subset': subset, 'labels': labelled, 'rows': int(len(index)),
           'attacks': int(y_all[index].sum()), 'evaluated_on': 'SA' if subset == 'whole' else subset,
           'chosen': outcome.result.chosen, 'params': outcome.result.final.params,
           'why': outcome.result.why, 'roc_auc': product_auc,
           'isolation_forest_roc_auc': if_auc, 'ratio': product_auc / if_auc if if_auc else None,
           'goal': goal, 'meets_goal': None if goal is None else product_auc >= goal,
           'us_per_record': us, 'todays_forest_us_per_record': forest_us,
           'criterion': [{'method': r['method'], 'params': r['params'], 'mean': r['mean']}
                         for r in outcome.result.cv], 'retrain_seconds': seconds,
           'version': loaded.version}
    rows.append(row)
    common.log(f'{tag}: product {product_auc:.4f} vs IsolationForest {if_auc:.4f}, '
               f'{us:.1f} us/record (forest {forest_us:.1f}), retrain {seconds:.0f} s')
    curves[tag] = {name: roc_curve(y, s)[:2] for name, s in
                   (('product', scores), ('IsolationForest', if_scores))}
    if subset == 'whole' and not labelled:
      whole_scores = loaded.estimator.predict_proba(model_input(frame))[:, 1]
      threshold = float(loaded.estimator.threshold)
      alert_rate = float((whole_scores >= threshold).mean())
      if_threshold = float(np.quantile(if_scores_train, 1.0 - alert_rate))
      labels = frame[LABEL].to_numpy(dtype=object)
      coverage = {'alert_rate': alert_rate, 'normal_alerted': float(
                      (whole_scores[y_all == 0] >= threshold).mean()),
                  'product': family_coverage(labels, whole_scores, threshold),
                  'isolation_forest': family_coverage(labels, if_scores_train, if_threshold)}
  if not args.work_dir:
    shutil.rmtree(work, ignore_errors=True)
  return {'measured': datetime.datetime.now(datetime.timezone.utc).strftime(
              '%Y-%m-%d %H:%M:%S UTC'),
          'machine': common.machine_info(), 'kdd_file': os.path.basename(args.kdd_file),
          'rows': rows, 'coverage': coverage,
          'curves': {k: {n: _thinned(*c) for n, c in v.items()} for k, v in curves.items()}}


def _thinned(fpr: np.ndarray, tpr: np.ndarray, points: int = 400) -> list[list[float]]:
  """About ``points`` points of a ROC curve for the JSON and the plot, its ends kept."""
  keep = np.unique(np.r_[np.arange(0, len(fpr), max(1, len(fpr) // points)), len(fpr) - 1])
  return [fpr[keep].tolist(), tpr[keep].tolist()]


def table(result: dict[str, Any]) -> str:
  lines = ['subset    labels  rows     attacks  product  IsolationForest  ratio  goal   '
           'us/record (today\'s forest)  chosen']
  for r in result['rows']:
    subset = r['subset'] if r['subset'] != 'whole' else 'whole>SA'
    goal = f"{r['goal']:.3f}" if r['goal'] else '  -  '
    lines.append(
        f"{subset:<10}{'yes' if r['labels'] else 'no':<8}{r['rows']:<9,}{r['attacks']:<9,}"
        f"{r['roc_auc']:<9.4f}{r['isolation_forest_roc_auc']:<17.4f}{r['ratio']:<7.3f}"
        f"{goal:<7}{r['us_per_record']:>6.1f} ({r['todays_forest_us_per_record']:.1f})"
        f"{'':15}{r['chosen']}")
  coverage = result.get('coverage') or {}
  if coverage.get('product'):
    lines += ['', f"whole file, no labels: alert rate {coverage['alert_rate']:.4f}, normal "
              f"records alerted {coverage['normal_alerted']:.4f}; share of each family "
              'above the threshold (IsolationForest at the same alert rate):']
    for label, share in coverage['product'].items():
      lines.append(f"  {label:<14}{share:7.3f}  ({coverage['isolation_forest'].get(label, 0):.3f})")
  return '\n'.join(lines)


def plots(result: dict[str, Any], results_dir: str) -> None:
  plt = common.pyplot()
  curves = result['curves']
  fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 4), squeeze=False)
  aucs = {(f"{r['subset']}{' labelled' if r['labels'] else ''}"): r for r in result['rows']}
  for ax, (tag, series) in zip(axes[0], curves.items()):
    r = aucs[tag]
    for name, (fpr, tpr) in series.items():
      auc = r['roc_auc'] if name == 'product' else r['isolation_forest_roc_auc']
      ax.plot(fpr, tpr, label=f'{name} {auc:.3f}')
    ax.plot([0, 1], [0, 1], ':', color='grey')
    ax.set(title=tag if r['subset'] != 'whole' else 'whole file -> SA', xlabel='FPR',
           ylabel='TPR')
    ax.legend(loc='lower right', fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(results_dir, 'detection_roc.png'), dpi=80)
  plt.close(fig)
  coverage = result.get('coverage') or {}
  if coverage.get('product'):
    families = list(coverage['product'])
    fig, ax = plt.subplots(figsize=(9, 3.8))
    x = np.arange(len(families))
    ax.bar(x - 0.2, [coverage['product'][f] for f in families], 0.4, label='product model')
    ax.bar(x + 0.2, [coverage['isolation_forest'].get(f, 0) for f in families], 0.4,
           label='IsolationForest, same alert rate')
    ax.set_xticks(x, families, rotation=30, ha='right')
    ax.set(ylabel='share above threshold', ylim=(0, 1.05),
           title='Whole file, no labels: share of each label above the alert threshold')
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(results_dir, 'detection_families.png'), dpi=80)
    plt.close(fig)


def update_readme(result: dict[str, Any], readme: str = README) -> None:
  machine = result['machine']
  section = '\n'.join([
      START, f"`python -m benchmarks.detection`, measured {result['measured']} on "
      f"{common.machine_line(machine)}.", '', '```', table(result), '```', '',
      '![ROC curves](results/detection_roc.png)', '',
      '![per-family coverage](results/detection_families.png)', END])
  with open(readme, encoding='utf-8') as f:
    text = f.read()
  if START in text and END in text:
    text = text[:text.index(START)] + section + text[text.index(END) + len(END):]
  else:
    text = text.rstrip('\n') + '\n\n## Detection on real traffic\n\n' + section + '\n'
  with open(readme, 'w', encoding='utf-8') as f:
    f.write(text)


def parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog='python -m benchmarks.detection', description=__doc__.split('\n\n')[0],
      epilog='See the module docstring (and benchmarks/README.md) for what is measured.',
      formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument('--kdd_file', default=KDD_FILE, help='The KDD Cup 1999 10%% file, plain or '
                 'gzip (default: %(default)s).')
  p.add_argument('--subset', action='append', choices=SUBSETS, default=None,
                 help='A subset to measure (repeatable; default: all of ' + ', '.join(SUBSETS)
                 + ').')
  p.add_argument('--labelled', action=argparse.BooleanOptionalAction, default=True,
                 help='Also retrain on the labelled SA rows (default: yes).')
  p.add_argument('--seed', type=int, default=SEED, help='Seed of the SA draw and of the '
                 'models (default: %(default)s).')
  p.add_argument('--work_dir', default=None, help='Keep the CSVs and registries here '
                 '(default: a temporary folder, removed).')
  p.add_argument('--results_dir', default=common.DEFAULT_RESULTS,
                 help='Where detection.json and the plots go (default: %(default)s).')
  p.add_argument('--readme', action=argparse.BooleanOptionalAction, default=True,
                 help='Write the table into benchmarks/README.md (default: yes).')
  return p


def main(argv: Optional[list[str]] = None) -> int:
  args = parser().parse_args(argv)
  args.subset = args.subset or list(SUBSETS)
  # The retrain's own progress lines (criterion, cross-validation, fits) as its CLI shows them.
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(name)s: %(message)s')
  for noisy in ('apache_beam', 'absl', 'FlinkJarJobServer'):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  result = run(args)
  print(table(result))
  path = common.write_json(args.results_dir, 'detection', result)
  plots(result, args.results_dir)
  common.log(f'wrote {path} and the plots')
  if args.readme:
    update_readme(result)
  return 0


if __name__ == '__main__':
  sys.exit(main())
