"""An E-I layer's convolution, integrated current and LIF as one GPU kernel for the forward
pass alone (evaluation): the feed-forward currents are never written to memory.

The values are those of ``ei_lif.make_integrate_and_fire`` applied to the convolution
[I_bal | I_shunt] = x * [balanced_kernel | shunting_kernel] (spec §1.2, §3.1, §5):

    I_int = g_E . I_bal / d + b_E,    H_t = lambda V_{t-1} + I_int,t,    S_t = Theta(H_t - theta)

with d = I_shunt where it is positive and the sample's smallest positive I_shunt where it is 0.
That smallest value is a reduction over the whole sample (every position and unit of one row
of the merged B*T axis), but it matters only where I_shunt = 0 and I_bal != 0: where both are
0, I_int = b_E whatever d is. With non-negative weights (Dale's law) I_shunt is 0 only where the
receptive field is silent, so I_bal is 0 there too, unless training has zeroed every path from
some input to a unit's shunting current. So the kernel runs once, speculatively, with d = 1
where I_shunt = 0, convolving x, dividing and running the LIF's T steps on each block and
writing the spikes, each block's smallest positive I_shunt and whether any unit had I_shunt = 0
and I_bal != 0. Only if one had does it run again with the samples' true smallest values: a
``lax.cond`` on each device's own samples (speculation, test and rerun are one op that SPMD
partitioning splits over the samples), and one test for all vmapped replicas, so the condition
stays a branch and not a select of both.

Memory traffic: one read of the input and one write of the spikes, against the convolution's
[I_bal | I_shunt] (2 n_E channels) written, read by the reduction and read again by
``ei_lif``'s kernel (issue 21: this is what kept an eval step above twice the ANN's bytes); the
same FLOPs as the convolution. Differentiated, the op is the convolution followed by
``ei_lif.make_integrate_and_fire`` (a ``custom_vjp`` whose forward rule is that composition), so
training stores and differentiates exactly what it did before; only a forward pass outside
differentiation runs this kernel.

The convolution is a direct one: for each of the k x k taps, the block's positions shifted by
the tap (zero outside the map) times the tap's (C_in, n_E) kernel, summed over C_in in chunks
with float32 accumulation (``jnp.dot``: TF32 for float32 operands on an NVIDIA GPU, as XLA's
own convolutions by default). The kernel is written for a GPU (Pallas, lowered through
Triton); ``interpret=True`` runs it on any backend (the tests, on the CPU).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from ei_snn_jax.core import circuit, ei_lif, ei_prop, neurons

Array = jax.Array

# Block sizes (powers of two, the largest that divide the positions, n_E and C_in, at most):
# positions x output units per kernel instance, and input channels per product. Triton's
# products need at least 16 of each, so a layer qualifies only where all three allow it.
MAX_BLOCK_POSITIONS = 64
MAX_BLOCK_UNITS = 64
MAX_BLOCK_CHANNELS = 32
MIN_BLOCK = 16


def supports(x_shape: tuple[int, ...], kernel_shape: tuple[int, ...], *, time_repeats: int,
             strides=None, padding=None) -> bool:
  """Whether the kernel computes this layer: a stride-1 k x k convolution (odd k) with "same"
  padding k//2 (((k//2, k//2), (k//2, k//2))) on an NHWC input on the merged B*T axis (not a
  static input tiled over time), with positions, C_in and n_E divisible by 16 (Triton's
  smallest product). Dense layers (no strides or padding) do not qualify."""
  if len(x_shape) != 4 or len(kernel_shape) != 4 or strides is None or padding is None:
    return False
  k, kw, c_in, two_n_e = kernel_shape
  positions = x_shape[1] * x_shape[2]
  return (time_repeats == 1 and k == kw and k % 2 == 1 and tuple(strides) == (1, 1)
          and tuple(map(tuple, padding)) == ((k // 2, k // 2), (k // 2, k // 2))
          and two_n_e % 2 == 0 and positions % MIN_BLOCK == 0 and c_in % MIN_BLOCK == 0
          and (two_n_e // 2) % MIN_BLOCK == 0)


def make_conv_integrate_and_fire(T: int, currents: Callable[[Array, Array], Array],
                                 integrate_and_fire: Callable[..., Array], tau: float = 2.0,
                                 threshold: float = 1.0, interpret: bool = False
                                 ) -> Callable[..., Array]:
  """(x, kernel, g_E, b_E) -> spikes (B*T, H, W, n_E), sample-major (row b*T + t), in the dtype
  of x (exactly 0 or 1).

  x: the layer's input (B*T, H, W, C_in); kernel: [balanced_kernel | shunting_kernel] (k, k,
  C_in, 2 n_E), both in the computation dtype. ``currents`` (x, kernel) -> [I_bal | I_shunt] is
  the layer's convolution and ``integrate_and_fire`` (``ei_lif.make_integrate_and_fire``) its
  LIF: their composition is what is differentiated (reverse mode), and what the kernel equals up
  to float rounding (summation order). Outside differentiation the kernel of the module
  docstring computes it.
  """
  decay = 1.0 - 1.0 / float(tau)

  def composed(x, kernel, g_e, b_e):
    return integrate_and_fire(currents(x, kernel), g_e, b_e)

  @jax.custom_vjp
  def conv_integrate_and_fire(x, kernel, g_e, b_e):
    return _forward(x, kernel, g_e, b_e, T, decay, float(threshold), interpret)

  def fwd(x, kernel, g_e, b_e):   # training: the convolution, then ei_lif's kernels
    return jax.vjp(composed, x, kernel, g_e, b_e)

  def bwd(vjp, g):
    return vjp(g)

  conv_integrate_and_fire.defvjp(fwd, bwd)
  return conv_integrate_and_fire


def _forward(x, kernel, g_e, b_e, T: int, decay: float, threshold: float, interpret: bool):
  """The speculative kernel, and again with the true smallest values only where needed."""
  from jax.experimental.pallas import triton as pl_triton   # GPU lowering parameters

  rows, h, w, c_in = x.shape
  k, n_e = kernel.shape[0], kernel.shape[-1] // 2
  if rows % T or kernel.shape[:3] != (k, k, c_in) or g_e.shape != (n_e,):
    raise ValueError(f"input {x.shape} (B*{T} rows), kernel {kernel.shape} and g_E "
                     f"{g_e.shape} are not an E-I layer's (k, k, C_in, 2 n_E) convolution")
  acc = circuit.accumulation_dtype(x.dtype)
  samples, positions = rows // T, h * w
  bm = ei_lif._block(positions, MAX_BLOCK_POSITIONS)
  bn = ei_lif._block(n_e, MAX_BLOCK_UNITS)
  bk = ei_lif._block(c_in, MAX_BLOCK_CHANNELS)
  blocks = (positions // bm, n_e // bn)
  kernel_fn = functools.partial(_fire_kernel, T=T, bm=bm, height=h, width=w, k=k, bk=bk, acc=acc,
                                decay=decay, threshold=threshold)
  channel_spec = pl.BlockSpec((1, bn), lambda b, p, c: (0, c))
  block_spec = pl.BlockSpec((1, 1, 1, T), lambda b, p, c: (b, p, c, 0))

  def run(x_view, w_view, smallest, g_e, b_e):   # on the samples at hand
    local = x_view.shape[0]
    return pl.pallas_call(
        kernel_fn, grid=(local,) + blocks,
        in_specs=[pl.BlockSpec((1, T, positions, c_in), lambda b, p, c: (b, 0, 0, 0)),
                  pl.BlockSpec((k * k, c_in, 2, bn), lambda b, p, c: (0, 0, 0, c)),
                  pl.BlockSpec((1, T, 1, 1), lambda b, p, c: (b, 0, 0, 0)),
                  channel_spec, channel_spec],
        out_specs=[pl.BlockSpec((1, T, bm, bn), lambda b, p, c: (b, 0, p, c)),
                   block_spec, block_spec],
        out_shape=[jax.ShapeDtypeStruct((local, T, positions, n_e), x.dtype),
                   jax.ShapeDtypeStruct((local,) + blocks + (T,), acc),
                   jax.ShapeDtypeStruct((local,) + blocks + (T,), acc)],
        interpret=interpret, name="ei_conv_fire",
        compiler_params=pl_triton.CompilerParams(num_warps=4))(
            x_view, w_view, smallest, g_e, b_e)

  operands = (x.reshape(samples, T, positions, c_in),
              kernel.astype(x.dtype).reshape(k * k, c_in, 2, n_e),
              g_e.reshape(1, n_e).astype(acc), b_e.reshape(1, n_e).astype(acc))
  # The speculation, its test and the rerun on each device's own samples (one op that SPMD
  # partitioning splits over the samples: a rerun outside it would gather the batch).
  spikes = ei_lif._split_over_samples(_Speculation(run, acc), [4, 4, 2, 2], [4],
                                      shared=(1, 2, 3), batch=_Speculation.over_replicas)(
                                          *operands)
  return spikes.reshape(rows, h, w, n_e)


class _Speculation:
  """(x, w, g_E, b_E) -> spikes on the samples at hand, with ``lead`` leading replica axes:
  ``run`` (the kernel) with d = 1 where I_shunt = 0; then, if any unit had I_shunt = 0 and
  I_bal != 0 (in any sample of any replica here: one test, a ``lax.cond`` and not a select),
  ``run`` again with each sample's smallest positive I_shunt (+inf if none)."""

  def __init__(self, run, acc, lead: int = 0):
    self.run, self.acc, self.lead = run, acc, lead

  def over_replicas(self) -> "_Speculation":
    """The same over one more leading replica axis (vmapped replicas)."""
    return _Speculation(self.run, self.acc, self.lead + 1)

  def __call__(self, x, w, g_e, b_e):
    run = self.run
    for _ in range(self.lead):
      run = jax.vmap(run)
    ones = jnp.ones(x.shape[:-2] + (1, 1), self.acc)   # (..., B, T, 1, 1): d = 1 where 0
    spikes, mins, needed = run(x, w, ones, g_e, b_e)
    smallest = jnp.min(mins, axis=(-3, -2))[..., None, None]    # (..., B, T, 1, 1)
    # The branch that keeps the spikes first: XLA copies a passthrough branch's result unless it
    # is the conditional's first branch (a copy of the spikes in every step, openxla/xla#46314).
    return jax.lax.cond(jnp.all(needed == 0), lambda: spikes,
                        lambda: run(x, w, smallest, g_e, b_e)[0])


