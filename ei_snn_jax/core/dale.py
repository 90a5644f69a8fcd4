"""Dale's law: sign-constrained parameters are projected onto >= 0 (spec §4).

The projection is applied to the parameter pytree *outside* the differentiated function: after
every optimizer update and once after init or restore. (A clamp inside the loss would give
weights sitting at exactly 0 a gradient of 0.5 in JAX instead of PyTorch's full gradient.)

Constrained leaves are recognised by name: E-I layers' ``w_ee, w_ie, w_ei, g_i, g_e`` and the
DANN layers' ``w_ex, w_ix, w_ei, g``. Biases (b_E, named ``bias``), DANN's ``alpha`` and every
parameter of BN-SNN layers are left alone.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

CONSTRAINED_NAMES = frozenset({"w_ee", "w_ie", "w_ei", "g_i", "g_e", "w_ex", "w_ix", "g"})


def _leaf_name(path) -> str:
  """The parameter's name: the last dict key of its path (NNX states add a trailing ``.value``)."""
  for entry in reversed(path):
    if isinstance(entry, jax.tree_util.GetAttrKey) and entry.name == "value":
      continue
    return str(getattr(entry, "key", getattr(entry, "name", entry)))
  return ""


def constrained_mask(params: Any) -> Any:
  """Pytree of bools: True for parameters Dale's law constrains to be >= 0."""
  return jax.tree_util.tree_map_with_path(lambda p, _: _leaf_name(p) in CONSTRAINED_NAMES, params)


def project_nonnegative(params: Any) -> Any:
  """p <- max(p, 0) for every constrained parameter; other leaves are returned unchanged."""
  return jax.tree_util.tree_map_with_path(
      lambda p, x: jnp.maximum(x, 0) if _leaf_name(p) in CONSTRAINED_NAMES else x, params)


class DaleProjectionState(NamedTuple):
  """Empty state of ``dale_projection``."""


def dale_projection() -> optax.GradientTransformation:
  """Optax piece, last in a chain: rewrites updates so that params + updates obeys Dale's law.

  ``optax.apply_updates(params, updates)`` then equals ``project_nonnegative`` of the plain update
  (up to one rounding of the difference); constrained results are always >= 0. Needs ``params``
  in ``update``.
  """

  def init_fn(params):
    del params
    return DaleProjectionState()

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("dale_projection needs params: call tx.update(grads, state, params)")

    def project(path, u, p):
      if _leaf_name(path) not in CONSTRAINED_NAMES:
        return u
      return (jnp.maximum(p + u, 0) - p).astype(u.dtype)

    return jax.tree_util.tree_map_with_path(project, updates, params), state

  return optax.GradientTransformation(init_fn, update_fn)
