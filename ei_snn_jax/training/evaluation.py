"""Test loss and accuracy over the whole (possibly subset) test split.

The same batches and sums on either placement (``batches.eval_source``): from the arrays on the
devices or streamed from the host.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from ei_snn_jax.training import batches, replicas, steps
from ei_snn_jax.training.experiment import Experiment


def evaluate_replicas(exp: Experiment, state: steps.TrainState,
                      eval_step=None) -> list[dict[str, float]]:
  """``{"test_loss", "test_accuracy"}`` of each replica of a state in the loop's layout (the
  replica axis first); ``eval_step``: ``steps.make_eval_step(exp, batches.eval_source(exp))``,
  made here when not given."""
  source = batches.eval_source(exp)
  eval_step = eval_step or steps.make_eval_step(exp, source)
  # where the step takes them (a no-op in the loop; a state restored whole on every device is
  # split when the devices hold replicas)
  params, batch_stats = jax.device_put((state.params, state.batch_stats), exp.replica_sharded)
  n = len(exp.dataset.x_test)
  loss_sum, correct = 0.0, 0.0
  with source.batches() as test_batches:
    for batch in test_batches:
      l, k = eval_step(params, batch_stats, batch)
      loss_sum, correct = loss_sum + l, correct + k
  return [{"test_loss": float(l) / n, "test_accuracy": float(k) / n}
          for l, k in zip(np.asarray(loss_sum), np.asarray(correct))]


def evaluate(exp: Experiment, state: steps.TrainState, eval_step=None) -> dict[str, Any]:
  """Test loss and accuracy of ``state`` as ``steps.init_state`` and checkpoints hold it.

  With ``train.num_replicas`` > 1 each value is a list, one entry per replica.
  """
  results = evaluate_replicas(exp, replicas.to_run_layout(state, exp.num_replicas), eval_step)
  if len(results) == 1:
    return results[0]
  return {key: [r[key] for r in results] for key in ("test_loss", "test_accuracy")}
