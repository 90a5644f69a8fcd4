"""Guards that stop a run training silently wrong (issue 24), and what their messages name.

* ``raise_nonfinite``: the NaN guard's stop (``NonFiniteError``): the step, the replica, where
  the backward pass first went non-finite (the deepest layer with a non-finite gradient) and
  the first layer, in forward order, whose probed currents went non-finite.
* ``check_divergence``: a finite loss that has grown by orders of magnitude (e.g. the BN variant
  with a far too large learning rate: 2.3 -> 4e11 while every value stays finite, so the NaN
  guard never fires) stops the run with one line.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import numpy as np

from ei_snn_jax import errors, tree as tree_lib
from ei_snn_jax.analysis import probes

# A mean cross-entropy this many times that of a chance-level model (log C) is divergence: the
# logits of the true class lag the others by hundreds to thousands (measured: a healthy run never
# exceeds ~5x, a diverged one passes 1e3x within a few windows).
DIVERGENCE_FACTOR = 1000.0


class DivergedError(errors.UserError, FloatingPointError):
  """The training loss grew by orders of magnitude although every value stayed finite."""


def check_divergence(records: Iterable[dict], num_classes: int, step: int, lr: float,
                     before_stop: Callable[[], None] = lambda: None,
                     factor: float = DIVERGENCE_FACTOR) -> None:
  """Raise ``DivergedError`` if a logging window's mean ``loss`` (``records``: one per replica)
  exceeds ``factor`` times log(num_classes), the loss of a chance-level classifier;
  ``before_stop`` runs first (the trainer waits for its pending checkpoint saves)."""
  chance = math.log(max(int(num_classes), 2))
  for replica, record in enumerate(records):
    loss = float(record.get("loss", 0.0))
    if loss > factor * chance:
      before_stop()
      who = f" (replica {replica})" if replica else ""
      raise DivergedError(
          f"training diverged by step {step}{who}: the mean training loss is {loss:.3g}, over "
          f"{factor:g}x the {chance:.2f} of a chance-level {num_classes}-class model, although "
          f"every value stayed finite: lower optim.lr (now {lr:g}) and start a new --workdir")


class NonFiniteError(errors.UserError, FloatingPointError):
  """Raised when a training step produced a non-finite loss or gradient."""


def forward_layer_order(exp: Any) -> list[str]:
  """Layer paths ("conv0", "stage0_block1.conv2", "head") in the order the model creates its
  parameters, i.e. forward order (a trace keeps Flax's creation order; jit outputs sort keys)."""
  order: list[str] = []

  def init(x):
    variables = exp.model.init(jax.random.key(0), x, train=False)

    def walk(tree, path):
      for k, v in tree.items():
        if hasattr(v, "items"):
          walk(v, path + (k,))
        else:
          layer = tree_lib.layer_path(path)
          if layer not in order:
            order.append(layer)

    walk(variables["params"], ())
    return variables

  shape = (exp.config.train.batch_size,) + tuple(exp.dataset.x_train.shape[1:])
  x = jax.eval_shape(exp.eval_transform, jax.ShapeDtypeStruct(shape, exp.dataset.x_train.dtype))
  jax.eval_shape(init, jax.ShapeDtypeStruct(x.shape, jnp.float32))
  return order


def first_nonfinite_layer(exp: Any, metrics: dict, replica: int) -> str | None:
  """'layer conv2 (its excitatory, balanced currents)': the first layer in forward order whose
  recorded currents (the probe statistics among the step's metrics) are non-finite, or None."""
  bad: dict[str, set[str]] = {}
  for key, value in metrics.items():
    stat, sep, layer = key.partition("/")
    if not sep:   # not a probe statistic
      continue
    value = np.asarray(value)
    if replica >= 0 and value.ndim:
      value = value[replica]
    if not np.all(np.isfinite(value)):
      bad.setdefault(layer, set()).add(stat.removesuffix("_mean").removesuffix("_std"))
  if not bad:
    return None
  try:
    order = forward_layer_order(exp)
  except Exception:  # noqa: BLE001 - only a diagnostic; fall back to name order
    order = []
  first = min(bad, key=lambda layer: (order.index(layer) if layer in order else len(order), layer))
  circuit_order = probes.CURRENTS
  rank = lambda s: (circuit_order.index(s) if s in circuit_order else len(circuit_order), s)
  return f"layer {first} (its {', '.join(sorted(bad[first], key=rank))} currents)"


def nonfinite_gradients(exp: Any, params: Any, bad_leaves: np.ndarray) -> str:
  """Where the gradient went non-finite, from the step's per-leaf flags (flatten order of
  ``params``): the backward pass runs from the output, so the layer deepest in forward order with
  a non-finite gradient is where it began (every layer below inherits it)."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  bad = [path for (path, _), flag in zip(flat, bad_leaves) if flag]
  if not bad:
    return "the loss is non-finite but every gradient is finite"
  try:
    order = forward_layer_order(exp)
  except Exception:  # noqa: BLE001 - only a diagnostic; fall back to flatten order
    order = []
  layer_of = lambda path: tree_lib.layer_path(path[:-1])
  depth = lambda path: order.index(layer_of(path)) if layer_of(path) in order else -1
  deepest = max(depth(p) for p in bad)
  first = [jax.tree_util.keystr(p) for p in bad if depth(p) == deepest]
  layers = {layer_of(p) for p in bad}
  return (f"the gradient went non-finite in {len(layers)} layer(s), first (backward) in "
          f"params{first[0]}" + (f" (and {len(first) - 1} more of its leaves)"
                                 if len(first) > 1 else ""))


def raise_nonfinite(exp: Any, state: Any, metrics: dict, step: int) -> None:
  """Raise ``NonFiniteError`` for the failed step ``step``: ``metrics`` are its host metrics
  (with the probe statistics of its batch), ``state`` the state the guard kept. A replica is
  named only when the run has several (``metrics["loss"]`` with a replica axis longer than 1)."""
  replica = int(metrics.get("bad_replica", -1))
  loss = np.asarray(metrics["loss"])
  who = ""
  if replica >= 0:
    loss = loss[replica]
    if np.size(metrics["loss"]) > 1:
      who = f" in replica {replica} (seed {exp.config.seed + replica})"
  where = nonfinite_gradients(exp, state.params, np.asarray(metrics["bad_leaves"]))
  layer = first_nonfinite_layer(exp, metrics, replica)
  if layer:
    where = f"the forward pass first went non-finite in {layer}; {where}"
  # At step 0 no update has happened yet, so the learning rate cannot be the cause.
  advice = ("This was the first step, before any update, so the learning rate plays no part: "
            "the model as initialised goes non-finite on this data; check model.* and the data."
            if step == 0 else "Lower optim.lr or check the data.")
  raise NonFiniteError(
      f"non-finite loss/gradient at step {step}{who} (loss={float(loss)}): {where}. "
      f"The step was not applied; the last checkpoint is intact. {advice}")
