"""Label-free model choice: within a method the mass-volume area picks the grid point, between
methods the contrast AUC on the calibration split (model/selection.py), and report.html shows
both."""

from __future__ import annotations

import types

from model import criteria, evaluation, methods, report, selection


def final(contrast):
  return types.SimpleNamespace(metrics={'calibration': {evaluation.UNLABELLED_METRIC: contrast}})


def summary(gm_mv, forest_mv, gm_contrast, forest_contrast):
  gm_params = methods.default_params('gaussian_mixture', False)
  rows = [
      {'method': 'gaussian_mixture', 'params': gm_params, 'mean': gm_mv, 'draw_std': 0.001,
       'fit_seconds': 1.0},
      {'method': 'isolation_forest',
       'params': methods.default_params('isolation_forest', False), 'mean': forest_mv,
       'draw_std': 0.002, 'fit_seconds': 2.0}]
  return types.SimpleNamespace(
      metric=criteria.CRITERION, cv=rows,
      finals={'gaussian_mixture': final(gm_contrast), 'isolation_forest': final(forest_contrast)},
      final=types.SimpleNamespace(params=gm_params))


def choice(s):
  info = {'methods': methods.LABEL_FREE, 'has_labels': False}
  best = {r['method']: r for r in s.cv}
  scored = {r['method']: r['mean'] for r in s.cv}
  return selection._label_free_choice(None, info, best, scored, s.finals)


def test_the_contrast_auc_chooses_the_method_and_the_report_shows_both_criteria():
  # SA on the real file: mv_auc ranks the forest first, the contrast AUC the mixture.
  s = summary(0.00672, 0.00621, 0.9993, 0.9235)
  chosen, why = choice(s)
  assert chosen == 'gaussian_mixture'
  assert 'contrast_auc' in why and '0.99930' in why and 'isolation_forest 0.92350' in why
  s.chosen = chosen
  page = '\n'.join(report.criterion_section(s))
  assert 'How the model was chosen without labels' in page and 'Between methods' in page
  assert '0.9993' in page and '0.9235' in page
  # The contrast AUC decides, whichever mv_auc is lower.
  chosen, _ = choice(summary(0.00614, 0.01396, 0.91, 0.95))
  assert chosen == 'isolation_forest'
  # Without contrast AUCs (not measured) the lowest mv_auc decides.
  chosen, why = choice(summary(0.00672, 0.00621, None, None))
  assert chosen == 'isolation_forest' and 'lowest mv_auc' in why
