"""Label-free model choice: the area under the mass-volume curve (Goix 2016, "How to evaluate
the quality of unsupervised anomaly detection algorithms?"; Clemencon & Jakubowicz 2013).

A scoring function is good when the region it calls normal holds most of the normal traffic in
the least volume. For a mass ``alpha``, ``MV(alpha)`` is the volume of the smallest level set
``{x : score(x) <= t}`` that holds a share ``alpha`` of held-out records; the area under
``MV`` for ``alpha`` in [:data:`ALPHA_MIN`, :data:`ALPHA_MAX`] is the criterion, lower is
better. No label is read.

Volumes are Monte-Carlo estimates (uniform points in the held-out records' bounding box), which
only work in a few dimensions: as in Goix's paper, each candidate is refitted on
:data:`DRAWS` random draws of :data:`SUBSPACE_DIMS` numeric feature columns, the same draws for
every candidate, and the areas are averaged.

Mass is counted over the *distinct* held-out records (coarse cells, as the Gaussian mixture
learns them: model.methods.distinct_cells): a flood of identical attack records is one pattern,
not 80% of the mass, so the criterion does not reward a model for calling floods normal.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.ensemble import IsolationForest

from model import methods

CRITERION = 'mv_auc'
DESCRIPTION = ('area under the mass-volume curve (Goix 2016), mass {:g}-{:g} of the distinct '
               'held-out records, {} random draws of {} numeric features; lower is better')
ALPHA_MIN, ALPHA_MAX = 0.9, 0.999
ALPHAS = 50
DRAWS = 10
SUBSPACE_DIMS = 5
MONTE_CARLO_POINTS = 10_000
MAX_FIT_ROWS = 50_000
MAX_HELD_OUT = 10_000
# Trees of an IsolationForest candidate in the criterion's refits (its ranking settles early).
MAX_TREES = 100


def describe() -> str:
  return DESCRIPTION.format(ALPHA_MIN, ALPHA_MAX, DRAWS, SUBSPACE_DIMS)


def _core_scores(method: str, params: dict[str, Any], fit: np.ndarray, seed: int):
  """A scorer (matrix -> anomaly scores) of ``method`` fitted on the matrix ``fit``."""
  params = {**methods.DEFAULTS[method], **params}
  if method == 'gaussian_mixture':
    model = methods.DensityMixture(random_state=seed, **params).fit(fit)
    return model.negative_log_likelihood
  if method == 'isolation_forest':
    params = dict(params)
    max_samples = min(int(params.pop('max_samples')), len(fit))
    params['n_estimators'] = min(int(params.get('n_estimators', MAX_TREES)), MAX_TREES)
    model = IsolationForest(max_samples=max_samples, random_state=seed, **params).fit(fit)
    return lambda X: -model.score_samples(X)
  if method == 'rf_synthetic':
    model = methods.SyntheticContrastForest(random_state=seed, **params).fit(fit)
    return lambda X: model.predict_proba(X)[:, 1]
  raise ValueError(f'no label-free criterion for the supervised method {method!r}')


def subspaces(numeric_columns: int, seed: int) -> list[np.ndarray]:
  """The feature draws, the same for every candidate of a run."""
  rng = np.random.default_rng(seed)
  dims = min(SUBSPACE_DIMS, numeric_columns)
  return [np.sort(rng.choice(numeric_columns, dims, replace=False)) for _ in range(DRAWS)]


def mass_volume_area(scores_held_out: np.ndarray, scores_uniform: np.ndarray,
                     box_volume: float = 1.0) -> float:
  """Area under alpha -> volume of the level set holding ``alpha`` of the held-out mass."""
  alphas = np.linspace(ALPHA_MIN, ALPHA_MAX, ALPHAS)
  thresholds = np.quantile(scores_held_out, alphas)
  uniform = np.sort(scores_uniform)
  volume = np.searchsorted(uniform, thresholds, side='right') / len(uniform) * box_volume
  return float(np.trapezoid(volume, alphas) if hasattr(np, 'trapezoid')
               else np.trapz(volume, alphas))


def evaluate(method: str, params: dict[str, Any], fit: np.ndarray, held_out: np.ndarray,
             numeric_columns: int, seed: int = 0) -> dict[str, Any]:
  """The criterion of one candidate: ``fit`` and ``held_out`` are preprocessed matrices whose
  first ``numeric_columns`` columns are the numbers (model.features.preprocessor's order).

  Returns {'mv_auc': mean area, 'mv_auc_draws': [area per draw]}."""
  rng = np.random.default_rng(seed + 1)
  fit = np.asarray(fit, dtype=float)
  held_out = np.asarray(held_out, dtype=float)
  if len(fit) > MAX_FIT_ROWS:
    fit = fit[np.sort(rng.choice(len(fit), MAX_FIT_ROWS, replace=False))]
  held_out = held_out[methods.distinct_cells(held_out, methods.CELL_WIDTH)]
  if len(held_out) > MAX_HELD_OUT:
    held_out = held_out[np.sort(rng.choice(len(held_out), MAX_HELD_OUT, replace=False))]
  areas = []
  for columns in subspaces(numeric_columns, seed):
    low, high = held_out[:, columns].min(axis=0), held_out[:, columns].max(axis=0)
    width = np.maximum(high - low, 1e-9)
    # Volumes relative to the box: the same box for every candidate of a draw.
    uniform = low + rng.random((MONTE_CARLO_POINTS, len(columns))) * width
    scorer = _core_scores(method, params, fit[:, columns], seed)
    areas.append(mass_volume_area(scorer(held_out[:, columns]), scorer(uniform)))
  return {CRITERION: float(np.mean(areas)), f'{CRITERION}_draws': [float(a) for a in areas]}
