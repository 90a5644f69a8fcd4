"""Dale's law: sign-constrained parameters are projected onto >= 0 (spec §4).

The projection is applied to the parameter pytree *outside* the differentiated function: after
every optimizer update and once after init or restore. (A clamp inside the loss would give
weights sitting at exactly 0 a gradient of 0.5 in JAX instead of PyTorch's full gradient.)

Which leaves are constrained is what the model's layers declare (``parameter_roles``, spec §4):
pass ``roles.parameter_masks(model, x).sign_constrained`` as ``mask``. This module sits below the
layers and knows no parameter name. Without a mask, the default mask is the one that
``ei_snn_jax.optim`` installs on import (``set_default_mask``): the roles the library's layers
declare, matched to a parameter tree without its model (``optim.library_masks``), which fits the
library's models exactly but not a user's own layer; a mask from the model is always right.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

# The mask used when none is given: params -> pytree of bools (``set_default_mask``).
_default_mask: Callable[[Any], Any] | None = None


def set_default_mask(fn: Callable[[Any], Any] | None) -> None:
  """Install ``fn`` (params -> pytree of bools, True = sign-constrained) as the mask used when
  ``project_nonnegative``/``dale_projection`` get none; ``ei_snn_jax.optim`` installs the roles
  the library's layers declare (``optim.library_masks``). None removes it."""
  global _default_mask
  _default_mask = fn


def constrained_mask(params: Any) -> Any:
  """Pytree of bools: True for parameters Dale's law constrains to be >= 0, by the default mask
  (``set_default_mask``); for any model prefer ``roles.parameter_masks(model, x)``."""
  if _default_mask is None:
    raise ValueError("no mask of sign-constrained parameters: pass mask="
                     "roles.parameter_masks(model, x).sign_constrained (the roles the model's "
                     "layers declare), or import ei_snn_jax.optim for the library's models")
  return _default_mask(params)


def project_nonnegative(params: Any, mask: Any = None) -> Any:
  """p <- max(p, 0) for every constrained parameter; other leaves are returned unchanged.

  ``mask``: a pytree of bools like ``params`` (True = constrained), e.g.
  ``roles.parameter_masks(model, x).sign_constrained``, or the ``roles.ParameterMasks`` itself;
  default ``constrained_mask(params)``.
  """
  mask = _sign_mask(params, mask)
  return jax.tree.map(lambda x, m: jnp.maximum(x, 0) if m else x, params, mask)


def _sign_mask(params: Any, mask: Any) -> Any:
  """The pytree of bools of ``mask``: its ``sign_constrained`` field for a ``roles.ParameterMasks``,
  the default mask for None, else ``mask`` itself."""
  if mask is None:
    return constrained_mask(params)
  return getattr(mask, "sign_constrained", mask)


class DaleProjectionState(NamedTuple):
  """Empty state of ``dale_projection``."""


def dale_projection(mask: Any = None) -> optax.GradientTransformation:
  """Optax piece, last in a chain: rewrites updates so that params + updates obeys Dale's law.

  ``optax.apply_updates(params, updates)`` then equals ``project_nonnegative`` of the plain update
  (up to one rounding of the difference); constrained results are always >= 0. Needs ``params``
  in ``update``. ``mask`` as in ``project_nonnegative`` (default: ``constrained_mask``).
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

    masks = _sign_mask(params, mask)
    return jax.tree.map(project, updates, params, masks), state

  return optax.GradientTransformation(init_fn, update_fn)
