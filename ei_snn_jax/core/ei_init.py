"""E-I Init: data-dependent initialisation from the statistics of a layer's actual input (spec §2).

    E_x    = mean of x over all elements
    Var_x  = mean over features of the unbiased (ddof=1) variance across the N = T*B samples
    E_x2   = mean of x^2 over all elements
    s      = sqrt(Var_x / (d (E_x2 + Var_x)))        exponential scale (paper Eq. 53)
    g_I    = sqrt(E_x2 + Var_x) / (sqrt(d) E_x)       inhibitory gain   (paper Eq. 54)

W_EE and W_IE are drawn i.i.d. from Exp(scale s); W_EI = 1/n_I; g_E = 1; b_E = 0. The Flax layers
call these from their parameter initialisers, so ``model.init(rng, first_batch)`` initialises
layer after layer on real data exactly like the reference's first (no-grad) forward pass.

``plain`` initialisation (the "no E-I Init" ablation) uses the data-independent DANN values for
ReLU-Gaussian inputs (spec §9): s = sqrt(2 pi / (d (2 pi - 1))), g_I = sqrt((2 pi - 1) / d).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ei_snn_jax import errors

Array = jax.Array


class InputStatistics(NamedTuple):
  """Moments of an E-I layer's input (spec §2.2)."""
  mean: Array      # E_x
  var: Array       # Var_x (per-feature unbiased variance over samples, averaged)
  mean_sq: Array   # E_x2


class EIInitError(errors.UserError, ValueError):
  """Raised when E-I Init cannot be computed from the given input (e.g. an all-zero input)."""


def input_statistics(x: Array, time_repeats: int = 1) -> InputStatistics:
  """E_x, Var_x and E_x2 of x (N, ...) in float32, gradient stopped (spec §2.2).

  Args:
    x: the layer input with the merged sample axis first.
    time_repeats: treat x as if it were tiled ``time_repeats`` times along axis 0 (the static-image
      first layer, whose T copies are identical samples: N counts them T times).

  Called eagerly (a plain ``model.init``), the moments are one compiled program per input shape
  instead of a dozen op-by-op dispatches; traced (under ``jit``/``vmap``) they are inlined.
  """
  n = x.shape[0] * time_repeats
  if n < 2:
    raise EIInitError("E-I Init needs at least 2 samples (T*B >= 2) for the unbiased variance: "
                      f"got an input of shape {tuple(x.shape)}")
  if isinstance(x, jax.core.Tracer):
    return _moments(x, time_repeats)
  return _jitted_moments(x, time_repeats)


def _moments(x: Array, time_repeats: int) -> InputStatistics:
  x = jax.lax.stop_gradient(x).astype(jnp.float32)
  n = x.shape[0] * time_repeats
  mean = jnp.mean(x)
  mean_sq = jnp.mean(jnp.square(x))
  dev = jnp.sum(jnp.square(x - jnp.mean(x, axis=0)), axis=0) * time_repeats
  var = jnp.mean(dev / (n - 1))
  return InputStatistics(mean, var, mean_sq)


_jitted_moments = jax.jit(_moments, static_argnums=1)


def exponential_scale(stats: InputStatistics, fan_in: int) -> Array:
  """Eq. 53: s = sqrt(Var_x / (d (E_x2 + Var_x))), so that Var[I_EE] = Var_x."""
  return jnp.sqrt(stats.var / (fan_in * (stats.mean_sq + stats.var)))


def inhibitory_gain(stats: InputStatistics, fan_in: int) -> Array:
  """Eq. 54: g_I = sqrt(E_x2 + Var_x) / (sqrt(d) E_x), so that E[I_shunt] = std(I_EE)."""
  return jnp.sqrt(stats.mean_sq + stats.var) / (math.sqrt(fan_in) * stats.mean)


def plain_exponential_scale(fan_in: int) -> float:
  """Data-independent scale (DANN, spec §9): sqrt(2 pi / (d (2 pi - 1)))."""
  return math.sqrt(2 * math.pi / (fan_in * (2 * math.pi - 1)))


def plain_inhibitory_gain(fan_in: int) -> float:
  """Data-independent gain (DANN exp(alpha), spec §9): sqrt((2 pi - 1) / d)."""
  return math.sqrt((2 * math.pi - 1) / fan_in)


# How a user turns E-I Init off: a layer's option and the configs' field (spec §2, ablation).
PLAIN_INIT_HINT = ("turn E-I Init off with layers.EIOptions(ei_init=False) (the configs' "
                   "model.ei_init=False) for the plain initialisation")


