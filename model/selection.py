"""Model selection, in one place: the best grid point of each method (cross-validation on the
train split), the method to publish among the candidates, and why, in words a person can check
(``result.why``, the report, the manifest's ``choice``).

Which methods are candidates is the detector's (model.methods.auto_methods); the gate that
compares the chosen model with the published one is model.evaluation.gate.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from model import criteria, evaluation, methods
from model.results import CandidateResult, SelectionResult


def selection_metric(config, info: dict[str, Any]) -> str:
  """What chooses the grid point (and the method): a held-out label metric, or without labels
  the label-free criterion."""
  return config.metric if info['has_labels'] else criteria.CRITERION


def better(metric: str, value: float) -> float:
  """``value`` turned so that larger is better (the mass-volume area is better smaller)."""
  return -value if metric == criteria.CRITERION else value


def summarise_cv(results: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
  """One row per (method, grid point): mean and spread of the metric over folds."""
  rows: dict[tuple, dict[str, Any]] = {}
  for r in results:
    row = rows.setdefault((r['method'], r['point']), {
        'method': r['method'], 'point': r['point'], 'params': r['params'], 'folds': 0,
        'values': [], 'other': [], 'fit_seconds': 0.0})
    row['folds'] += 1
    row['values'].append(r.get(metric))
    row['other'].append(None if metric == criteria.CRITERION
                        else r.get('pr_auc' if metric == 'roc_auc' else 'roc_auc'))
    row['fit_seconds'] += r['fit_seconds']
    if r.get(f'{criteria.CRITERION}_draws'):
      row['draw_std'] = float(np.std(r[f'{criteria.CRITERION}_draws']))
  out = []
  for row in rows.values():
    values = [v for v in row.pop('values') if v is not None]
    other = [v for v in row.pop('other') if v is not None]
    row['mean'] = float(np.mean(values)) if values else None
    row['std'] = float(np.std(values)) if values else None
    row['mean_other'] = float(np.mean(other)) if other else None
    out.append(row)
  return sorted(out, key=lambda r: (r['method'], -better(metric, r['mean'] if r['mean'] is not None
                                                          else -1e9), r['fit_seconds']))


def best_points(config, info: dict[str, Any],
                cv_results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
  """{method: its best grid point's row} (defaults when there was no CV)."""
  metric = selection_metric(config, info)
  summary = summarise_cv(cv_results, metric)
  best = {}
  for method in info['methods']:
    rows = [r for r in summary if r['method'] == method and r['mean'] is not None]
    if rows:
      best[method] = max(rows, key=lambda r: (better(metric, r['mean']), -r['fit_seconds']))
    else:
      best[method] = {'method': method,
                      'params': methods.default_params(method, info['has_labels']),
                      'mean': None, 'std': None, 'folds': 0}
  return best


def choose(config, info: dict[str, Any], cv_results: list[dict[str, Any]],
           finals: dict[str, CandidateResult]) -> SelectionResult:
  """The candidate to publish and why: the best mean cross-validated metric; without a grid
  search the best calibration metric; without labels the first (or only) method."""
  best = best_points(config, info, cv_results)
  metric = selection_metric(config, info)
  scored = {m: b['mean'] for m, b in best.items() if b.get('mean') is not None}
  if scored and not info['has_labels']:
    chosen, why = _label_free_choice(config, info, best, scored, finals)
  elif scored:
    chosen = max(scored, key=scored.get)
    others = ', '.join(f'{m} {v:.4f}' for m, v in sorted(scored.items()) if m != chosen)
    why = (f'{chosen} ({methods.describe(chosen)}) has the best mean {metric} over '
           f'{config.folds} cross-validation folds of the train split: {scored[chosen]:.4f}'
           + (f' (vs {others})' if others else '') + '.')
  elif info['has_labels'] and len(finals) > 1:
    by_calibration = {m: f.metrics['calibration'].get(metric) or -1 for m, f in finals.items()}
    chosen = max(by_calibration, key=by_calibration.get)
    why = f'{chosen} has the best {metric} on the calibration split (no grid search).'
  else:
    chosen = info['methods'][0]
    why = f'{chosen} ({methods.describe(chosen)}): '
    if len(info['methods']) > 1:
      why += 'the first method asked for; without labels nothing can tell them apart.'
    elif config.methods:
      why += 'the method asked for.'
    elif not info['has_labels'] and not config.schema.supervised_by_default:
      why += ('the default without labels: the real-vs-synthetic forest learns every frequent '
              'pattern as normal, floods of near-identical attack records included, while '
              "IsolationForest's small subsamples isolate such clusters. Its parameters are "
              'the defaults (nothing to judge a grid by).')
    else:
      why += 'the only candidate.'
  why += _what_it_learned(chosen, info['reference'], finals[chosen])
  final = finals[chosen]
  why += f' Alert threshold {final.threshold:.6g}: {final.threshold_rule}.'
  gate_metric = metric if info['has_labels'] else evaluation.UNLABELLED_METRIC
  return SelectionResult(chosen=chosen, why=why, metric=metric, gate_metric=gate_metric,
                         cv=summarise_cv(cv_results, metric))


def contrast_of(final: CandidateResult) -> Optional[float]:
  """A final candidate's contrast AUC on the calibration split (None when not measured)."""
  return (final.metrics.get('calibration') or {}).get(evaluation.UNLABELLED_METRIC)


def _label_free_choice(config, info, best, scored, finals) -> tuple[str, str]:
  """Without labels: within each method, the grid point of the lowest mass-volume area;
  between methods, the best contrast AUC on the calibration split (how well the score tells
  held-out records from synthetic ones whose columns are drawn independently). The
  mass-volume area cannot rank methods: it refits each on 5-feature draws, not the published
  model, and on the real KDD subsets it ranks IsolationForest first where the mixture ranks
  attacks higher (docs/detection.md, "Choosing the method without labels")."""
  contrast = {m: contrast_of(finals[m]) for m in scored if m in finals}
  contrast = {m: v for m, v in contrast.items() if v is not None}
  if len(contrast) > 1:
    chosen = max(contrast, key=lambda m: (contrast[m], -scored[m]))
    others = ', '.join(f'{m} {v:.5f}' for m, v in sorted(contrast.items()) if m != chosen)
    why = (f'{chosen} ({methods.describe(chosen)}) has the best {evaluation.UNLABELLED_METRIC} '
           f'on the calibration split, {contrast[chosen]:.5f} (vs {others}): how well its score '
           'tells held-out records from synthetic ones whose columns are drawn independently, '
           'the label-free criterion between methods. Its grid point has the lowest '
           f'{criteria.CRITERION} ({criteria.describe()}): {_point_text(best[chosen])} at '
           f'{scored[chosen]:.5f}'
           + ''.join(f'; {m} {criteria.CRITERION} {v:.5f}' for m, v in sorted(scored.items())
                     if m != chosen) + '.')
    return chosen, why
  chosen = min(scored, key=scored.get)
  others = ', '.join(f'{m} {v:.5f}' for m, v in sorted(scored.items()) if m != chosen)
  why = (f'{chosen} ({methods.describe(chosen)}) has the lowest {criteria.CRITERION} '
         f'({criteria.describe()}): {scored[chosen]:.5f}' + (f' (vs {others})' if others else '')
         + '.')
  return chosen, why


def _point_text(row) -> str:
  defaults = methods.DEFAULTS.get(row['method'], {})
  point = {k: v for k, v in (row.get('params') or {}).items() if defaults.get(k) != v}
  return str(point) if point else '(defaults)'


def _what_it_learned(method: str, reference: str, final: CandidateResult) -> str:
  if method not in methods.UNSUPERVISED:
    return (' A supervised classifier of the labelled attack column, with balanced class '
            'weights for the rare attack class; unseen categories fall into an '
            '"infrequent" column.')
  if reference == 'normal':
    return (f' It learned what normal traffic looks like from the {final.training_rows:,} '
            'train-split records labelled normal (reference=normal): it never sees an attack '
            'while training, so it flags any traffic unlike normal, including attack '
            'families it has never seen. Learning density from all records would call '
            'whatever dominates the archive normal; in the KDD Cup data that is the smurf '
            'and neptune floods (about 80% of records).')
  if method == 'gaussian_mixture':
    return (' It learned from all records (reference=all), each distinct pattern once: '
            'floods of near-identical records count as one pattern each, not as the bulk of '
            'normal traffic; records labelled normal make a better reference when there are '
            'any.')
  return (' It learned from all records (reference=all): this assumes that attacks are a '
          'small minority of the archive, as on a real network; records labelled normal '
          'make a better reference when there are any.')
