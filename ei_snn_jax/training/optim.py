"""The reference optimizer as optax pieces (spec §7.2-7.3).

For each parameter with a gradient: g <- dL/dp (W_EI: already dL/dp / d by E-I Prop), g <- g +
wd * p (coupled L2), buf <- momentum * buf + g, p <- p - lr(k) * buf; then Dale's projection.
The learning rate is linear warmup from ``init_lr`` to ``lr`` then cosine to 0, per iteration.
The E-I head's g_I, g_E and b_E never receive a gradient in the reference (so no decay and no
momentum either): they are masked out of weight decay here.
"""

from __future__ import annotations

from typing import Any

import jax
import optax

from ei_snn_jax import layers, tree as tree_lib


def learning_rate_schedule(lr: float, init_lr: float, warmup_steps: int,
                           total_steps: int) -> optax.Schedule:
  """Per-iteration warmup + cosine (spec §7.2); plain cosine from ``lr`` when warmup is 0."""
  if warmup_steps > 0:
    return optax.warmup_cosine_decay_schedule(init_lr, lr, warmup_steps, total_steps, 0.0)
  return optax.cosine_decay_schedule(lr, total_steps, 0.0)


def unused_parameter_mask(params: Any) -> Any:
  """True for the output layer's dead parameters: g_i, g_e, bias of an ``EIHead`` (spec §1.3)
  and alpha, g, bias of a ``DANNHead``; they exist only so that parameter counts match."""

  def is_unused(path, _):
    names = tree_lib.path_names(path)
    return len(names) >= 2 and names[0] == "head" and (
        names[-1] in layers.UNUSED_HEAD_PARAMS.get(names[-2], ()))

  return jax.tree_util.tree_map_with_path(is_unused, params)


def weight_decay_mask(params: Any) -> Any:
  """True for every parameter that is weight-decayed (all but the unused head parameters)."""
  return jax.tree.map(lambda unused: not unused, unused_parameter_mask(params))


def make_optimizer(lr: float, init_lr: float, warmup_steps: int, total_steps: int,
                   weight_decay: float, momentum: float = 0.9) -> tuple[
                       optax.GradientTransformation, optax.Schedule]:
  """SGD with momentum and coupled L2 weight decay (spec §7.3). Returns (tx, schedule).

  Dale's projection is *not* part of the chain: apply ``dale.project_nonnegative`` to the params
  after ``optax.apply_updates`` (or append ``dale.dale_projection()``).
  """
  schedule = learning_rate_schedule(lr, init_lr, warmup_steps, total_steps)
  tx = optax.chain(
      optax.masked(optax.add_decayed_weights(weight_decay), weight_decay_mask),
      optax.sgd(schedule, momentum=momentum if momentum > 0 else None),
  )
  return tx, schedule
