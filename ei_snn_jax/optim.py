"""The reference optimizer as optax pieces (spec §7.2-7.3), for the library's models and any other.

For each parameter with a gradient: g <- dL/dp (W_EI: already dL/dp / d by E-I Prop), g <- g +
wd * p (coupled L2), buf <- momentum * buf + g, p <- p - lr(k) * buf; then Dale's projection.
The learning rate is linear warmup from ``init_lr`` to ``lr`` then cosine to 0, per iteration.
The E-I head's g_I, g_E and b_E never receive a gradient in the reference (so no decay and no
momentum either): they are masked out of weight decay here. For any model the mask comes from
its layers: pass ``decay_mask=roles.parameter_masks(model, x)`` (or its ``.weight_decay``);
without one, ``weight_decay_mask`` recognises the library's models by their parameter paths
(and an E-I or DANN output layer named "head" at the top of a user's model).

  masks = ei_snn_jax.parameter_masks(model, images)
  tx, schedule = ei_snn_jax.make_optimizer(0.1, 1e-7, 100, 10_000, 5e-4, decay_mask=masks)

First step (spec §7.3): the reference's EiSGD creates the momentum buffer as a copy of the first
gradient and then updates it once more, so buf_0 = (1 + momentum) g_0 and every later buffer
carries an extra momentum^k g_0 (``reference_momentum``, the default); ``torch.optim.SGD`` and
``optax.sgd`` start from buf_0 = g_0 (``momentum_first_step="optax"``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ei_snn_jax import layers, roles, tree as tree_lib


def learning_rate_schedule(lr: float, init_lr: float, warmup_steps: int,
                           total_steps: int) -> optax.Schedule:
  """Per-iteration warmup + cosine (spec §7.2); plain cosine from ``lr`` when warmup is 0."""
  if warmup_steps > 0:
    return optax.warmup_cosine_decay_schedule(init_lr, lr, warmup_steps, total_steps, 0.0)
  return optax.cosine_decay_schedule(lr, total_steps, 0.0)


def unused_parameter_mask(params: Any) -> Any:
  """True for the output layer's dead parameters: g_i, g_e, bias of an ``EIHead`` (spec §1.3)
  and alpha, g, bias of a ``DANNHead``; they exist only so that parameter counts match.

  Recognised by path: the library's models name their head "head" and hold the E-I (DANN) layer
  in it as "ei" ("dann"); a user's model whose top-level E-I (DANN) layer is itself named
  "head" is recognised too. For any model use ``roles.parameter_masks(model, x).unused``, which
  the layers declare.
  """
  kinds = {"w_ee": "ei", "w_ex": "dann"}
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  # Module paths that hold an E-I / DANN layer's kernel, with the layer's kind.
  owners = {tree_lib.path_names(path)[:-1]: kinds[tree_lib.leaf_name(path)]
            for path, _ in flat if tree_lib.leaf_name(path) in kinds}

  def is_unused(path, _):
    names = tree_lib.path_names(path)
    if len(names) < 2 or names[0] != "head":
      return False
    kind = names[-2] if names[-2] in layers.UNUSED_HEAD_PARAMS else owners.get(names[:-1])
    return kind is not None and (names[:-1] == ("head",) or names[-2] == kind) and (
        names[-1] in layers.UNUSED_HEAD_PARAMS[kind])

  return jax.tree_util.tree_map_with_path(is_unused, params)


def weight_decay_mask(params: Any) -> Any:
  """True for every parameter that is weight-decayed (all but the unused head parameters), by
  path as ``unused_parameter_mask``; for any model use ``roles.parameter_masks(...).weight_decay``."""
  return jax.tree.map(lambda unused: not unused, unused_parameter_mask(params))


MOMENTUM_FIRST_STEPS = ("reference", "optax")

# The config options this module owns: dotted field -> (default, allowed values or range,
# meaning). ``training.config.base_config`` is assembled from these (docs/options.md).
CONFIG_OPTIONS = {
    "optim.lr": (0.001, "> 0", "peak learning rate (spec §7)"),
    "optim.init_lr": (1e-7, ">= 0", "learning rate at the start of the warmup"),
    "optim.warmup_epochs": (30, ">= 0", "linear warmup, then per-step cosine to 0"),
    "optim.momentum": (0.9, "in [0, 1)", "SGD momentum"),
    "optim.momentum_first_step": ("reference", MOMENTUM_FIRST_STEPS, "momentum first step"),
    "optim.weight_decay": (5e-4, ">= 0", "coupled L2 weight decay"),
}


def check_config(cfg, problems: list[str]) -> None:
  """Append the rules across fields of ``cfg.optim`` to ``problems`` (training.config)."""
  warmup, epochs = cfg.optim.warmup_epochs, cfg.train.epochs
  if 0 < epochs <= warmup:
    problems.append(f"optim.warmup_epochs={warmup} must be < train.epochs={epochs}: lower the "
                    f"warmup (0 = none) or train longer")


class ReferenceMomentumState(NamedTuple):
  """Steps taken so far and the momentum buffers."""
  count: jax.Array
  trace: Any


def reference_momentum(momentum: float) -> optax.GradientTransformation:
  """Heavy-ball momentum as the reference's EiSGD applies it (spec §7.3).

  buf_0 = (1 + momentum) g_0 (the buffer is created from g_0, then updated with it), and
  buf_k = momentum buf_{k-1} + g_k afterwards; the update is buf_k (scale by -lr next).
  """

  def init(params):
    return ReferenceMomentumState(jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params))

  def update(updates, state, params=None):
    del params
    first = state.count == 0
    trace = jax.tree.map(lambda g, buf: jnp.where(first, (1.0 + momentum) * g, momentum * buf + g),
                         updates, state.trace)
    return trace, ReferenceMomentumState(optax.safe_increment(state.count), trace)

  return optax.GradientTransformation(init, update)


def make_optimizer(lr: float, init_lr: float, warmup_steps: int, total_steps: int,
                   weight_decay: float, momentum: float = 0.9,
                   momentum_first_step: str = "reference",
                   decay_mask: Any = None) -> tuple[
                       optax.GradientTransformation, optax.Schedule]:
  """SGD with momentum and coupled L2 weight decay (spec §7.3). Returns (tx, schedule).

  ``momentum_first_step``: "reference" (EiSGD's buf_0 = (1 + momentum) g_0, the default) or
  "optax" (buf_0 = g_0, as torch.optim.SGD). ``decay_mask``: which parameters are
  decayed: the ``roles.ParameterMasks`` of any model (``roles.parameter_masks(model, x)``, its
  ``weight_decay`` mask is used), a pytree of bools or a function params -> pytree
  (``optax.masked``); default: the library's models by path (``weight_decay_mask`` above). Dale's projection is *not* part of the chain: apply
  ``dale.project_nonnegative`` to the params after ``optax.apply_updates`` (or append
  ``dale.dale_projection()``).
  """
  if momentum_first_step not in MOMENTUM_FIRST_STEPS:
    raise ValueError(f"momentum_first_step must be one of {MOMENTUM_FIRST_STEPS}, got "
                     f"{momentum_first_step!r}")
  schedule = learning_rate_schedule(lr, init_lr, warmup_steps, total_steps)
  if momentum > 0 and momentum_first_step == "reference":
    sgd = optax.chain(reference_momentum(momentum), optax.scale_by_learning_rate(schedule))
  else:
    sgd = optax.sgd(schedule, momentum=momentum if momentum > 0 else None)
  if decay_mask is None:
    decay_mask = weight_decay_mask
  elif isinstance(decay_mask, roles.ParameterMasks):
    decay_mask = decay_mask.weight_decay
  tx = optax.chain(optax.masked(optax.add_decayed_weights(weight_decay), decay_mask), sgd)
  return tx, schedule
