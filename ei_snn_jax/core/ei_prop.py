"""E-I Prop: the backward-pass rules of the paper (spec §3) as ``custom_jvp`` functions.

Each rule is a derivative that is linear in the tangent, so ``jax.grad`` (reverse mode, its
transpose) gives the paper's gradients and ``jax.jvp``/``jax.jacfwd`` (forward mode) work too.
(The E-I layers' fused training path, ``circuit.fused_integrated_current``, is a ``custom_vjp``
that saves memory and is reverse-mode only: ``EIOptions(fused=False)`` takes the plain circuit.)

* ``stabilize``: adaptive stabilisation of the shunting current (§3.1) with a straight-through
  estimator (§3.2). Exact zeros are replaced by the smallest strictly positive value of the
  same sample (one row of the merged B*T axis, min over every other axis); a sample whose
  shunting current is all zero gets +inf, so the integrated current is b_E and never NaN.
  Derivative: identity (the replacement is invisible to the gradient).
* ``scale_gradient``: identity forward, derivative a constant times the identity. Applied to W_EI
  with factor 1/d (§3.3) so that ``jax.grad`` already returns the scaled gradient, before
  weight decay and momentum, exactly as the reference's tensor hook.

The ablation variants (no STE, a fixed epsilon, no stabilisation) are selected by
``stabilize_shunting``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array

DANN_EPSILON = 1e-8
STABILIZATIONS = ("adaptive", "epsilon", "none")


def _replace_zeros(i_shunt: Array) -> Array:
  """Zeros -> per-sample min positive value (+inf if the sample has none); spec §3.1."""
  reduce_axes = tuple(range(1, i_shunt.ndim))
  positive = jnp.where(i_shunt == 0, jnp.inf, i_shunt)
  smallest = jnp.min(positive, axis=reduce_axes, keepdims=True)
  return jnp.where(i_shunt == 0, smallest, i_shunt)


@jax.custom_jvp
def stabilize(i_shunt: Array) -> Array:
  """Adaptive stabilisation with STE (spec §3.1-3.2): forward replaces zeros, the derivative is
  the identity (a ``custom_jvp``: forward and reverse mode).

  Args:
    i_shunt: shunting current (N, ...) with N the merged B*T axis; values >= 0.
  """
  return _replace_zeros(i_shunt)


@stabilize.defjvp
def _stabilize_jvp(primals, tangents):
  (i_shunt,), (d_shunt,) = primals, tangents
  return _replace_zeros(i_shunt), d_shunt


def stabilize_without_ste(i_shunt: Array) -> Array:
  """Ablation "no STE": the same forward value, differentiated as written (the gradient of a
  replaced entry flows to the sample's minimum, none to the zero itself)."""
  return _replace_zeros(i_shunt)


def stabilize_shunting(i_shunt: Array, method: str = "adaptive", ste: bool = True) -> Array:
  """Denominator of the integrated current under the chosen E-I Prop variant.

  Args:
    method: "adaptive" (the paper), "epsilon" (DANN's I + 1e-8) or "none" (raw; zeros give
      inf/NaN, the paper's "numerical explosion" ablation).
    ste: straight-through backward for "adaptive" (False = the "no STE" ablation).
  """
  if method == "adaptive":
    return stabilize(i_shunt) if ste else stabilize_without_ste(i_shunt)
  if method == "epsilon":
    return i_shunt + DANN_EPSILON
  if method == "none":
    return i_shunt
  raise ValueError(f"unknown stabilization {method!r}; choose one of {STABILIZATIONS}")


@jax.custom_jvp
def scale_gradient(x: Array, factor: Array | float) -> Array:
  """Identity forward; its derivative is ``factor`` times the identity (spec §3.3), so the
  gradient (reverse mode) is the incoming gradient times ``factor`` and a forward-mode tangent is
  scaled alike (a ``custom_jvp``: the E-I Prop rule in both modes). ``factor`` is a constant: no
  derivative flows to it."""
  del factor
  return x


@scale_gradient.defjvp
def _scale_jvp(primals, tangents):
  (x, factor), (dx, _) = primals, tangents
  return x, dx * jnp.asarray(jax.lax.stop_gradient(factor), dx.dtype)
