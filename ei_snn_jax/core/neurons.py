"""Leaky integrate-and-fire neurons with surrogate-gradient spikes (spec §5).

The LIF of the reference (spikingjelly ``LIFNode``: tau 2, ``decay_input=False``, threshold 1,
soft reset with the reset detached, V_0 = 0) is written here as pure functions:

    charge:  H_t = (1 - 1/tau) * V_{t-1} + x_t
    fire:    S_t = Theta(H_t - theta)            (Theta(u) = 1 if u >= 0)
    reset:   V_t = H_t - theta * sg(S_t)

``lif_step`` advances one time step (streaming use), ``lif_multistep`` scans it over a leading
T axis with ``jax.lax.scan``; both give identical outputs. Spikes are produced by a
``jax.custom_vjp`` Heaviside whose backward pass is a surrogate derivative.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp

Array = jax.Array

# --------------------------------------------------------------------------------------------
# Surrogate derivatives d S / d u, u = H - theta. Each takes (u, alpha) and returns an array.
# --------------------------------------------------------------------------------------------


def sigmoid_surrogate(u: Array, alpha: float) -> Array:
  """spikingjelly ``surrogate.Sigmoid``: alpha * sig(alpha u) * (1 - sig(alpha u)); peak alpha/4."""
  s = jax.nn.sigmoid(alpha * u)
  return alpha * s * (1.0 - s)


def atan_surrogate(u: Array, alpha: float) -> Array:
  """spikingjelly ``surrogate.ATan``: (alpha/2) / (1 + (pi/2 * alpha * u)^2)."""
  return (alpha / 2.0) / (1.0 + (math.pi / 2.0 * alpha * u) ** 2)


def triangle_surrogate(u: Array, alpha: float) -> Array:
  """Piecewise-linear surrogate: max(0, alpha * (1 - alpha |u|)) (peak alpha at u = 0)."""
  return jnp.maximum(0.0, alpha * (1.0 - alpha * jnp.abs(u)))


def fast_sigmoid_surrogate(u: Array, alpha: float) -> Array:
  """SuperSpike fast sigmoid: 1 / (1 + alpha |u|)^2."""
  return 1.0 / (1.0 + alpha * jnp.abs(u)) ** 2


SURROGATES: dict[str, Callable[[Array, float], Array]] = {
    "sigmoid": sigmoid_surrogate,
    "atan": atan_surrogate,
    "triangle": triangle_surrogate,
    "fast_sigmoid": fast_sigmoid_surrogate,
}


@functools.lru_cache(maxsize=None)
def make_spike_fn(surrogate: str = "sigmoid", alpha: float = 4.0) -> Callable[[Array], Array]:
  """Heaviside spike S = Theta(u) (u >= 0 fires) with the named surrogate gradient (spec §5).

  Args:
    surrogate: one of ``SURROGATES`` ("sigmoid" is the reference's, with alpha = 4).
    alpha: surrogate sharpness.

  Returns:
    A ``custom_vjp`` function u -> spikes (same dtype as u, values exactly 0 or 1).
  """
  if surrogate not in SURROGATES:
    raise ValueError(f"unknown surrogate {surrogate!r}; choose one of {sorted(SURROGATES)}")
  derivative = SURROGATES[surrogate]
  alpha = float(alpha)

  @jax.custom_vjp
  def spike(u):
    return (u >= 0).astype(u.dtype)

  def fwd(u):
    return spike(u), u

  def bwd(u, g):
    return (g * derivative(u, alpha).astype(g.dtype),)

  spike.defvjp(fwd, bwd)
  return spike


def lif_step(v: Array, x: Array, *, tau: float = 2.0, threshold: float = 1.0,
             spike_fn: Callable[[Array], Array] | None = None) -> tuple[Array, Array]:
  """One LIF step (spec §5): returns (V_t, S_t) from V_{t-1} and the input x_t.

  H_t = (1 - 1/tau) V_{t-1} + x_t; S_t = Theta(H_t - theta); V_t = H_t - theta * sg(S_t).
  """
  spike_fn = spike_fn or make_spike_fn()
  h = (1.0 - 1.0 / tau) * v + x
  s = spike_fn(h - threshold)
  v_next = h - threshold * jax.lax.stop_gradient(s)
  return v_next, s


def lif_multistep(x: Array, *, tau: float = 2.0, threshold: float = 1.0,
                  spike_fn: Callable[[Array], Array] | None = None,
                  unroll: int | bool = True, v0: Array | None = None) -> Array:
  """Run ``lif_step`` over the leading time axis of x (T, ...) with ``lax.scan`` (V_0 = 0).

  Args:
    x: input currents, shape (T, ...).
    unroll: passed to ``lax.scan``. Full unrolling (True, the default) avoids XLA:CPU's slow
      convolution gradients inside rolled loops and costs little for the small T of the paper.
    v0: optional initial membrane potential (default zeros).

  Returns:
    Spikes of shape (T, ...), dtype of x.
  """
  spike_fn = spike_fn or make_spike_fn()
  v = jnp.zeros_like(x[0]) if v0 is None else v0

  def body(v, x_t):
    return lif_step(v, x_t, tau=tau, threshold=threshold, spike_fn=spike_fn)

  _, spikes = jax.lax.scan(body, v, x, unroll=unroll)
  return spikes


def split_time(x: Array, T: int) -> Array:
  """(T*B, ...) merged t-major batch -> (T, B, ...) (spec §1.4: merged index = t*B + b)."""
  if x.shape[0] % T:
    raise ValueError(f"merged batch {x.shape[0]} is not divisible by T={T}")
  return x.reshape((T, x.shape[0] // T) + x.shape[1:])


def merge_time(x: Array) -> Array:
  """(T, B, ...) -> (T*B, ...), t-major."""
  return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])
