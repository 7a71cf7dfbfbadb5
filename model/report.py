"""The model report: one self-contained HTML page beside each version (``report.html``).

ROC and PR curves (the new model, every method tried, the current model), the confusion
matrix at the alert threshold, score histograms per class with the threshold, and feature
importances, drawn with matplotlib into PNGs embedded in the page, plus the tables a person
needs to judge the model: what was chosen and why, held-out metrics, per-family detection,
the grid search, the gate's decision. Written through Beam's ``FileSystems``, so a model dir
on ``s3://`` or ``gs://`` works like a local one.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
from typing import Any, Optional

import numpy as np
from sklearn.metrics import (average_precision_score, precision_recall_curve, roc_auc_score,
                             roc_curve)

from apache_beam.io.filesystems import FileSystems

from model import criteria, evaluation, methods, selection
from model.results import Decision, TrainingSummary

REPORT_FILE = 'report.html'
_COLORS = ('#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b')


def _pyplot():
  # Imported when a report is drawn: only the retrain launcher draws one, and matplotlib is
  # the heaviest import of the model package (workers and the stream never need it).
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  return plt


def _png(fig) -> str:
  plt = _pyplot()
  buffer = io.BytesIO()
  fig.savefig(buffer, format='png', dpi=90, bbox_inches='tight')
  plt.close(fig)
  return base64.b64encode(buffer.getvalue()).decode('ascii')


def _has_both(y) -> bool:
  y = np.asarray(y)
  return bool((y == 1).sum()) and bool((y == 0).sum())


def roc_pr_figure(series: list[tuple[str, np.ndarray, np.ndarray]]) -> Optional[str]:
  """series: (name, y, scores); rows with y < 0 are ignored."""
  plt = _pyplot()
  usable = [(n, np.asarray(y)[np.asarray(y) >= 0], np.asarray(s)[np.asarray(y) >= 0])
            for n, y, s in series]
  usable = [(n, y, s) for n, y, s in usable if _has_both(y)]
  if not usable:
    return None
  fig, (roc, pr) = plt.subplots(1, 2, figsize=(11, 4.6))
  for i, (name, y, s) in enumerate(usable):
    fpr, tpr, _ = roc_curve(y, s)
    precision, recall, _ = precision_recall_curve(y, s)
    color = _COLORS[i % len(_COLORS)]
    roc.plot(fpr, tpr, color=color, label=f'{name} (AUC {roc_auc_score(y, s):.3f})')
    pr.plot(recall, precision, color=color,
            label=f'{name} (AP {average_precision_score(y, s):.3f})')
  roc.plot([0, 1], [0, 1], ':', color='grey')
  roc.set(xlabel='false positive rate', ylabel='true positive rate', title='ROC (test split)')
  pr.set(xlabel='recall', ylabel='precision', title='Precision-recall (test split)',
         ylim=(0, 1.02))
  roc.legend(loc='lower right', fontsize=8)
  pr.legend(loc='lower left', fontsize=8)
  return _png(fig)


def confusion_figure(matrix: list[list[int]], threshold: float) -> str:
  plt = _pyplot()
  matrix = np.asarray(matrix)
  fig, ax = plt.subplots(figsize=(4.4, 3.8))
  ax.imshow(matrix, cmap='Blues')
  for (i, j), value in np.ndenumerate(matrix):
    ax.text(j, i, f'{value:,}', ha='center', va='center',
            color='white' if value > matrix.max() / 2 else 'black')
  ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=['no alert', 'alert'],
         yticklabels=['normal', 'attack'], xlabel='prediction', ylabel='label',
         title=f'Confusion matrix at threshold {threshold:.4g}')
  return _png(fig)


def histogram_figure(y: np.ndarray, scores: np.ndarray, threshold: float,
                     contrast_scores: Optional[np.ndarray] = None) -> str:
  plt = _pyplot()
  y = np.asarray(y)
  scores = np.asarray(scores, dtype=float)
  fig, ax = plt.subplots(figsize=(8, 3.8))
  everything = np.concatenate([scores, np.asarray(contrast_scores if contrast_scores is not None
                                                  else [], dtype=float)])
  low, high = float(everything.min(initial=0.0)), float(everything.max(initial=1.0))
  bins = np.linspace(low, high if high > low else low + 1.0, 60)
  groups = [('normal', y == 0), ('attack', y == 1), ('unlabelled', y < 0)]
  for (name, mask), color in zip(groups, _COLORS):
    if mask.any():
      ax.hist(scores[mask], bins=bins, alpha=.55, color=color, label=f'{name} ({mask.sum():,})')
  if contrast_scores is not None and len(contrast_scores):
    ax.hist(contrast_scores, bins=bins, histtype='step', color='black',
            label=f'synthetic contrast ({len(contrast_scores):,})')
  ax.axvline(threshold, color='red', linestyle='--', label=f'threshold {threshold:.4g}')
  ax.set(yscale='log', xlabel='anomaly score', ylabel='records (log)',
         title='Score distribution on the test split')
  ax.legend(fontsize=8)
  return _png(fig)


def importance_figure(importances: dict[str, dict[str, float]], top: int = 20
                      ) -> Optional[str]:
  panels = [(k, v) for k, v in importances.items() if v]
  if not panels:
    return None
  plt = _pyplot()
  fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 0.32 * top + 1.2),
                           squeeze=False)
  titles = {'score_sensitivity': 'Score change when the column is shuffled',
            'model': "Model's own importance (summed per column)"}
  for ax, (name, values) in zip(axes[0], panels):
    items = sorted(values.items(), key=lambda kv: kv[1], reverse=True)[:top][::-1]
    ax.barh([k for k, _ in items], [v for _, v in items], color=_COLORS[0])
    ax.set(title=titles.get(name, name))
    ax.tick_params(axis='y', labelsize=8)
  fig.tight_layout()
  return _png(fig)


# ---- the page --------------------------------------------------------------------------------

def _value(v) -> str:
  if v is None:
    return '&ndash;'
  if isinstance(v, bool):
    return 'yes' if v else 'no'
  if isinstance(v, float):
    return f'{v:.4f}' if abs(v) < 1000 else f'{v:,.0f}'
  if isinstance(v, int):
    return f'{v:,}'
  if isinstance(v, (dict, list)):
    return html.escape(json.dumps(v, default=str))
  return html.escape(str(v))


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
  head = ''.join(f'<th>{html.escape(c)}</th>' for c in columns)
  body = ''.join('<tr>' + ''.join(f'<td>{_value(r.get(c))}</td>' for c in columns) + '</tr>'
                 for r in rows)
  return f'<table><tr>{head}</tr>{body}</table>'


def _image(data: Optional[str], alt: str) -> str:
  if not data:
    return f'<p class="note">({html.escape(alt)}: not available, see the note above)</p>'
  return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


_METRICS = ('roc_auc', 'pr_auc', 'precision', 'recall', 'f1', 'alert_rate',
            'false_positive_rate', 'contrast_auc', 'rows', 'attack_rows')


def render(result: TrainingSummary, evals: dict[str, dict[str, np.ndarray]],
           decision: Decision) -> str:
  """The HTML page. ``result`` is the retrain result, ``evals`` the
  test-split arrays per model name ('challenger', each method, 'champion')."""
  chosen = result.chosen
  final = result.final
  metrics = final.metrics
  challenger = evals[chosen]
  title = f"{result.detector} model {decision.version or '(not published)'}"
  parts = [f'<h1>{html.escape(title)}</h1>',
           f'<p class="decision {"ok" if decision.publish else "refused"}">'
           f"<b>{'Published' if decision.publish else 'Not published'}</b>: "
           f"{html.escape(decision.reason)}</p>",
           '<h2>What was chosen and why</h2>',
           f"<p>{html.escape(result.why)}</p>",
           _table([{'parameter': k, 'value': v} for k, v in final.params.items()],
                  ['parameter', 'value'])]
  facts = [
      {'fact': 'input', 'value': result.input},
      {'fact': 'rows read', 'value': result.stats['rows']},
      {'fact': 'duplicate uuids dropped', 'value': result.stats['duplicates']},
      {'fact': 'event time range', 'value': ' .. '.join(
          str(t) for t in result.stats['time_range'])},
      {'fact': 'sample (train / calibration / test)', 'value': ' / '.join(
          f"{result.sample['split_rows'][s]:,}" for s in ('train', 'calibration', 'test'))},
      {'fact': 'rows the model was fit on', 'value': final.training_rows},
      {'fact': 'reference rows (unsupervised methods)', 'value': result.sample['reference']},
      {'fact': 'alert threshold', 'value': f"{final.threshold:.6g} ({final.threshold_rule})"},
      {'fact': 'fit time, s', 'value': round(final.fit_seconds, 1)},
  ]
  parts += ['<h2>Data</h2>', _table(facts, ['fact', 'value'])]

  rows = []
  for name, fin in result.finals.items():
    rows.append({'model': f'{name}{" (chosen)" if name == chosen else ""}',
                 **{k: fin.metrics.get(k) for k in _METRICS}})
  champion = result.champion
  if champion and champion.metrics:
    rows.append({'model': f"current {champion.version}",
                 **{k: champion.metrics.get(k) for k in _METRICS}})
  parts += ['<h2>Held-out metrics (test split)</h2>',
            '<p class="note">precision, recall, F1, alert and false-positive rates are at each '
            'model\'s own alert threshold. contrast_auc is label-free: how well the score '
            'separates real test records from synthetic ones with the same column '
            'distributions.</p>', _table(rows, ['model', *_METRICS])]
  if champion and champion.error:
    parts.append(f"<p class='note'>Current model {html.escape(str(champion.version))} "
                 f"could not be evaluated: {html.escape(champion.error)}</p>")

  series = [(f'{name} (new)' if name == chosen else name, evals[name]['y'],
             evals[name]['scores']) for name in result.finals if name in evals]
  if 'champion' in evals:
    series.append((f"current {champion.version}", evals['champion']['y'],
                   evals['champion']['scores']))
  parts += ['<h2>ROC and precision-recall curves</h2>',
            _image(roc_pr_figure(series), 'ROC and PR curves')]
  labelled = challenger['y'] >= 0
  parts += ['<h2>At the alert threshold</h2>',
            _image(confusion_figure(metrics['confusion_matrix'], final.threshold)
                   if labelled.any() else None, 'confusion matrix'),
            _image(histogram_figure(challenger['y'], challenger['scores'], final.threshold,
                                    challenger.get('contrast_scores')), 'score histogram')]
  if metrics.get('per_label'):
    parts += ['<h3>Detection by label</h3>',
              _table([{'label': k, **v} for k, v in metrics['per_label'].items()],
                     ['label', 'rows', 'flagged'])]
  if metrics.get('operating_points'):
    parts += ['<h3>Other alert rates</h3><p class="note">The threshold each target alert rate '
              '(share of normal calibration records above it) would give, and what it does on '
              'the test split: <code>--alert_rate</code> chooses.</p>',
              _table(metrics['operating_points'], ['target_alert_rate', 'threshold',
                                                   'alert_rate', 'false_positive_rate',
                                                   'precision', 'recall'])]
  parts += ['<h2>Feature importances</h2>',
            _image(importance_figure(final.importances), 'feature importances')]
  if result.metric == criteria.CRITERION:
    parts += criterion_section(result)
  elif result.cv:
    parts += [f"<h2>Grid search ({result.cv_folds} folds, metric {result.metric})</h2>",
              _table(result.cv, ['method', 'params', 'mean', 'std', 'mean_other', 'folds',
                                    'fit_seconds'])]
  parts += ['<h2>Gate</h2>', _table([dataclasses.asdict(decision)],
                                    ['publish', 'reason', 'metric', 'tolerance'])]
  style = ('body{font-family:sans-serif;max-width:1150px;margin:2em auto;color:#222}'
           'table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;'
           'padding:3px 8px;font-size:13px;text-align:left}th{background:#f3f3f3}'
           '.note{color:#555;font-size:13px}.decision{padding:.5em;border-radius:4px}'
           '.ok{background:#e6f4e6}.refused{background:#fbe9e7}img{max-width:100%}')
  return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title)}'
          f'</title><style>{style}</style></head><body>{"".join(parts)}</body></html>')


def criterion_figure(rows: list[dict[str, Any]], chosen: dict[str, Any]) -> Optional[str]:
  """One bar per candidate: its mass-volume area (lower is better), the chosen one marked."""
  if not rows:
    return None
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(8, 0.42 * len(rows) + 1.2))
  labels = [f"{r['method']} {r['point_text']}" for r in rows]
  colors = [_COLORS[2] if r is chosen else _COLORS[0] for r in rows]
  ax.barh(labels[::-1], [r['mean'] for r in rows][::-1], color=colors[::-1])
  ax.set(xlabel=f'{criteria.CRITERION} (lower is better)',
         title='Label-free criterion of every candidate')
  ax.tick_params(axis='y', labelsize=8)
  return _png(fig)


def criterion_section(result: TrainingSummary) -> list[str]:
  """For label-free models: the criterion that chose the model and every candidate on it."""
  parts = ['<h2>How the model was chosen without labels</h2>',
           f'<p>Criterion: <b>{html.escape(criteria.CRITERION)}</b>, the '
           f'{html.escape(criteria.describe())}. No label is read: each candidate is fitted on '
           'the train split and measured on the calibration split.</p>']
  if not result.cv:
    parts.append('<p class="note">Only one candidate (one method, one grid point): nothing '
                 'for the criterion to choose between.</p>')
    return parts
  chosen_params = result.final.params
  rows, chosen_row = [], None
  for row in result.cv:
    is_chosen = row['method'] == result.chosen and row.get('params') == chosen_params
    entry = {**row, 'point_text': _short_point(row), 'chosen': is_chosen,
             'candidate': f"{row['method']} {_short_point(row)}",
             criteria.CRITERION: row['mean'], 'spread over draws': row.get('draw_std')}
    rows.append(entry)
    if is_chosen:
      chosen_row = entry
  parts += [_table(rows, ['candidate', 'chosen', criteria.CRITERION, 'spread over draws',
                          'fit_seconds']),
            _image(criterion_figure(rows, chosen_row), 'label-free criterion per candidate')]
  finals = getattr(result, 'finals', None) or {}
  contrast = {m: selection.contrast_of(f) for m, f in finals.items()}
  contrast = {m: v for m, v in contrast.items() if v is not None}
  if len(contrast) > 1:
    parts += [
        f'<p>Between methods: <b>{html.escape(evaluation.UNLABELLED_METRIC)}</b> on the '
        'calibration split, how well each final model tells held-out records from synthetic '
        'ones whose columns are drawn independently (higher is better). The mass-volume area '
        'chooses only the grid point within a method: it refits each candidate on 5-feature '
        'draws, not the model that is published (docs/detection.md, "Choosing the method '
        'without labels").</p>',
        _table([{'method': m, 'chosen': m == result.chosen,
                 evaluation.UNLABELLED_METRIC: v} for m, v in sorted(contrast.items())],
               ['method', 'chosen', evaluation.UNLABELLED_METRIC])]
  return parts


def _short_point(row: dict[str, Any]) -> str:
  defaults = methods.DEFAULTS.get(row['method'], {})
  point = {k: v for k, v in (row.get('params') or {}).items() if defaults.get(k) != v}
  return ', '.join(f'{k}={v}' for k, v in sorted(point.items())) or '(defaults)'


def write(directory: str, page: str) -> str:
  """Writes ``report.html`` under ``directory`` (any Beam filesystem); returns its path."""
  if not FileSystems.exists(directory):
    FileSystems.mkdirs(directory)
  path = FileSystems.join(directory, REPORT_FILE)
  with FileSystems.create(path) as f:
    f.write(page.encode('utf-8'))
  return path