def _convolve(x_ref, w_ref, t, positions: Array, halves: tuple[int, ...], *, height: int,
              width: int, k: int, bk: int, acc) -> tuple[Array, ...]:
  """One block of the convolution at step t: for each of ``halves`` (0: I_bal, 1: I_shunt),
  the sum over the k x k taps and the C_in chunks of x[shifted positions] @ W[tap], (block
  positions, block units) in ``acc``. Positions shifted off the map read 0 (zero padding).
  Loops, not unrolled: one product in the kernel's code (Triton compiles it in seconds)."""
  c_in = x_ref.shape[-1]
  bn = w_ref.shape[-1]
  row, col = positions // width, positions % width
  channels = jnp.arange(bk, dtype=jnp.int32)[None, :]

  def tap(j, sums):
    # (j // k, j % k) as lax ops: jnp's floor division of a loop index trips Triton's lowering
    r = row + jax.lax.div(j, jnp.int32(k)) - k // 2
    c = col + jax.lax.rem(j, jnp.int32(k)) - k // 2
    inside = ((r >= 0) & (r < height) & (c >= 0) & (c < width))[:, None]
    source = jnp.where(inside, (r * width + c)[:, None], 0)   # in bounds: masked after the read

    def chunk(i, sums):
      c0 = pl.multiple_of(i * bk, bk)
      block = x_ref[0, t, source, c0 + channels]
      block = jnp.where(inside, block, jnp.zeros((), block.dtype))
      return tuple(s + jnp.dot(block, w_ref[j, pl.ds(c0, bk), half, :],
                               preferred_element_type=acc)
                   for s, half in zip(sums, halves))

    return jax.lax.fori_loop(0, c_in // bk, chunk, sums)

  zeros = tuple(jnp.zeros((positions.shape[0], bn), acc) for _ in halves)
  return jax.lax.fori_loop(0, k * k, tap, zeros)


def _block_positions(bm: int) -> Array:
  """The flat positions (row * W + column) of this kernel instance's block of ``bm``."""
  return pl.program_id(1) * bm + jnp.arange(bm, dtype=jnp.int32)


def _fire_kernel(x_ref, w_ref, smallest_ref, g_e_ref, b_e_ref, spikes_ref, mins_ref,
                 needed_ref, *, T: int, bm: int, decay: float, threshold: float, **geometry):
  """One block: I_bal and I_shunt by the convolution, d = I_shunt, or the given smallest value
  where it is 0; I_int = g_E . I_bal / d + b_E, then the LIF's T steps from V_0 = 0 (spec §5),
  writing the spikes and, at each step, the block's smallest positive I_shunt (+inf if none)
  and whether some unit had I_shunt = 0 and I_bal != 0 (1 or 0)."""
  positions = _block_positions(bm)
  g_e, b_e = g_e_ref[...], b_e_ref[...]

  def step(t, v):
    i_bal, i_shunt = _convolve(x_ref, w_ref, t, positions, (0, 1), **geometry)
    zero = i_shunt == 0
    mins_ref[0, 0, 0, t] = jnp.min(jnp.min(jnp.where(zero, jnp.inf, i_shunt), axis=1), axis=0)
    needed = (zero & (i_bal != 0)).astype(i_bal.dtype)
    needed_ref[0, 0, 0, t] = jnp.max(jnp.max(needed, axis=1), axis=0)
    d = ei_prop.replace_zeros(i_shunt, smallest_ref[0, t])
    _, spike, v = neurons.charge_fire_reset(v, g_e * i_bal / d + b_e, decay, threshold)
    spikes_ref[0, t] = spike.astype(spikes_ref.dtype)
    return v

  jax.lax.fori_loop(0, T, step, jnp.zeros((bm, w_ref.shape[-1]), g_e.dtype))   # V_0 = 0
