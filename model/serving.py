"""What a worker does to a verified model before serving it: compile its forest.

The network detector's forest (100 trees about 100 deep) is most of a record's scoring cost
when scikit-learn walks it tree by tree. ONNX Runtime scores the same trees in one C++ call,
in less time a record and a fraction of the fixed cost per call (benchmarks/README.md,
'Figures behind the code's defaults'). Its scores equal scikit-learn's up to float32 sums
against float64; tests/test_serving.py holds them to 1e-5.

The compiled form lives in the worker's memory only: it is built from the model that
:func:`model.registry.load` has just verified (signed manifest, checksum, trusted types), and
it is never serialised, written or read back, so the registry's signature still covers
everything that is served.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# The ONNX opset of the compiled graph; ai.onnx.ml's TreeEnsemble ops come with it.
ONNX_OPSET = 18


class OnnxForest:
  """A fitted scikit-learn ``RandomForestClassifier`` as an ONNX Runtime session."""

  def __init__(self, forest, n_features: int):
    # Imported here: only serving needs them, and importing them costs a second.
    import onnxruntime  # pylint: disable=import-outside-toplevel
    from skl2onnx import to_onnx  # pylint: disable=import-outside-toplevel

    graph = to_onnx(forest, np.zeros((1, n_features), dtype=np.float32),
                    options={id(forest): {'zipmap': False}}, target_opset=ONNX_OPSET)
    options = onnxruntime.SessionOptions()
    # The runner already runs a worker per core (see transforms/inference.py).
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    self._session = onnxruntime.InferenceSession(
        graph.SerializeToString(), options, providers=['CPUExecutionProvider'])
    self._input = self._session.get_inputs()[0].name
    self._output = [o.name for o in self._session.get_outputs() if o.name != 'label'][0]

  def predict_proba(self, X: np.ndarray) -> np.ndarray:
    return self._session.run([self._output], {self._input: X})[0]


def compile_for_serving(estimator: Any) -> Any:
  """Compiles the forest of a loaded detector in place, when it has one; returns it.

  A forest that does not compile is served by scikit-learn, with a warning: slower, never
  wrong.
  """
  pipeline = getattr(estimator, 'pipeline', estimator)
  steps = getattr(pipeline, 'steps', None)
  final = steps[-1][1] if steps else pipeline
  compile_step = getattr(final, 'compile_for_serving', None)
  if compile_step is not None:
    try:
      compile_step()
    except Exception:  # pylint: disable=broad-except
      log.warning('could not compile the %s forest; scikit-learn scores it',
                  type(final).__name__, exc_info=True)
  return estimator
