"""Dale's law: sign-constrained parameters are projected onto >= 0 (spec §4).

The projection is applied to the parameter pytree *outside* the differentiated function: after
every optimizer update and once after init or restore. (A clamp inside the loss would give
weights sitting at exactly 0 a gradient of 0.5 in JAX instead of PyTorch's full gradient.)

Which leaves are constrained is, for any model, what its layers declare: pass
``roles.parameter_masks(model, x).sign_constrained`` as ``mask``. Without a mask, constrained
leaves are recognised by their name (``tree.leaf_name``), which covers the library's models
exactly (tested against their declared roles): E-I layers' ``w_ee, w_ie, w_ei, g_i, g_e`` and the
DANN layers' ``w_ex, w_ix, w_ei, g``. Biases (b_E, named ``bias``), DANN's ``alpha`` and every
parameter of BN-SNN layers are left alone.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ei_snn_jax import tree as tree_lib

CONSTRAINED_NAMES = frozenset({"w_ee", "w_ie", "w_ei", "g_i", "g_e", "w_ex", "w_ix", "g"})


def is_constrained(path) -> bool:
  """Whether the parameter at key path ``path`` is sign-constrained (>= 0) by Dale's law."""
  return tree_lib.leaf_name(path) in CONSTRAINED_NAMES


def constrained_mask(params: Any) -> Any:
  """Pytree of bools: True for parameters Dale's law constrains to be >= 0."""
  return jax.tree_util.tree_map_with_path(lambda p, _: is_constrained(p), params)


def project_nonnegative(params: Any, mask: Any = None) -> Any:
  """p <- max(p, 0) for every constrained parameter; other leaves are returned unchanged.

  ``mask``: a pytree of bools like ``params`` (True = constrained), e.g.
  ``roles.parameter_masks(model, x).sign_constrained``; default ``constrained_mask(params)``.
  """
  if mask is None:
    mask = constrained_mask(params)
  return jax.tree.map(lambda x, m: jnp.maximum(x, 0) if m else x, params, mask)


class DaleProjectionState(NamedTuple):
  """Empty state of ``dale_projection``."""


def dale_projection(mask: Any = None) -> optax.GradientTransformation:
  """Optax piece, last in a chain: rewrites updates so that params + updates obeys Dale's law.

  ``optax.apply_updates(params, updates)`` then equals ``project_nonnegative`` of the plain update
  (up to one rounding of the difference); constrained results are always >= 0. Needs ``params``
  in ``update``. ``mask`` as in ``project_nonnegative`` (default: by name).
  """

  def init_fn(params):
    del params
    return DaleProjectionState()

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError("dale_projection needs params: call tx.update(grads, state, params)")

    def project(u, p, constrained):
      if not constrained:
        return u
      return (jnp.maximum(p + u, 0) - p).astype(u.dtype)

    masks = constrained_mask(params) if mask is None else mask
    return jax.tree.map(project, updates, params, masks), state

  return optax.GradientTransformation(init_fn, update_fn)
