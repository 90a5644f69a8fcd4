"""E-I Prop: the backward-pass rules of the paper (spec §3) as ``custom_jvp`` functions.

Each rule is a derivative that is linear in the tangent, so ``jax.grad`` (reverse mode, its
transpose) gives the paper's gradients and ``jax.jvp``/``jax.jacfwd`` (forward mode) work too.
(The E-I layer's written-out backward pass, ``circuit.fused_integrated_current``, is a
``custom_vjp`` that saves memory and is reverse-mode only; ``EIOptions(fused=False)``
differentiates the same forward computation with the rules below instead.)

* ``stabilize``: adaptive stabilisation of the shunting current (§3.1) with a straight-through
  estimator (§3.2). Exact zeros are replaced by the smallest strictly positive value of the
  same sample (one row of the merged B*T axis, min over every other axis: ``smallest_positive``);
  a sample whose shunting current is all zero gets +inf, so the integrated current is b_E and
  never NaN. Derivative: identity (the replacement is invisible to the gradient). This is the
  one definition of the stabilisation: the E-I layer's written-out backward pass
  (``circuit.fused_integrated_current``) replaces zeros with the same ``smallest_positive``.
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


def _min_positive(a, b):
  """min over [0, inf) with 0 as "no positive value yet" (the identity): a monoid."""
  return jnp.where(a == 0, b, jnp.where(b == 0, a, jnp.minimum(a, b)))


@jax.custom_jvp
def smallest_positive(i_shunt: Array) -> Array:
  """Per sample (row of the merged B*T axis), the smallest strictly positive entry, +inf if
  none, shaped (N, 1, ..., 1): min_{j: I_j > 0} I_j over every axis but the first (spec §3.1).

  One min-positive reduction (no materialised where + min). Its derivative is that of
  ``min(where(I == 0, inf, I))`` (the "no STE" ablation differentiates through it): the
  tangent of the entries equal to the minimum, averaged over ties, and 0 for a sample with no
  positive entry."""
  axes = tuple(range(1, i_shunt.ndim))
  smallest = jax.lax.reduce(i_shunt, jnp.zeros((), i_shunt.dtype), _min_positive, axes)
  smallest = jnp.where(smallest == 0, jnp.inf, smallest)
  return smallest.reshape(smallest.shape + (1,) * len(axes))


@smallest_positive.defjvp
def _smallest_positive_jvp(primals, tangents):
  (i_shunt,), (d_shunt,) = primals, tangents
  smallest = smallest_positive(i_shunt)
  positive = jnp.where(i_shunt == 0, jnp.inf, i_shunt)
  at_min = (positive == smallest).astype(d_shunt.dtype)     # jnp.min's rule, ties averaged
  axes = tuple(range(1, i_shunt.ndim))
  d_positive = jnp.where(i_shunt == 0, jnp.zeros((), d_shunt.dtype), d_shunt)
  return smallest, (jnp.sum(d_positive * at_min, axis=axes, keepdims=True)
                    / jnp.sum(at_min, axis=axes, keepdims=True))


def replace_zeros(i_shunt: Array, smallest: Array | None = None) -> Array:
  """Zeros -> the sample's ``smallest_positive`` (+inf if it has none); spec §3.1."""
  smallest = smallest_positive(i_shunt) if smallest is None else smallest
  return jnp.where(i_shunt == 0, smallest, i_shunt)


@jax.custom_jvp
def stabilize(i_shunt: Array) -> Array:
  """Adaptive stabilisation with STE (spec §3.1-3.2): forward replaces zeros, the derivative is
  the identity (a ``custom_jvp``: forward and reverse mode).

  Args:
    i_shunt: shunting current (N, ...) with N the merged B*T axis; values >= 0.
  """
  return replace_zeros(i_shunt)


@stabilize.defjvp
def _stabilize_jvp(primals, tangents):
  (i_shunt,), (d_shunt,) = primals, tangents
  return replace_zeros(i_shunt), d_shunt


def stabilize_without_ste(i_shunt: Array) -> Array:
  """Ablation "no STE": the same forward value, differentiated as written (the gradient of a
  replaced entry flows to the sample's minimum, none to the zero itself)."""
  return replace_zeros(i_shunt)


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
