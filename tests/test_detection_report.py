"""model/report.py's criterion section for label-free models: every candidate on the criterion,
and a plain note when the published method is the default rather than the criterion's pick."""

from __future__ import annotations

import types

from model import criteria, methods, report


def summary(gm: float, forest: float):
  gm_params = methods.default_params('gaussian_mixture', False)
  rows = [
      {'method': 'gaussian_mixture', 'params': gm_params, 'mean': gm, 'draw_std': 0.001,
       'fit_seconds': 1.0},
      {'method': 'isolation_forest',
       'params': methods.default_params('isolation_forest', False), 'mean': forest,
       'draw_std': 0.002, 'fit_seconds': 2.0}]
  return types.SimpleNamespace(metric=criteria.CRITERION, cv=rows, chosen='gaussian_mixture',
                               final=types.SimpleNamespace(params=gm_params))


def test_the_criterion_section_says_when_it_did_not_choose_the_method():
  page = '\n'.join(report.criterion_section(summary(0.00672, 0.00621)))
  assert 'How the model was chosen without labels' in page
  assert '0.00672' in page or '0.0067' in page
  assert 'not the criterion' in page and 'isolation_forest scores lower' in page
  # When the published method is also the criterion's best, no such note.
  page = '\n'.join(report.criterion_section(summary(0.00614, 0.01396)))
  assert 'not the criterion' not in page
