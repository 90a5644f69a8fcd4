"""Leaky integrate-and-fire neurons with surrogate-gradient spikes (spec §5).

The LIF of the reference (spikingjelly ``LIFNode``: tau 2, ``decay_input=False``, threshold 1,
soft reset with the reset detached, V_0 = 0) is written here as pure functions:

    charge:  H_t = (1 - 1/tau) * V_{t-1} + x_t
    fire:    S_t = Theta(H_t - theta)            (Theta(u) = 1 if u >= 0)
    reset:   V_t = H_t - theta * sg(S_t)

The membrane potential V is explicit state: ``lif_initial_state`` gives V_0, ``lif_step`` maps
(V_{t-1}, x_t) to (V_t, S_t) (streaming, one time step at a time), ``lif_scan`` runs it over a
leading T axis with ``jax.lax.scan`` and returns the final V_T with the spikes, and
``lif_multistep`` returns the spikes alone; all give identical outputs. Spikes are produced by
a ``jax.custom_jvp`` Heaviside whose derivative is a surrogate derivative (so forward- and
reverse-mode autodiff both work): a named one of
``SURROGATES`` or any function (u, alpha) -> dS/du. ``make_lif_multistep`` is
``lif_multistep`` with its backward pass through time written out (one ``custom_jvp``), which
the ``LIF`` layer uses for short windows (``WRITTEN_OUT_BACKWARD_MAX_T``).

Time folded into the batch: the layers take the T time steps of B samples as one merged axis of
B*T rows, sample-major (row b*T + t); ``split_time`` / ``merge_time`` convert it to and from the
(T, B, ...) stack of the time loop, ``tile_time`` repeats a static input over T and
``mean_over_time`` averages each sample's T rows.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

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

# The config options this module owns: dotted field -> (default, allowed values or range,
# meaning). ``training.config.base_config`` is assembled from these (docs/options.md).
CONFIG_OPTIONS = {
    "model.tau": (2.0, "> 0", "membrane time constant (spec §5)"),
    "model.threshold": (1.0, "> 0", "firing threshold"),
    "model.surrogate": ("sigmoid", tuple(SURROGATES), "surrogate"),
    "model.surrogate_alpha": (4.0, "> 0", "surrogate sharpness"),
}


def _surrogate_derivative(surrogate) -> Callable[[Array, float], Array]:
  """The derivative (u, alpha) -> dS/du named by ``surrogate`` (or the callable itself)."""
  if callable(surrogate):
    return surrogate
  if surrogate in SURROGATES:
    return SURROGATES[surrogate]
  raise ValueError(f"unknown surrogate {surrogate!r}: choose one of {sorted(SURROGATES)} or "
                   f"pass a function (u, alpha) -> dS/du")


@functools.lru_cache(maxsize=None)
def make_spike_fn(surrogate: str | Callable[[Array, float], Array] = "sigmoid",
                  alpha: float = 4.0) -> Callable[[Array], Array]:
  """Heaviside spike S = Theta(u) (u >= 0 fires) with a surrogate gradient (spec §5).

  Args:
    surrogate: one of ``SURROGATES`` ("sigmoid" is the reference's, with alpha = 4), or any
      callable ``(u, alpha) -> dS/du`` (an array shaped like u), e.g.
      ``lambda u, a: a * jnp.exp(-a * jnp.abs(u))``. Pass the same function object each time
      to reuse the compiled spike function.
    alpha: surrogate sharpness, passed to the derivative.

  Returns:
    A ``custom_jvp`` function u -> spikes (same dtype as u, values exactly 0 or 1) whose
    derivative is the surrogate, dS = sigma'(u) du: forward mode (``jax.jvp``, ``jacfwd``) and
    reverse mode (``jax.grad``, the transpose of that linear rule) both work.
  """
  derivative = _surrogate_derivative(surrogate)
  alpha = float(alpha)

  @jax.custom_jvp
  def spike(u):
    return heaviside(u)

  @spike.defjvp
  def spike_jvp(primals, tangents):
    (u,), (du,) = primals, tangents
    return spike(u), du * derivative(u, alpha).astype(du.dtype)

  return spike


def heaviside(u: Array) -> Array:
  """Theta(u): 1 where u >= 0, else 0, in the dtype of u (the spike's forward value)."""
  return (u >= 0).astype(u.dtype)


def charge_fire_reset(v, x, decay, threshold, spike_fn=heaviside) -> tuple[Array, Array, Array]:
  """The LIF's one update (spec §5), the only place it is written: (H_t, S_t, V_t) with
  H_t = decay V_{t-1} + x_t, S_t = spike_fn(H_t - theta), V_t = H_t - theta sg(S_t) (also
  inside ``ei_lif``'s kernels)."""
  h = decay * v + x
  s = spike_fn(h - threshold)
  return h, s, h - threshold * jax.lax.stop_gradient(s)


def lif_step(v: Array, x: Array, *, tau: float | Array = 2.0, threshold: float | Array = 1.0,
             spike_fn: Callable[[Array], Array] | None = None) -> tuple[Array, Array]:
  """One LIF step (spec §5): returns (V_t, S_t) from V_{t-1} and the input x_t.

  H_t = (1 - 1/tau) V_{t-1} + x_t; S_t = Theta(H_t - theta); V_t = H_t - theta * sg(S_t).
  """
  _, s, v_next = charge_fire_reset(v, x, 1.0 - 1.0 / tau, threshold,
                                   spike_fn or make_spike_fn())
  return v_next, s


def lif_initial_state(x_t: Array) -> Array:
  """The membrane potential before the first step, V_0 = 0, shaped like one step's input x_t."""
  return jnp.zeros_like(x_t)


def lif_scan(v0: Array, x: Array, *, tau: float | Array = 2.0, threshold: float | Array = 1.0,
             spike_fn: Callable[[Array], Array] | None = None,
             unroll: int | bool = True) -> tuple[Array, Array]:
  """Run ``lif_step`` from ``v0`` over the leading time axis of x (T, ...) with ``lax.scan``.

  Returns ``(V_T, spikes)``: the final membrane potential (the state to continue from, e.g.
  the next chunk of a stream) and the spikes, shape (T, ...). ``tau`` and ``threshold`` may be
  traced arrays (learnable, as in a parametric LIF). ``unroll`` as in ``lif_multistep``.
  """
  spike_fn = spike_fn or make_spike_fn()

  def body(v, x_t):
    return lif_step(v, x_t, tau=tau, threshold=threshold, spike_fn=spike_fn)

  return jax.lax.scan(body, v0, x, unroll=unroll)


def lif_multistep(x: Array, *, tau: float | Array = 2.0, threshold: float | Array = 1.0,
                  spike_fn: Callable[[Array], Array] | None = None,
                  unroll: int | bool = True, v0: Array | None = None) -> Array:
  """Spikes of ``lif_scan`` over x (T, ...) from V_0 = 0 (or ``v0``).

  Args:
    x: input currents, shape (T, ...).
    unroll: passed to ``lax.scan``. Full unrolling (True, the default) avoids XLA:CPU's slow
      convolution gradients inside rolled loops and costs little for the small T of the paper.
    v0: optional initial membrane potential (default zeros).

  Returns:
    Spikes of shape (T, ...), dtype of x.
  """
  v = lif_initial_state(x[0]) if v0 is None else v0
  return lif_scan(v, x, tau=tau, threshold=threshold, spike_fn=spike_fn, unroll=unroll)[1]


# The longest window for which ``layers.LIF`` uses ``make_lif_multistep``. Its backward pass
# recomputes every charge H_k for each g_k inside one fused kernel (T(T+1)/2 charge updates per
# element): measured on this project's 2-core CPU (LIF + readout, batch 16, 32x32x64 maps),
# written-out vs autodiff backward took 5.2 vs 7.1 ms and 124 vs 221 MB at T = 4, but
# 29.9 vs 19.6 ms at T = 6 and 101.9 vs 78.5 ms at T = 16.
WRITTEN_OUT_BACKWARD_MAX_T = 4


def _charges(x: Array, decay: float, threshold: float,
             time_axis: int = 0) -> tuple[list[Array], list[Array]]:
  """The charges H_t and spikes S_t of the LIF from V_0 = 0 over the time axis of x
  (``lif_step``'s update, ``charge_fire_reset``, so the spikes are identical)."""
  steps = [jax.lax.index_in_dim(x, t, time_axis, keepdims=False) for t in range(x.shape[time_axis])]
  v = jnp.zeros_like(steps[0])
  charges, spikes = [], []
  for x_t in steps:
    h, s, v = charge_fire_reset(v, x_t, decay, threshold, heaviside)
    charges.append(h)
    spikes.append(s)
  return charges, spikes


def _discounted_sums_written_out(dx: Array, decay: float, time_axis: int) -> Array:
  steps = dx.shape[time_axis]
  dxs = [jax.lax.index_in_dim(dx, t, time_axis, keepdims=False) for t in range(steps)]
  return jnp.stack([sum(decay ** (t - j) * dxs[j] for j in range(t + 1)) for t in range(steps)],
                   axis=time_axis)


def _discounted_sums_matmul(dx: Array, decay: float, time_axis: int) -> Array:
  steps = dx.shape[time_axis]
  t, j = np.indices((steps, steps))
  discount = jnp.asarray(np.where(t >= j, decay ** np.maximum(t - j, 0), 0.0), dx.dtype)
  return jnp.einsum("tj,j...->t..." if time_axis == 0 else "tj,bj...->bt...", discount, dx,
                    precision=jax.lax.Precision.HIGHEST)


def discounted_sums(dx: Array, decay: float, time_axis: int = 0) -> Array:
  """sum_{j <= t} decay^(t - j) dx_j for every t over the time axis of dx (linear in dx).

  Compiled for a GPU or TPU: written out over the time slices (T(T+1)/2 multiply-adds per
  element); its transpose, the reverse sums of the LIF's backward pass, is one independent sum
  per time step that XLA computes in the elementwise pass that forms them. Compiled for the
  CPU: one T x T matmul over the time axis, which XLA:CPU runs faster (E-I VGG-8, batch 64:
  ~300 against ~335 ms of CPU time per train step) but which on a GPU is a pass of its own
  (~1 GB per E-I VGG-16 train step on an H200, issue 21). ``jax.lax.platform_dependent``: the
  platform being lowered for chooses; the two are equal up to float rounding."""
  return jax.lax.platform_dependent(
      dx, cpu=lambda d: _discounted_sums_matmul(d, decay, time_axis),
      default=lambda d: _discounted_sums_written_out(d, decay, time_axis))


@functools.lru_cache(maxsize=None)
def make_lif_multistep(tau: float = 2.0, threshold: float = 1.0,
                       surrogate: str | Callable[[Array, float], Array] = "sigmoid",
                       alpha: float = 4.0, time_axis: int = 0) -> Callable[[Array], Array]:
  """``lif_multistep`` from V_0 = 0 with constant tau and theta, with its backward pass
  written out: x (T, ...) -> spikes (T, ...), the same spikes and the same gradient (up to
  float rounding) as autodiff of the scan. ``time_axis=1`` takes x (B, T, ...) instead, the
  merged B*T axis reshaped as it lies in memory (no transpose to a leading T axis).

  With the reset detached (V_t = H_t - theta sg(S_t)) and lambda = 1 - 1/tau, the gradient of
  the charge obeys dL/dH_t = dS_t sigma'(H_t - theta) + lambda dL/dH_{t+1}, and dL/dx_t =
  dL/dH_t, so

      dL/dx_t = sum_{k >= t} lambda^(k - t) g_k,    g_k = dS_k sigma'(H_k - theta).

  Written as a ``custom_jvp`` whose tangent is linear in dx: dS_t = sigma'(H_t - theta)
  sum_{j <= t} lambda^(t - j) dx_j. Forward mode uses it as it is; reverse mode transposes it
  into the sums above (``discounted_sums``: written out for a GPU or TPU, where XLA computes
  them in the elementwise pass that forms the g_k, the charges recomputed there from x; one
  T x T matmul for the CPU). Autodiff of the scan instead emits one kernel per time step, each
  re-reading the whole T*B operand: in E-I VGG-16's training step that recurrence cost ~13
  operand-sized passes per LIF layer against ~7 with the matmul (issue 11).

  Args:
    tau, threshold: the LIF constants (Python numbers; a learnable tau or threshold goes
      through ``lif_multistep``, whose autodiff gives their gradients).
    surrogate, alpha: the surrogate derivative, as in ``make_spike_fn``.

  Returns:
    A ``custom_jvp`` function x -> spikes (dtype of x, values exactly 0 or 1), differentiable
    in forward and reverse mode.
  """
  derivative = _surrogate_derivative(surrogate)
  decay, threshold, alpha = 1.0 - 1.0 / float(tau), float(threshold), float(alpha)

  ax = time_axis
  if ax not in (0, 1):
    raise ValueError(f"time_axis must be 0 (T, ...) or 1 (B, T, ...), got {time_axis}")

  @jax.custom_jvp
  def lif(x):
    return jnp.stack(_charges(x, decay, threshold, ax)[1], axis=ax)

  @lif.defjvp
  def lif_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    charges, spikes = _charges(x, decay, threshold, ax)
    spikes = jnp.stack(spikes, axis=ax)
    slope = jnp.stack([derivative(h - threshold, alpha).astype(dx.dtype) for h in charges],
                      axis=ax)
    # dS_t = sigma'(H_t - theta) dH_t, dH_t = sum_{j <= t} lambda^(t - j) dx_j.
    d_charges = discounted_sums(dx, decay, ax)
    return spikes, (slope * d_charges).astype(x.dtype)

  return lif


def split_time(x: Array, T: int) -> Array:
  """(B*T, ...) merged batch -> (T, B, ...), the time axis leading for the LIF's loop.

  The merged axis is sample-major: row b*T + t is sample b at time step t, so that the T rows of
  a sample are adjacent. A batch sharded over devices (data parallelism) then stays sharded
  the same way on the merged axis and nothing moves between devices at this reshape (a
  t-major merge, t*B + b as in the PyTorch reference, puts other devices' samples in every
  device's block and makes XLA gather the batch, issue 21). Every op but the LIF acts on each
  row on its own (spec §1.4), so the row order changes no value.
  """
  if x.shape[0] % T:
    raise ValueError(f"merged batch {x.shape[0]} is not divisible by T={T}")
  return jnp.swapaxes(x.reshape((x.shape[0] // T, T) + x.shape[1:]), 0, 1)


def merge_time(x: Array) -> Array:
  """(T, B, ...) -> (B*T, ...), sample-major (row b*T + t): the inverse of ``split_time``.

  Also the way to merge a sequence input (T, B, ...) for the library's layers.
  """
  return jnp.swapaxes(x, 0, 1).reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


def tile_time(x: Array, T: int) -> Array:
  """(B, ...) -> (B*T, ...) merged sample-major: the same sample at every time step (direct
  encoding of a static image, spec §6.1); equal to ``merge_time`` of x repeated T times."""
  if T == 1:
    return x
  return jnp.repeat(x, T, axis=0)


def mean_over_time(x: Array, T: int) -> Array:
  """(B*T, ...) merged sample-major -> (B, ...): the mean over the T time steps of each sample
  (the model output, spec §6.1)."""
  if x.shape[0] % T:
    raise ValueError(f"merged batch {x.shape[0]} is not divisible by T={T}")
  return jnp.mean(x.reshape((x.shape[0] // T, T) + x.shape[1:]), axis=1)
