"""What a retrain produces, as typed records: the steps (model.training), the choice
(model.selection), the publication (model.publishing), the report (model.report) and the job's
summary (pipelines.retrain) all read these, never string-keyed dicts.

Metrics stay dicts of metric name -> value (``roc_auc``, ``pr_auc``, ..., see
model.evaluation), and so do the sample's description and the read statistics, which are facts
about the data rather than records with a fixed shape. ``TrainingSummary`` round-trips through
JSON (``result.json`` in the staging dir: the workers' result, read back by the launcher).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional


@dataclasses.dataclass
class CandidateResult:
  """One method fitted with its best grid point on the whole train split (a challenger)."""
  method: str
  params: dict[str, Any]
  threshold: float
  threshold_rule: str
  metrics: dict[str, Any]  # test split; 'calibration' and 'operating_points' inside
  importances: dict[str, dict[str, float]]
  fit_seconds: float
  training_rows: int
  model_path: str
  eval_path: str
  model_format: str = 'skops'


@dataclasses.dataclass
class ChampionResult:
  """The currently published model on the same test split, or why it could not be scored."""
  version: Optional[str]
  error: Optional[str] = None
  metrics: Optional[dict[str, Any]] = None
  eval_path: Optional[str] = None
  method: Optional[str] = None

  @property
  def gate_input(self) -> dict[str, Any]:
    """What model.evaluation.gate compares against: the metrics, or the error."""
    return {'error': self.error} if self.error else dict(self.metrics or {})


@dataclasses.dataclass
class SelectionResult:
  """The method to publish, and why, in words a person can check."""
  chosen: str
  why: str
  metric: str  # what chose it (and the grid point)
  gate_metric: str  # what the champion / challenger gate compares
  cv: list[dict[str, Any]]  # one row per (method, grid point): mean, std, folds


@dataclasses.dataclass
class TrainingSummary:
  """The whole result of the retrain pipeline (before the gate and the publication)."""
  detector: str
  input: str
  input_format: str
  stats: dict[str, Any]  # rows, duplicates, time_range of everything read
  sample: dict[str, Any]  # the staged sample's description (model.training.stage_sample)
  metric: str
  gate_metric: str
  cv: list[dict[str, Any]]
  cv_folds: int
  cv_tasks: int
  finals: dict[str, CandidateResult]
  chosen: str
  why: str
  champion: Optional[ChampionResult] = None

  @property
  def final(self) -> CandidateResult:
    return self.finals[self.chosen]

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, value: dict[str, Any]) -> 'TrainingSummary':
    value = dict(value)
    value['finals'] = {m: CandidateResult(**f) for m, f in value['finals'].items()}
    if value.get('champion') is not None:
      value['champion'] = ChampionResult(**value['champion'])
    return cls(**value)


@dataclasses.dataclass
class Decision:
  """The gate's answer and where the report went."""
  publish: bool
  reason: str
  metric: str
  tolerance: float
  version: Optional[str]  # the published version, or None
  champion: Optional[str]  # the current model's version, if any
  report: Optional[str] = None


@dataclasses.dataclass
class RetrainOutcome:
  """What ``pipelines.retrain.run`` returns."""
  result: TrainingSummary
  decision: Decision
  seconds: float
