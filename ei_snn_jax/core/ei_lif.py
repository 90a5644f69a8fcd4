"""An E-I layer's integrated current fed straight into its LIF neurons, as two GPU kernels
(Pallas, lowered through Triton): one forward, one backward.

The values are those of ``circuit.fused_integrated_current`` (the paper's E-I Prop: adaptive
stabilisation with its straight-through gradient) followed by the LIF from V_0 = 0 (spec §5,
``neurons.make_lif_multistep``):

    I_int = g_E . I_bal / d + b_E,    H_t = lambda V_{t-1} + I_int,t,    S_t = Theta(H_t - theta)

with d the stabilised I_shunt (zeros replaced by the sample's smallest positive value, which
XLA reduces first) and lambda = 1 - 1/tau. The forward kernel reads [I_bal | I_shunt] once and
writes the spikes; only [I_bal | I_shunt] and the smallest values are kept for the backward
kernel, which reads them with dL/dS once, recomputes the charges H_t, and writes
dL/d[I_bal | I_shunt] and each block's share of dL/dg_E and dL/db_E:

    g_k = dL/dS_k sigma'(H_k - theta),    dL/dI_int,t = sum_{k >= t} lambda^(k - t) g_k,
    dL/dI_bal = a,  dL/dI_shunt = -a I_bal / d  (a = dL/dI_int . g_E / d),
    dL/dg_E = sum dL/dI_int . I_bal / d,  dL/db_E = sum dL/dI_int.

Composed, XLA stores I_int for the LIF and dL/dI_int between the two backward passes and
splits the LIF's time recurrence over several kernels that each re-read the currents: about 12
feature-map-sized passes per layer in the backward pass against 5 here (issue 21). The kernels
are written for a GPU; ``interpret=True`` runs the same kernels on any backend (the tests, on the
CPU). ``layers._EILayer`` uses them where it is compiled for an NVIDIA GPU (``cuda``).
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.custom_batching
import jax.numpy as jnp
from jax.experimental import pallas as pl

from ei_snn_jax.core import circuit, ei_prop, neurons

Array = jax.Array

# Elements of one time step of one array a kernel instance holds (block positions x channels),
# at most; blocks are powers of two (Triton's), the largest that divide the positions and n_E.
BLOCK_ELEMENTS = 512
MAX_BLOCK_CHANNELS = 128


def _block(n: int, limit: int) -> int:
  """The largest power of two that divides n and is at most ``limit``."""
  block = 1
  while block * 2 <= limit and n % (block * 2) == 0:
    block *= 2
  return block


@functools.lru_cache(maxsize=None)
def make_integrate_and_fire(T: int, time_repeats: int = 1, tau: float = 2.0,
                            threshold: float = 1.0,
                            surrogate: str | Callable[[Array, float], Array] = "sigmoid",
                            alpha: float = 4.0, interpret: bool = False) -> Callable[..., Array]:
  """(stored, g_E, b_E) -> spikes (B*T, ...), sample-major (row b*T + t), in the dtype of
  ``stored`` (exactly 0 or 1; bfloat16 currents give bfloat16 spikes and take a bfloat16
  dL/dS).

  ``stored`` is [I_bal | I_shunt] (last axis, n_E each), the E-I layer's
  feed-forward currents on the merged B*T axis, or on B samples that stand for ``time_repeats``
  = T identical time steps (a static image in the first layer: I_int is the same at every
  step). The LIF runs T steps from V_0 = 0 with constant tau and theta and the surrogate
  derivative ``surrogate`` (``neurons.make_spike_fn``). The same spikes as
  ``make_lif_multistep`` of ``circuit.fused_integrated_current``, and the same gradients up to
  float rounding. Reverse-mode autodiff only (a ``custom_vjp``); the forward and the backward
  pass are Pallas kernels, for a GPU (``interpret=True``: interpreted, on any backend).
  """
  if time_repeats not in (1, T):
    raise ValueError(f"time_repeats={time_repeats} must be 1 (currents on the merged B*T axis) "
                     f"or T={T} (a static input)")
  derivative = neurons._surrogate_derivative(surrogate)
  decay, threshold, alpha = 1.0 - 1.0 / float(tau), float(threshold), float(alpha)

  @jax.custom_vjp
  def integrate_and_fire(stored, g_e, b_e):
    return forward(stored, g_e, b_e)[0]

  def forward(stored, g_e, b_e):
    n_e = g_e.shape[-1]
    if stored.ndim < 2 or stored.shape[-1] != 2 * n_e or stored.shape[0] % (T // time_repeats):
      raise ValueError(f"stored currents of shape {stored.shape} are not [I_bal | I_shunt] of "
                       f"{n_e} units each on a merged axis of B*{T // time_repeats} rows")
    smallest = ei_prop.smallest_positive(stored[..., n_e:]).astype(
        circuit.accumulation_dtype(stored.dtype))
    kernel = functools.partial(_forward_kernel, T=T, repeats=time_repeats > 1, decay=decay,
                               threshold=threshold)
    spikes = _call(kernel, stored, smallest, g_e, b_e, None, T, time_repeats > 1, interpret)
    return spikes, (stored, smallest, g_e, b_e)

  def backward(residuals, g):
    stored, smallest, g_e, b_e = residuals
    kernel = functools.partial(_backward_kernel, T=T, repeats=time_repeats > 1, decay=decay,
                               threshold=threshold, derivative=derivative, alpha=alpha)
    g_stored, sums = _call(kernel, stored, smallest, g_e, b_e, g, T, time_repeats > 1,
                           interpret)
    g_g_e, g_b_e = jnp.sum(sums, axis=(0, 1))
    return g_stored, g_g_e.astype(g_e.dtype), g_b_e.astype(b_e.dtype)

  integrate_and_fire.defvjp(forward, backward)
  return integrate_and_fire


def _call(kernel, stored, smallest, g_e, b_e, g, T: int, repeats: bool, interpret: bool):
  """Run the forward (``g`` None) or backward kernel over (samples, position blocks, channel
  blocks). Forward: returns the spikes (B*T, ..., n_E); backward: dL/dstored shaped like
  ``stored`` and the per-block sums (B, blocks, 2, n_E) of dL/dg_E and dL/db_E."""
  from jax.experimental.pallas import triton as pl_triton   # GPU lowering parameters

  n_e = g_e.shape[-1]
  positions = stored[0, ..., 0].size
  samples = stored.shape[0] // (1 if repeats else T)
  bc = _block(n_e, MAX_BLOCK_CHANNELS)
  bp = _block(positions, max(1, BLOCK_ELEMENTS // bc))
  grid = (samples, positions // bp, n_e // bc)
  acc = smallest.dtype
  # [I_bal | I_shunt] viewed as (B, [T,] P, 2, n_E): both halves of a block in one operand.
  lead = (samples,) if repeats else (samples, T)
  stored_view = stored.reshape(lead + (positions, 2, n_e))
  stored_spec = (pl.BlockSpec((1, bp, 2, bc), lambda b, p, c: (b, p, 0, c)) if repeats else
                 pl.BlockSpec((1, T, bp, 2, bc), lambda b, p, c: (b, 0, p, 0, c)))
  smallest_view = smallest.reshape(lead + (1, 1))
  smallest_spec = (pl.BlockSpec((1, 1, 1), lambda b, p, c: (b, 0, 0)) if repeats else
                   pl.BlockSpec((1, T, 1, 1), lambda b, p, c: (b, 0, 0, 0)))
  channel_spec = pl.BlockSpec((1, bc), lambda b, p, c: (0, c))
  spikes_shape = (samples, T, positions, n_e)   # spikes and dL/dS, (B, T, P, n_E)
  spikes_spec = pl.BlockSpec((1, T, bp, bc), lambda b, p, c: (b, 0, p, c))
  in_specs = [stored_spec, smallest_spec, channel_spec, channel_spec]
  operands = [stored_view, smallest_view, g_e.reshape(1, n_e).astype(acc),
              b_e.reshape(1, n_e).astype(acc)]
  if g is None:
    out_specs = spikes_spec
    out_shape = jax.ShapeDtypeStruct(spikes_shape, stored.dtype)
  else:
    in_specs.append(spikes_spec)
    operands.append(g.reshape(spikes_shape))
    out_specs = [stored_spec, pl.BlockSpec((1, 1, 2, bc), lambda b, p, c: (b, p, 0, c))]
    out_shape = [jax.ShapeDtypeStruct(stored_view.shape, stored.dtype),
                 jax.ShapeDtypeStruct((samples, positions // bp, 2, n_e), acc)]
  name = "ei_lif_forward" if g is None else "ei_lif_backward"

  def run(*operands):   # on the samples at hand (all of them, or one device's)
    local = operands[0].shape[0]
    shapes = jax.tree.map(lambda o: jax.ShapeDtypeStruct((local,) + o.shape[1:], o.dtype),
                          out_shape)
    return pl.pallas_call(
        kernel, grid=(local,) + grid[1:], in_specs=in_specs, out_specs=out_specs,
        out_shape=shapes, interpret=interpret, name=name,
        compiler_params=pl_triton.CompilerParams(num_warps=4))(*operands)

  out = _split_over_samples(run, [o.ndim for o in operands],
                            [len(o.shape) for o in jax.tree.leaves(out_shape)])(*operands)
  if g is None:
    return out.reshape((samples * T,) + stored.shape[1:-1] + (n_e,))
  g_stored, sums = out
  return g_stored.reshape(stored.shape), sums


def _split_over_samples(run, operand_ranks: list[int], result_ranks: list[int], lead: int = 0,
                        shared: tuple[int, ...] = (2, 3), batch: Callable = jax.vmap):
  """``run`` (operands -> results, every one of them with the samples on axis ``lead`` but
  the operands at ``shared``) as an op that SPMD partitioning splits over the samples: under a
  data-parallel ``jit`` each device runs the kernel on its own samples (without it XLA gathers
  the batch to every device, issue 21). The operands at ``shared`` (g_E and b_E; a kernel's
  weights) are replicated over the devices that share the samples. The ``lead`` axes before the
  samples are vmapped replicas (``train.num_replicas``): every operand and result has them, and
  they keep the sharding the first operand has; ``batch(run)`` is ``run`` over one more of them
  (default ``jax.vmap``)."""
  from jax.experimental.custom_partitioning import custom_partitioning
  from jax.sharding import NamedSharding, PartitionSpec as P

  def spec_of(arg_shapes):   # the first operand's mesh axes of the replica and sample axes
    spec = tuple(arg_shapes[0].sharding.spec) + (None,) * (lead + 1)
    return spec[:lead + 1]

  def shardings(mesh, shapes, axes):
    return jax.tree.map(
        lambda a: NamedSharding(mesh, P(*axes, *([None] * (len(a.shape) - len(axes))))), shapes)

  def infer(mesh, arg_shapes, result_shape):
    return shardings(mesh, result_shape, spec_of(arg_shapes))

  def partition(mesh, arg_shapes, result_shape):
    axes = spec_of(arg_shapes)
    args = tuple(shardings(mesh, a, axes[:lead] if i in shared else axes)
                 for i, a in enumerate(arg_shapes))
    return mesh, run, shardings(mesh, result_shape, axes), args

  split = custom_partitioning(run)
  split.def_partition(partition, infer_sharding_from_operands=infer,
                      sharding_rule=_sharding_rule(operand_ranks, result_ranks, lead, shared))

  # custom_partitioning has no batching rule: under vmap the op becomes the same split op over
  # ``batch(run)``, e.g. the kernel vmapped (pallas_call's own rule: one more grid axis), the new
  # axis a replica axis.
  @jax.custom_batching.custom_vmap
  def op(*operands):
    return split(*operands)

  @op.def_vmap
  def _(axis_size, in_batched, *operands):
    operands = [o if batched else jnp.broadcast_to(o, (axis_size,) + o.shape)
                for o, batched in zip(operands, in_batched)]
    batched = _split_over_samples(batch(run), [r + 1 for r in operand_ranks],
                                  [r + 1 for r in result_ranks], lead + 1, shared, batch)
    out = batched(*operands)
    return out, jax.tree.map(lambda _: True, out)

  return op


def _sharding_rule(operand_ranks: list[int], result_ranks: list[int], lead: int = 0,
                   shared: tuple[int, ...] = (2, 3)) -> str:
  """Shardy's rule for ``_split_over_samples``, e.g. "s a b, c d, e f -> s g h" (``lead`` 0):
  the replica axes (factors r0, r1, ...) and then the samples (factor s) shared by every operand
  but those at ``shared`` (g_E and b_E; a kernel's weights), which share only the replica axes,
  and by every result; every other axis a factor of its own."""
  letters = iter(f"f{i}" for i in range(sum(operand_ranks) + sum(result_ranks)))
  replicas = [f"r{i}" for i in range(lead)]
  def term(rank, samples):
    common = replicas + (["s"] if samples else [])
    return " ".join(common + [next(letters) for _ in range(rank - len(common))])
  operands = [term(r, i not in shared) for i, r in enumerate(operand_ranks)]
  return ", ".join(operands) + " -> " + ", ".join(term(r, True) for r in result_ranks)


def _block_currents(stored_ref, smallest_ref, t: int, repeats: bool) -> tuple[Array, Array]:
  """I_bal and d (I_shunt with its zeros replaced by the sample's smallest positive value) of
  one block at step t (a static input has one step), (positions, channels), float32+."""
  acc = smallest_ref.dtype
  at = (0,) if repeats else (0, t)
  i_bal = stored_ref[at + (slice(None), 0, slice(None))].astype(acc)
  i_shunt = stored_ref[at + (slice(None), 1, slice(None))].astype(acc)
  return i_bal, ei_prop.replace_zeros(i_shunt, smallest_ref[at])


def _forward_kernel(stored_ref, smallest_ref, g_e_ref, b_e_ref, spikes_ref, *, T, repeats, decay,
                    threshold):
  """One block: I_int = g_E . I_bal / d + b_E, then the LIF's T steps from V_0 = 0 (spec §5)."""
  g_e, b_e = g_e_ref[...], b_e_ref[...]
  v = None
  for t in range(T):
    if t == 0 or not repeats:   # a static input has the same I_int at every step
      i_bal, d = _block_currents(stored_ref, smallest_ref, t, repeats)
      i_int = g_e * i_bal / d + b_e
    v = jnp.zeros_like(i_int) if v is None else v   # V_0 = 0
    _, spike, v = neurons.charge_fire_reset(v, i_int, decay, threshold)
    spikes_ref[0, t] = spike.astype(spikes_ref.dtype)


def _backward_kernel(stored_ref, smallest_ref, g_e_ref, b_e_ref, g_ref, g_stored_ref, sums_ref,
                     *, T, repeats, decay, threshold, derivative, alpha):
  """One block: recompute I_int and the charges H_t, then the reverse sums and the gradients
  (module docstring), in at least float32."""
  acc = smallest_ref.dtype
  g_e, b_e = g_e_ref[...], b_e_ref[...]                      # (1, bc)

  def currents(t):
    return _block_currents(stored_ref, smallest_ref, t, repeats)

  fixed = currents(0) if repeats else None
  g_k, v = [], None
  for t in range(T):
    i_bal, d = fixed if repeats else currents(t)
    i_int = g_e * i_bal / d + b_e
    v = jnp.zeros_like(i_int) if v is None else v   # V_0 = 0
    h, _, v = neurons.charge_fire_reset(v, i_int, decay, threshold)
    g_k.append(g_ref[0, t].astype(acc) * derivative(h - threshold, alpha).astype(acc))

  def write(at, g_int, i_bal, d):
    dtype = g_stored_ref.dtype
    g_stored_ref[at + (slice(None), 0, slice(None))] = (g_int * g_e / d).astype(dtype)
    g_stored_ref[at + (slice(None), 1, slice(None))] = (
        -(g_int * g_e * i_bal) / d / d).astype(dtype)

  g_int, total = None, None
  sum_g_e = jnp.zeros_like(g_e)
  sum_b_e = jnp.zeros_like(g_e)
  for t in reversed(range(T)):   # dL/dI_int,t = g_t + lambda dL/dI_int,t+1
    g_int = g_k[t] if g_int is None else g_k[t] + decay * g_int
    if repeats:
      total = g_int if total is None else total + g_int
      continue
    i_bal, d = currents(t)   # read again (the block is in cache): fewer live registers
    write((0, t), g_int, i_bal, d)
    sum_g_e += jnp.sum(g_int * (i_bal / d), axis=0, keepdims=True)
    sum_b_e += jnp.sum(g_int, axis=0, keepdims=True)
  if repeats:
    i_bal, d = fixed
    write((0,), total, i_bal, d)
    sum_g_e = jnp.sum(total * (i_bal / d), axis=0, keepdims=True)
    sum_b_e = jnp.sum(total, axis=0, keepdims=True)
  sums_ref[0, 0, pl.ds(0, 1), :] = sum_g_e
  sums_ref[0, 0, pl.ds(1, 1), :] = sum_b_e
