"""The reference optimizer as optax pieces (spec §7.2-7.3), for the library's models and any other.

For each parameter with a gradient: g <- dL/dp (W_EI: already dL/dp / d by E-I Prop), g <- g +
wd * p (coupled L2), buf <- momentum * buf + g, p <- p - lr(k) * buf; then Dale's projection.
The learning rate is linear warmup from ``init_lr`` to ``lr`` then cosine to 0, per iteration.
The E-I head's g_I, g_E and b_E never receive a gradient in the reference (so no decay and no
momentum either): they are masked out of weight decay here. For any model the mask comes from
its layers: pass ``decay_mask=roles.parameter_masks(model, x)`` (or its ``.weight_decay``);
without one, ``weight_decay_mask`` applies the roles the library's layers declare to the
parameter tree alone (``library_masks``: exact for the library's models).

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
from ei_snn_jax.core import dale


def learning_rate_schedule(lr: float, init_lr: float, warmup_steps: int,
                           total_steps: int) -> optax.Schedule:
  """Per-iteration warmup + cosine (spec §7.2); plain cosine from ``lr`` when warmup is 0."""
  if warmup_steps > 0:
    return optax.warmup_cosine_decay_schedule(init_lr, lr, warmup_steps, total_steps, 0.0)
  return optax.cosine_decay_schedule(lr, total_steps, 0.0)


# The library's E-I and DANN layers as (hidden layer, output layer) prototypes: unbound modules
# whose ``parameter_roles()`` are the declarations themselves (no parameters are built). The
# output layer's declaration names every parameter of its kind. (A LIF's learnable "w" and
# "threshold" are too common names to recognise without the model: ``roles.parameter_masks``.)
_PROTOTYPES = ((layers.EIDense(1), layers.EIHead(1)), (layers.DANNDense(1), layers.DANNHead(1)))


def _declared_roles(module_path: tuple[str, ...], names: frozenset[str]) -> dict:
  """{parameter name: role} that the library layer owning the parameters ``names`` at
  ``module_path`` declares ({} for a module of no such layer). The owner is the library layer
  whose declared parameters include all of ``names``; the output layer is the module the
  library's models name "head" (``models.common.Head``)."""
  for hidden, output in _PROTOTYPES:
    declared = output.parameter_roles()
    if names <= set(declared):
      owner = output if module_path[:1] == ("head",) else hidden
      return owner.parameter_roles()
  return {}


def library_masks(params: Any) -> roles.ParameterMasks:
  """``roles.ParameterMasks`` of a parameter tree of the library's models, without the model:
  each module's parameters get the roles its layer declares (``_declared_roles``).

  For any model (a user's own layers, an E-I output layer not named "head") use
  ``roles.parameter_masks(model, x)``, which asks the model's own layers: a parameter tree
  alone cannot say which layer class owns a module.
  """
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  modules: dict[tuple[str, ...], set[str]] = {}
  for path, _ in flat:
    names = tree_lib.path_names(path)
    modules.setdefault(names[:-1], set()).add(names[-1])
  declared = {m: _declared_roles(m, frozenset(n)) for m, n in modules.items()}

  def role(path, _):
    names = tree_lib.path_names(path)
    return declared[names[:-1]].get(names[-1], roles.DEFAULT_ROLE)

  return roles.masks_from_roles(jax.tree_util.tree_map_with_path(role, params))


def unused_parameter_mask(params: Any) -> Any:
  """True for the output layer's dead parameters (g_i, g_e, bias of an ``EIHead``; alpha, g,
  bias of a ``DANNHead``, spec §1.3), as the layers declare them (``library_masks``)."""
  return library_masks(params).unused


def weight_decay_mask(params: Any) -> Any:
  """True for every parameter that is weight-decayed, as the layers declare it
  (``library_masks``; for any model ``roles.parameter_masks(model, x).weight_decay``)."""
  return library_masks(params).weight_decay


# Dale's projection without a mask projects what the library's layers declare sign-constrained.
dale.set_default_mask(lambda params: library_masks(params).sign_constrained)


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
  (``optax.masked``); default: ``weight_decay_mask`` (the library's layers' roles). Dale's
  projection is *not* part of the chain: apply
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