def check_statistics(stats: InputStatistics, layer: str = "E-I layer") -> None:
  """Raise ``EIInitError`` if E_x <= 0 (g_I = sqrt(E_x2+Var_x)/(sqrt(d) E_x) would be infinite
  or negative, so Dale's law fails) or the moments are not finite; the message names the cause.

  Works on concrete values only; under ``jax.jit`` it is a no-op, and the layers also record
  their statistics in the ``ei_init_stats`` collection so that ``models.check_ei_init`` can verify
  a jitted init afterwards. Stacked statistics (a layer under ``nn.scan``, a vmapped init) are
  checked element by element and the first bad one is named by its index, ``layer[i]``.
  """
  try:
    mean, var, mean_sq = (np.asarray(v, dtype=np.float64) for v in stats)
  except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
    return
  mean, var, mean_sq = np.broadcast_arrays(mean, var, mean_sq)
  for index in np.ndindex(mean.shape):
    where = f"{layer}[{', '.join(map(str, index))}]" if index else layer
    _check_one(float(mean[index]), float(var[index]), float(mean_sq[index]), where)


def _check_one(mean: float, var: float, mean_sq: float, layer: str) -> None:
  """``check_statistics`` for the scalar moments of one layer."""
  if not all(np.isfinite([mean, var, mean_sq])):
    raise EIInitError(f"{layer}: E-I Init input statistics are not finite "
                      f"(E_x={mean}, Var_x={var}, E_x2={mean_sq}); check the input batch for NaN/Inf")
  if mean == 0.0 and mean_sq == 0.0:
    raise EIInitError(
        f"{layer}: E-I Init saw an all-zero input (E_x = 0), so g_I = sqrt(E_x2+Var_x)/"
        "(sqrt(d) E_x) is infinite. If an earlier spiking layer emits no spikes on the first "
        "batch, check the data scaling (images in [0, 1]) or use a larger init batch; or "
        f"{PLAIN_INIT_HINT}.")
  if mean <= 0.0:
    raise EIInitError(
        f"{layer}: E-I Init needs a non-negative input with a positive mean (spikes, or images "
        f"in [0, 1]) but this one has E_x = {mean:.4g}, so g_I = sqrt(E_x2+Var_x)/(sqrt(d) E_x) "
        "would be infinite or negative. Feed non-negative inputs (e.g. do not subtract the "
        f"mean), or {PLAIN_INIT_HINT}.")


def exponential(key: Array, shape, scale, dtype=jnp.float32) -> Array:
  """I.i.d. Exp(scale) samples (mean = std = scale).

  Drawn as a flat vector and reshaped: the same values as ``jax.random.exponential(key, shape)``
  (with JAX's default partitionable threefry every element depends only on its flat index), but
  an eager draw compiles once per size bucket (a power of two, the prefix of a longer draw is
  the shorter draw) instead of once per shape, the bulk of a first eager ``model.init``.
  """
  shape = tuple(shape)
  size = math.prod(shape)
  if isinstance(key, jax.core.Tracer) or not jax.config.jax_threefry_partitionable:
    flat = jax.random.exponential(key, (size,), dtype)
  else:
    bucket = _bucketed_exponential(key, max(256, 1 << max(size - 1, 0).bit_length()),
                                   jnp.dtype(dtype))
    return _scaled(bucket, jnp.asarray(scale, dtype), shape)
  return flat.reshape(shape) * jnp.asarray(scale, dtype)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _bucketed_exponential(key: Array, size: int, dtype) -> Array:
  """``size`` Exp(1) samples, compiled once per (size, dtype)."""
  return jax.random.exponential(key, (size,), dtype)


@functools.partial(jax.jit, static_argnums=2)
def _scaled(flat: Array, scale: Array, shape: tuple[int, ...]) -> Array:
  """The first prod(shape) entries of ``flat`` shaped ``shape``, times ``scale``."""
  return flat[:math.prod(shape)].reshape(shape) * scale


def ei_init_values(stats: InputStatistics | None, fan_in: int) -> tuple[Array, Array]:
  """(s, g_I) from input statistics (E-I Init), or the plain values when stats is None."""
  if stats is None:
    return (jnp.asarray(plain_exponential_scale(fan_in), jnp.float32),
            jnp.asarray(plain_inhibitory_gain(fan_in), jnp.float32))
  return exponential_scale(stats, fan_in), inhibitory_gain(stats, fan_in)
