"""E-I circuit currents as pure functions, one per quantity of the paper (spec §1.2-1.3).

Shapes: dense inputs are (N, d); conv inputs are NHWC (N, H, W, C_in) with kernels HWIO
(k, k, C_in, C_out). N is the merged B*T axis. W_EI has the reference's orientation
(n_E, n_I): row e holds the inhibitory weights onto excitatory unit e.

    I_EE    = W_EE * x                                   excitatory_current
    I_IE    = W_IE * x                                   inhibitory_current  (s_I, no ReLU)
    I_EI    = W_EI I_IE          (1x1 channel mix)       lateral_inhibition
    I_bal   = I_EE - I_EI                                balanced_current    (subtractive)
    I_shunt = W_EI (g_I . I_IE)                          shunting_current    (divisive)
    I_int   = g_E . I_bal / stabilize(I_shunt) + b_E     integrated_current
    output  = I_bal                                      output_current      (head, §1.3)

One name per quantity everywhere (``ei_currents``' keys, the layers' probe statistics, the
analysis figures): ``inhibitory`` is I_IE, the inhibitory population's own current, and
``lateral_inhibition`` is I_EI = W_EI I_IE, what it subtracts from the excitatory units.

The E-I layers compute the same circuit in a lean form, one path for training, the probes and
every ablation: W_EI commutes with the convolution, so one convolution gives [I_bal | I_shunt]
(kernel [``balanced_kernel`` | ``shunting_kernel``] = [W_EE - W_IE W_EI^T | W_IE (W_EI diag
g_I)^T]; compiled for a GPU or TPU) or [I_bal | I_IE] (kernel [``balanced_kernel`` | W_IE], with
I_shunt mixed from I_IE; compiled for the CPU; small maps mix I_EE - W_EI I_IE instead), and
``fused_integrated_current`` turns it into I_int (for the paper's E-I Prop as one ``custom_vjp``
that stores few arrays). The functions above are the plain circuit, one function per quantity,
the reference the layers are tested against.

Dtypes (spec §11.7, §11.9): convolutions and matmuls may run in a low precision (``dtype``, e.g.
bfloat16) but always accumulate in at least float32, and the circuit after them (lateral
inhibition, the division) runs in ``accumulation_dtype``: float32 for bfloat16/float16/float32
currents, float64 for float64 ones (under ``jax_enable_x64``). Products return at least float32
(``preferred_element_type``), except where nothing is subtracted after them: the E-I layers'
folded convolution stores I_bal and I_shunt (or I_IE, and I_shunt after it) in the computation
dtype (``result_dtype``; bfloat16 under the bfloat16 policy, each a float32 sum rounded once),
which is what lets a GPU run bfloat16 convolutions at all.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from ei_snn_jax.core import ei_prop

Array = jax.Array


def accumulation_dtype(dtype) -> jnp.dtype:
  """The dtype products are summed and the circuit runs in: at least float32 (spec §11.9),
  i.e. promote(dtype, float32): bfloat16/float16/float32 -> float32, float64 -> float64."""
  return jax.dtypes.canonicalize_dtype(jnp.promote_types(dtype, jnp.float32))


def operands(x: Array, kernel: Array, dtype) -> tuple[Array, Array]:
  """x and kernel in the computation dtype: ``dtype`` if given, else their promoted dtype (so
  bfloat16 inputs meet float32 weights in float32, and float64 stays float64)."""
  dtype = jnp.result_type(x, kernel) if dtype is None else jax.dtypes.canonicalize_dtype(dtype)
  return x.astype(dtype), kernel.astype(dtype)


def result_dtype(compute_dtype, low_precision_result: bool = False) -> jnp.dtype:
  """The dtype a convolution/matmul computed in ``compute_dtype`` returns: ``accumulation_dtype``
  (at least float32), or with ``low_precision_result`` the computation dtype itself (bfloat16
  products stored in bfloat16). Either way the products are summed in float32: a bfloat16
  convolution or matmul compiled for a GPU runs in cuDNN/cuBLAS with a float32 compute type,
  and XLA:CPU computes it in float32 and rounds the result. Requesting a float32 result from
  bfloat16 operands instead makes XLA:GPU convert the operands and run a float32 convolution
  (no bytes saved), so the E-I layer's folded convolution, whose result is I_bal itself (no
  subtraction after it, spec §11.9), asks for the bfloat16 result."""
  dtype = jax.dtypes.canonicalize_dtype(compute_dtype)
  return dtype if low_precision_result else accumulation_dtype(dtype)


def conv(x: Array, kernel: Array, strides: Sequence[int] = (1, 1), padding=None,
         dtype=None, low_precision_result: bool = False) -> Array:
  """NHWC x HWIO convolution with symmetric zero padding (default k//2, as PyTorch's pad=k//2).

  Computed in ``dtype`` (default: the promoted dtype of x and kernel), accumulated in at least
  float32 and returned in ``result_dtype(dtype, low_precision_result)``: ``accumulation_dtype``
  (float32 for bfloat16 operands) unless ``low_precision_result``.
  """
  x, kernel = operands(x, kernel, dtype)
  out = result_dtype(x.dtype, low_precision_result)
  if padding is None:
    padding = kernel.shape[0] // 2
  if isinstance(padding, int):
    padding = ((padding, padding), (padding, padding))
  def convolution(x, kernel):
    return jax.lax.conv_general_dilated(
        x, kernel, window_strides=tuple(strides), padding=padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), preferred_element_type=out)

  if _small_map(x, kernel, strides, padding):
    # Chosen for the platform being lowered for, not the host's default backend: compiling on a
    # CPU host for a GPU or TPU (AOT, jax.export) keeps the convolution.
    return jax.lax.platform_dependent(
        x, kernel, cpu=lambda x, kernel: _conv_as_matmul(x, kernel, padding[0][0], out),
        default=convolution)
  return convolution(x, kernel)


# XLA:CPU differentiates a 3x3 convolution on a tiny feature map very slowly: at 2x2, batch 32,
# 512 -> 640 channels, forward + both gradients took 470 ms against 13 ms as patches @ kernel
# (and 17 ms in PyTorch's oneDNN); at 4x4 58 vs 49 ms, from 8x8 up the convolution wins.
# Maps of at most this many positions take that path on CPU (0 turns it off). Read at trace time.
SMALL_MAP_POSITIONS = 16


def _small_map(x: Array, kernel: Array, strides, padding) -> bool:
  """Whether this convolution may be computed as a matmul of patches when lowered for the CPU:
  a stride-1 k x k kernel (k > 1) with symmetric "same" padding k//2 on a map of at most
  ``SMALL_MAP_POSITIONS`` positions (VGG's 2x2 and 4x4 layers). ``conv`` then stages both forms
  with ``jax.lax.platform_dependent``, and the platform being lowered for picks one (the CPU the
  matmul, every other platform the convolution), so an ahead-of-time compile for a GPU or TPU on
  a CPU host compiles the convolution."""
  k = kernel.shape[0]
  return (k > 1 and kernel.shape[1] == k
          and tuple(strides) == (1, 1) and padding == ((k // 2, k // 2), (k // 2, k // 2))
          and k % 2 == 1 and x.shape[1] * x.shape[2] <= SMALL_MAP_POSITIONS)


def _small_map_on_cpu(x: Array, kernel: Array, strides, padding) -> bool:
  """Whether ``conv`` computes this convolution as a matmul of patches when run on the default
  backend: ``_small_map`` and the default backend is the CPU."""
  return jax.default_backend() == "cpu" and _small_map(x, kernel, strides, padding)


def _conv_as_matmul(x: Array, kernel: Array, pad: int, out_dtype) -> Array:
  """The same convolution as patches (N, H, W, k*k*C_in) @ kernel (k*k*C_in, C_out), in the
  kernel's HWIO order; returned in ``out_dtype`` (accumulated in at least float32). Equal to the
  convolution up to float rounding (summation order)."""
  k, _, c_in, c_out = kernel.shape
  h, w = x.shape[1], x.shape[2]
  padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  patches = jnp.concatenate([padded[:, i:i + h, j:j + w, :] for i in range(k) for j in range(k)],
                            axis=-1)
  return jnp.dot(patches, kernel.reshape(k * k * c_in, c_out), preferred_element_type=out_dtype)


def feedforward(x: Array, kernel: Array, strides: Sequence[int] = (1, 1), padding=None,
                dtype=None, low_precision_result: bool = False) -> Array:
  """W * x: a matmul for a 2-D kernel (d, n), a convolution for a 4-D kernel (k, k, C_in, n);
  dtypes as ``conv`` (computed in ``dtype``, accumulated in at least float32, returned in
  ``result_dtype(dtype, low_precision_result)``)."""
  if kernel.ndim == 2:
    x, kernel = operands(x, kernel, dtype)
    return jnp.matmul(x, kernel, preferred_element_type=result_dtype(x.dtype,
                                                                     low_precision_result))
  return conv(x, kernel, strides, padding, dtype, low_precision_result)


def excitatory_current(x: Array, w_ee: Array, **conv_kw) -> Array:
  """I_EE = W_EE * x (spec §1.2): E -> E feed-forward current, (N, ..., n_E)."""
  return feedforward(x, w_ee, **conv_kw)


def inhibitory_current(x: Array, w_ie: Array, **conv_kw) -> Array:
  """I_IE = W_IE * x (spec §1.2): the inhibitory population's activity s_I, (N, ..., n_I)."""
  return feedforward(x, w_ie, **conv_kw)


def lateral_inhibition(i_ie: Array, w_ei: Array) -> Array:
  """I_EI = W_EI I_IE, a 1x1 mix over inhibitory channels at every position (spec §1.2)."""
  return jnp.einsum("...i,ei->...e", i_ie, w_ei)


def balanced_current(i_ee: Array, i_ie: Array, w_ei: Array) -> Array:
  """Subtractive inhibition: I_bal = I_EE - W_EI I_IE (spec §1.2)."""
  return i_ee - lateral_inhibition(i_ie, w_ei)


def shunting_current(i_ie: Array, w_ei: Array, g_i: Array) -> Array:
  """Divisive inhibition: I_shunt = W_EI (g_I . I_IE) (spec §1.2); >= 0 for non-negative inputs.

  Computed as (W_EI diag(g_I)) I_IE: the gain scales the (n_E, n_I) weights, not the
  (N, ..., n_I) current, so the product reads I_IE once and no scaled copy is stored (the same
  sum of non-negative terms, so the same exact zeros)."""
  return lateral_inhibition(i_ie, w_ei * g_i)


def integrated_current(i_bal: Array, i_shunt: Array, g_e: Array, b_e: Array, *,
                       stabilization: str = "adaptive", ste: bool = True) -> Array:
  """I_int = g_E . I_bal / stabilize(I_shunt) + b_E (spec §1.2, E-I Prop §3.1-3.2), in at least
  float32 (``accumulation_dtype``: float64 currents stay float64)."""
  dtype = accumulation_dtype(jnp.result_type(i_bal, i_shunt))
  i_bal = i_bal.astype(dtype)
  i_shunt = i_shunt.astype(dtype)
  denominator = ei_prop.stabilize_shunting(i_shunt, stabilization, ste)
  return g_e * i_bal / denominator + b_e


def output_current(i_ee: Array, i_ie: Array, w_ei: Array) -> Array:
  """Output-layer variant (spec §1.3): the head returns I_bal, no division, gain, bias or LIF."""
  return balanced_current(i_ee, i_ie, w_ei)


def inhibition_currents(i_ee: Array, i_ie: Array, w_ei: Array, g_i: Array, g_e: Array,
                        b_e: Array, *, stabilization: str = "adaptive",
                        ste: bool = True) -> dict[str, Array]:
  """Subtractive and divisive inhibition from the feed-forward currents I_EE, I_IE (spec §1.2).

  Keys: lateral_inhibition (I_EI = W_EI I_IE), balanced (I_bal), shunting (I_shunt, before
  stabilisation) and integrated (I_int).
  """
  i_ei = lateral_inhibition(i_ie, w_ei)
  i_bal = i_ee - i_ei
  i_shunt = shunting_current(i_ie, w_ei, g_i)
  i_int = integrated_current(i_bal, i_shunt, g_e, b_e, stabilization=stabilization, ste=ste)
  return dict(lateral_inhibition=i_ei, balanced=i_bal, shunting=i_shunt, integrated=i_int)


def ei_currents(x: Array, w_ee: Array, w_ie: Array, w_ei: Array, g_i: Array, g_e: Array,
                b_e: Array, *, stabilization: str = "adaptive", ste: bool = True,
                dtype=None, **conv_kw) -> dict[str, Array]:
  """All currents of one E-I layer for input x; returns a dict keyed by the paper's names.

  Keys: excitatory (I_EE), inhibitory (I_IE), lateral_inhibition (I_EI = W_EI I_IE), balanced,
  shunting, integrated.
  """
  i_ee = excitatory_current(x, w_ee, dtype=dtype, **conv_kw)
  i_ie = inhibitory_current(x, w_ie, dtype=dtype, **conv_kw)
  return dict(excitatory=i_ee, inhibitory=i_ie,
              **inhibition_currents(i_ee, i_ie, w_ei, g_i, g_e, b_e,
                                    stabilization=stabilization, ste=ste))


def balanced_kernel(w_ee: Array, w_ie: Array, w_ei: Array) -> Array:
  """W_EE - W_IE W_EI^T: the kernel whose feed-forward current is I_bal = I_EE - W_EI I_IE
  (W_EI is a 1x1 mix, so it commutes with the convolution/matmul; spec §1.2). Kernels (..., n)
  with n_E / n_I output units, W_EI (n_E, n_I)."""
  return w_ee - jnp.einsum("...i,ei->...e", w_ie, w_ei)


def shunting_kernel(w_ie: Array, w_ei: Array, g_i: Array) -> Array:
  """W_IE (W_EI diag g_I)^T: the kernel whose feed-forward current is I_shunt = W_EI (g_I .
  I_IE) (spec §1.2; the mix commutes with the convolution/matmul). Non-negative for
  non-negative weights, so on non-negative inputs I_shunt is a sum of non-negative terms, 0 where
  every term is. Kernels (..., n_I) -> (..., n_E)."""
  return jnp.einsum("...i,ei->...e", w_ie, w_ei * g_i)


def stored_shunting_current(stored: Array, n_e: int, shunting_weights: Array | None = None
                            ) -> Array:
  """I_shunt from the stored feed-forward currents (last axis, I_bal's n_E first): their second
  part if they are [I_bal | I_shunt] (``shunting_weights`` None); if they are [I_bal | I_IE],
  I_shunt = (W_EI diag g_I) I_IE with ``shunting_weights`` = W_EI diag g_I (n_E, n_I), summed in
  ``accumulation_dtype`` and stored in the dtype of ``stored`` (rounded once to bfloat16 under
  the bfloat16 policy; the same exact zeros, a sum of non-negative terms)."""
  if shunting_weights is None:
    return stored[..., n_e:]
  i_ie = stored[..., n_e:].astype(accumulation_dtype(stored.dtype))
  return lateral_inhibition(i_ie, shunting_weights).astype(stored.dtype)


def fused_integrated_current(stored: Array, g_e: Array, b_e: Array,
                             shunting_weights: Array | None = None, *,
                             stabilization: str = "adaptive", ste: bool = True,
                             written_out_backward: bool = True) -> Array:
  """I_int = g_E . I_bal / stabilize(I_shunt) + b_E (spec §1.2, §3.1-3.2) from the stored
  feed-forward currents: the E-I layer's one numerical path, for every E-I Prop variant.

  ``stored`` is [I_bal | I_shunt] (last axis, n_E each; one convolution with the kernel
  [``balanced_kernel`` | ``shunting_kernel``]), or [I_bal | I_IE] (n_E then n_I; the kernel
  [``balanced_kernel`` | W_IE], or I_EE - W_EI I_IE next to I_IE) with ``shunting_weights`` =
  W_EI diag g_I, and I_shunt = ``stored_shunting_current``. d = ``ei_prop.stabilize_shunting(
  I_shunt, stabilization, ste)``, with adaptive stabilisation's zeros replaced by
  ``ei_prop.smallest_positive``. Computed in ``accumulation_dtype`` (at least float32); bfloat16
  currents are stored as they are and get a bfloat16 gradient.

  With adaptive stabilisation and its straight-through gradient (the paper) and
  ``written_out_backward``, the gradient is written out as one ``custom_vjp`` that stores only
  its input, I_shunt if it is mixed, and each sample's smallest positive I_shunt (reverse mode
  only). With a = dL/dI_int . g_E / d:

      dL/dI_bal = a,   dL/dI_shunt = -a I_bal / d,   dL/dg_E = sum dL/dI_int . I_bal / d,
      dL/db_E = sum dL/dI_int,   and, mixed: dL/dI_IE = dL/dI_shunt (W_EI diag g_I),
      dL/d(W_EI diag g_I) = sum dL/dI_shunt^T I_IE.

  Otherwise (the ablations: no STE, epsilon, no stabilisation; or ``written_out_backward=False``
  for forward-mode autodiff) the same forward computation is differentiated by JAX with the
  rules of ``ei_prop``. The forward values are the same in both.
  """
  if stabilization == "adaptive" and ste and written_out_backward:
    return _fused_integrated_current(stored, g_e, b_e, shunting_weights)
  n_e = g_e.shape[-1]
  acc = accumulation_dtype(stored.dtype)
  i_shunt = stored_shunting_current(stored, n_e, shunting_weights)
  denominator = ei_prop.stabilize_shunting(i_shunt.astype(acc), stabilization, ste)
  return g_e * stored[..., :n_e].astype(acc) / denominator + b_e


@jax.custom_vjp
def _fused_integrated_current(stored, g_e, b_e, shunting_weights):
  return _fused_forward(stored, g_e, b_e, shunting_weights)[0]


def _fused_forward(stored, g_e, b_e, shunting_weights):
  acc = accumulation_dtype(stored.dtype)
  n_e = g_e.shape[-1]
  i_shunt = stored_shunting_current(stored, n_e, shunting_weights)
  smallest = ei_prop.smallest_positive(i_shunt).astype(acc)
  denominator = ei_prop.replace_zeros(i_shunt.astype(acc), smallest)
  # A mixed I_shunt is stored for the backward pass; a stored one is read where it lies.
  mixed = None if shunting_weights is None else i_shunt
  return (g_e * stored[..., :n_e].astype(acc) / denominator + b_e,
          (stored, mixed, smallest, g_e, shunting_weights))


def _fused_bwd(residuals, g):
  # The barrier keeps XLA from sharing the recomputed denominator with the forward pass (which
  # would then be stored after all).
  stored, mixed, smallest, g_e, weights = jax.lax.optimization_barrier(residuals)
  acc = smallest.dtype
  n_e = g_e.shape[-1]
  i_bal = stored[..., :n_e].astype(acc)
  i_shunt = stored[..., n_e:] if mixed is None else mixed
  denominator = ei_prop.replace_zeros(i_shunt.astype(acc), smallest)
  sum_axes = tuple(range(g.ndim - 1))
  # Each full-size result is one expression of the residuals, with no intermediate shared
  # between them, so XLA computes each in one pass over its inputs instead of storing I_bal / d
  # and dL/dI_bal for the others to re-read (issue 11).
  # dL/dI_shunt = -a I_bal / d, in the dtype the currents are stored in (bfloat16 under the
  # bfloat16 policy; the products after it accumulate in float32).
  g_shunt = (-(g * g_e * i_bal) / denominator / denominator).astype(stored.dtype)
  zero = jnp.zeros((), g.dtype)
  g_g_e, g_b_e = jax.lax.reduce((g * (i_bal / denominator), g), (zero, zero),   # one pass
                                lambda a, b: (a[0] + b[0], a[1] + b[1]), sum_axes)
  g_weights = None
  if weights is not None:
    i_ie = stored[..., n_e:].astype(acc)
    g_weights = jnp.einsum("...i,...e->ei", i_ie, g_shunt).astype(weights.dtype)
    g_shunt = jnp.einsum("...e,ei->...i", g_shunt, weights)          # dL/dI_IE
  g_stored = jnp.concatenate([g * g_e / denominator, g_shunt], axis=-1)
  return (g_stored.astype(stored.dtype), g_g_e.astype(g_e.dtype), g_b_e.astype(g_e.dtype),
          g_weights)


_fused_integrated_current.defvjp(_fused_forward, _fused_bwd)
