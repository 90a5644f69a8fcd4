"""Flax (Linen) layers that wire the pure circuit functions together (spec §1, §5, §6, §9).

Every layer maps its input to the *pre-spike current* of one layer on the merged B*T axis (the
T time steps of each sample on adjacent rows, row b*T + t: ``tile_time``, ``merge_time``,
``split_time``, ``mean_over_time`` convert to and from it); the ``LIF`` layer turns currents into
spikes. Layers to compose:

* ``EIConv`` / ``EIDense``: EiConv/EiLinear + EiNorm of the paper: returns I_int (spec §1.2).
* ``EIHead``: the output layer, returns I_bal (spec §1.3).
* ``LIF``: multi-step LIF over the merged batch (spec §5).
* ``BNConv``: BN-SNN baseline, conv without bias + BatchNorm over the merged B*T*H*W axis
  (spec §6.2); ``TorchDense``: its classifier, a Linear with PyTorch's default init.
* ``DANNConv`` / ``DANNDense`` / ``DANNHead``: the spiking DANN baseline (spec §9).

E-I and DANN layers are one circuit with different parameters (``_CircuitLayer``): feed-forward
currents to E and I units, lateral inhibition, subtractive and divisive normalisation
(``circuit.inhibition_currents``). A layer is dense unless it mixes in ``_ConvGeometry``, and an
output layer (``output_layer=True``, the heads) returns the balanced current.

Input conventions: conv layers take NHWC, dense layers (N, d). ``time_repeats = T > 1`` tells a
layer that its input is a static image batch (B, ...) that stands for T identical time steps:
the layer computes its current once and tiles it to (B*T, ...), which is exactly the current of
the tiled input (every op before the LIF is per sample), and E-I Init counts the samples T times.

Observability: when the ``probes`` collection is mutable (``model.apply(..., mutable=['probes'])``)
each E-I or DANN layer records mean/std of its currents and each LIF its firing rate
(``analysis/probes.py``).

Dtypes, the Flax way (spec §11.7, §11.9): ``dtype`` is the computation dtype of a layer's
convolutions/matmuls (None: the promoted dtype of its input and parameters, so a bfloat16 input
meets float32 weights in float32 and float64 stays float64 under ``jax_enable_x64``), and
``param_dtype`` the dtype its parameters are created in (float32). Low-precision convolutions
accumulate in float32 and the E-I circuit after them (lateral inhibition, the division) runs in
at least float32 (``circuit.accumulation_dtype``); the E-I layers' folded convolution, whose
result is I_bal itself, stores its result (and I_shunt) in the computation dtype
(``circuit.result_dtype``). ``EIOptions.conv_dtype`` is the model-wide
spelling of the E-I layers' ``dtype`` (the configs' ``model.conv_dtype``); ``dtype`` wins.

Roles: every layer declares which of its parameters Dale's law constrains, which are
weight-decayed and which are unused (``parameter_roles``, collected by ``ei_snn_jax.roles``).

State: a ``LIF`` carries its membrane potential across calls in the ``neuron_state`` collection
when that collection is mutable, so a model built for T = 1 runs one time step per call
(``ei_snn_jax.models.streaming``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from ei_snn_jax import errors, roles, tree as tree_lib
from ei_snn_jax.core import circuit, ei_conv_lif, ei_init, ei_lif, ei_prop, neurons

Array = jax.Array
Dtype = Any

# The collection a LIF keeps its membrane potential in between calls (when it is mutable).
NEURON_STATE = "neuron_state"


class LayerError(errors.UserError, ValueError):
  """A layer built or called in a way it cannot work: one line naming the layer and the fix."""


def layer_name(module: nn.Module) -> str:
  """The name a message gives a layer: its path in the model ("conv3", "stage1_block0.conv1";
  the wrappers "ei"/"dann" left out, as in the probes), or its class for a bare layer."""
  try:
    path = tree_lib.layer_path(module.path)
  except (AttributeError, ValueError):   # unbound: no path yet
    path = ""
  return path or module.name or type(module).__name__


@dataclasses.dataclass(frozen=True)
class EIOptions:
  """Switches of the E-I method (defaults = the paper). Frozen, so usable as a module attribute.

  Attributes:
    ei_ratio: n_I = n_E // ei_ratio (4 in every paper config); an output layer (``EIHead``) has
      n_I = max(1, n_E // ei_ratio), so a head for 2 or 3 classes has one inhibitory unit.
    ei_init: data-dependent E-I Init (spec §2); False = plain DANN-style init (ablation).
    stabilization: "adaptive" (E-I Prop §3.1), "epsilon" or "none" (ablations).
    ste: straight-through estimator for the stabilised denominator (§3.2).
    scale_wei_grad: multiply the W_EI gradient by 1/d (§3.3).
    conv_dtype: computation dtype of the E/I convolutions of every E-I layer (None = from the
      input and parameters, float32 by default; e.g. "bfloat16" for speed, accumulated in
      float32); a layer's own ``dtype`` takes precedence. The E-I division runs in at least
      float32.
    fused: with adaptive stabilisation and the STE, differentiate I_int by its written-out
      backward pass (``circuit.fused_integrated_current``, a memory-saving ``custom_vjp``:
      reverse-mode autodiff only). False: the same forward computation differentiated by JAX
      with E-I Prop's rules (the same values and gradients up to float rounding),
      differentiable in forward mode too (``jax.jvp``, ``jax.jacfwd``).
  """
  ei_ratio: int = 4
  ei_init: bool = True
  stabilization: str = "adaptive"
  ste: bool = True
  scale_wei_grad: bool = True
  conv_dtype: str | None = None
  fused: bool = True

  def __post_init__(self):
    if isinstance(self.ei_ratio, bool) or not isinstance(self.ei_ratio, int) or self.ei_ratio < 1:
      raise LayerError(f"EIOptions: ei_ratio={self.ei_ratio!r} must be an integer >= 1 "
                       "(n_I = n_E // ei_ratio inhibitory units; the paper uses 4)")
    if self.stabilization not in ei_prop.STABILIZATIONS:
      raise LayerError(f"EIOptions: unknown stabilization={self.stabilization!r}; choose one of "
                       f"{ei_prop.STABILIZATIONS}")

  @property
  def written_out_backward(self) -> bool:
    """Whether I_int's gradient is written out (``circuit.fused_integrated_current``'s
    ``custom_vjp``, and ``ei_lif``'s kernels where a layer fires its LIF): ``fused`` with the
    paper's E-I Prop, adaptive stabilisation and the STE."""
    return self.fused and self.stabilization == "adaptive" and self.ste


# The config options this module owns: dotted field -> (default, allowed values or range,
# meaning). ``training.config.base_config`` is assembled from these (docs/options.md).
CONFIG_OPTIONS = {
    "model.ei_ratio": (4, ">= 1", "n_I = n_E // ei_ratio (EIOptions)"),
    "model.ei_init": (True, None, "data-dependent E-I Init (spec §2)"),
    "model.ei_stabilization": ("adaptive", ei_prop.STABILIZATIONS, "E-I stabilization"),
    "model.ei_ste": (True, None, "straight-through estimator of the stabilised denominator"),
    "model.ei_scale_wei_grad": (True, None, "W_EI gradient divided by d (spec §3.3)"),
    "model.conv_dtype": ("float32", ("float32", "bfloat16"), "conv dtype"),
}


@dataclasses.dataclass(frozen=True)
class NeuronOptions:
  """LIF settings (spec §5): tau 2, threshold 1, sigmoid surrogate alpha 4, scan unrolling.

  Attributes:
    tau, threshold: the membrane time constant (tau >= 1, so that the leak factor 1 - 1/tau is
      in [0, 1)) and the firing threshold theta > 0 (their initial values when learnable).
    surrogate: a name of ``neurons.SURROGATES`` or any function (u, alpha) -> dS/du (pass the
      same function object each time: the options are hashed).
    alpha: surrogate sharpness.
    unroll: ``lax.scan`` unrolling over T (True = fully unrolled).
    learnable_tau: a parametric LIF (spikingjelly's ``ParametricLIFNode``, Fang et al. 2021):
      one learnable scalar w per layer with 1/tau = sigmoid(w), initialised to
      w = -log(tau - 1) (so tau starts at ``tau``, which must be > 1).
    learnable_threshold: one learnable scalar theta per layer, initialised to ``threshold``.
  """
  tau: float = 2.0
  threshold: float = 1.0
  surrogate: Any = "sigmoid"
  alpha: float = 4.0
  unroll: int | bool = True
  learnable_tau: bool = False
  learnable_threshold: bool = False

  def __post_init__(self):
    if not self.tau >= 1.0:
      raise LayerError(f"NeuronOptions: tau={self.tau} must be >= 1 (the leak factor 1 - 1/tau "
                       f"would be {1.0 - 1.0 / self.tau if self.tau else float('-inf'):.3g}, "
                       "outside [0, 1)); the paper uses tau = 2")
    if self.learnable_tau and not self.tau > 1.0:
      raise LayerError(f"NeuronOptions: a learnable tau needs tau > 1 at initialisation "
                       f"(w = -log(tau - 1)), got tau={self.tau}")
    if not self.threshold > 0:
      raise LayerError(f"NeuronOptions: threshold={self.threshold} must be > 0")


# The merged time-batch layout (sample-major, row b*T + t; ``core.neurons``), public here for
# models built of these layers: (B, ...) -> (B*T, ...), (T, B, ...) <-> (B*T, ...), the mean over T.
tile_time = neurons.tile_time
merge_time = neurons.merge_time
split_time = neurons.split_time
mean_over_time = neurons.mean_over_time
_tile_time = neurons.tile_time   # the name the experiments use


@functools.lru_cache(maxsize=None)
def _compiled(fn, static: tuple[str, ...]):
  """``jax.jit(fn)`` with the keyword arguments ``static`` as static arguments (cached)."""
  return jax.jit(fn, static_argnames=static)


def _at_init(module: nn.Module, fn, *args, **static):
  """``fn(*args, **static)``; during an eager ``model.init`` (no tracer among ``args``) as one
  compiled program, cached per function, static arguments and shapes. An eager init otherwise
  dispatches (and compiles) every op of every layer on its own: one program per layer step
  instead made the first init of an EIConv / a 1/16-width VGG-8 several times faster. Traced
  (under ``jit``, ``vmap``, ``nn.scan``) and outside init, ``fn`` is called as it is."""
  if not module.is_initializing() or any(isinstance(a, jax.core.Tracer)
                                         for a in jax.tree.leaves(args)):
    return fn(*args, **static)
  return _compiled(fn, tuple(sorted(static)))(*args, **static)


def _current_statistics(currents: dict[str, Array], values: bool) -> dict[str, Array]:
  """Mean/std of each current (``<name>_mean``, ``<name>_std``) and, with ``values``, the first
  <= 65,536 elements of I_int (``integrated``), what the probes record."""
  out = {}
  for name, value in currents.items():
    v = value.astype(jnp.float32)
    out[f"{name}_mean"], out[f"{name}_std"] = jnp.mean(v), jnp.std(v)
  if values:
    flat = currents["integrated"].reshape(-1)
    out["integrated"] = flat[: min(flat.size, 65536)]
  return out


def _health_statistics(i_shunt: Array, g_i: Array, w_ei: Array) -> dict[str, Array]:
  """The signs of a dead E-I layer, as fractions.

  ``silent_shunting_fraction``: the fraction of samples (rows of the merged B*T axis) whose
  shunting current is 0 everywhere, so that the adaptive stabiliser makes their denominator +inf
  and I_int = b_E (spec §3.1); ``zero_g_i_fraction``: the fraction of inhibitory gains at 0;
  ``zero_shunting_gain_fraction``: the fraction of excitatory units e with sum_i W_EI[e,i] g_I[i]
  = 0, whose shunting current is 0 whatever the input (at 1 the layer is dead for good);
  ``zero_shunting_fraction``: the fraction of shunting currents (entries) that are exactly 0 (a
  receptive field without input): where the adaptive stabiliser substitutes the sample's minimum
  (spec §3.1) and DANN divides by eps = 1e-8, a backward gain of g/eps = 1e8 (spec §9).
  """
  silent = jnp.all(i_shunt.reshape(i_shunt.shape[0], -1) == 0, axis=1)
  stats = {"silent_shunting_fraction": silent, "zero_g_i_fraction": g_i == 0,
           "zero_shunting_gain_fraction": (w_ei @ g_i) == 0,
           "zero_shunting_fraction": i_shunt == 0}
  return {name: jnp.mean(flags.astype(jnp.float32)) for name, flags in stats.items()}


def _hidden_layer_output(i_ee: Array, i_ie: Array, w_ei: Array, g_i: Array, g_e: Array,
                         b_e: Array, *, stabilization: str, ste: bool, time_repeats: int,
                         probes: bool, values: bool) -> tuple[Array, dict[str, Array]]:
  """(I_int tiled over T, the probe statistics when ``probes``) from I_EE and I_IE (spec §1.2)."""
  currents = circuit.inhibition_currents(i_ee, i_ie, w_ei, g_i, g_e, b_e,
                                         stabilization=stabilization, ste=ste)
  stats = {}
  if probes:
    stats = {**_current_statistics(dict(excitatory=i_ee, **currents), values),
             **_health_statistics(currents["shunting"], g_i, w_ei)}
  return _tile_time(currents["integrated"], time_repeats), stats


def _ei_path_statistics(i_bal: Array, i_shunt: Array, i_int: Array, i_ei: Array, w_ei: Array,
                        g_i: Array, *, values: bool) -> dict[str, Array]:
  """The probe statistics of an E-I layer from the arrays its one path computes (I_bal, I_shunt
  and I_int, ``circuit.fused_integrated_current``), with I_EI = W_EI I_IE measured beside it and
  I_EE = I_bal + I_EI (spec §1.2; all outside the gradient)."""
  acc = circuit.accumulation_dtype(i_bal.dtype)
  i_bal, i_shunt, i_int, i_ei = (jax.lax.stop_gradient(a).astype(acc)
                                 for a in (i_bal, i_shunt, i_int, i_ei))
  currents = dict(excitatory=i_bal + i_ei, lateral_inhibition=i_ei, balanced=i_bal,
                  shunting=i_shunt, integrated=i_int)
  return {**_current_statistics(currents, values), **_health_statistics(i_shunt, g_i, w_ei)}


def _output_layer_output(i_ee: Array, i_ie: Array, w_ei: Array, *, time_repeats: int) -> Array:
  """I_bal of an output layer (spec §1.3), tiled over T."""
  return _tile_time(circuit.output_current(i_ee, i_ie, w_ei), time_repeats)


def inhibitory_units(features: int, ei_ratio: int, output_layer: bool = False) -> int:
  """n_I of an E-I layer with n_E = ``features``: n_E // ei_ratio (spec §1.1), and at least one
  in an output layer, max(1, n_E // ei_ratio), so that a head fits any number of classes (the
  10- and 100-class heads of the paper are unchanged: 2 and 25)."""
  n_i = features // ei_ratio
  return max(1, n_i) if output_layer else n_i


class _CircuitLayer(nn.Module):
  """What every E-I and DANN layer shares (spec §1.2-1.3, §9): n_E = ``features`` excitatory
  units, feed-forward kernels from the input (dense here; ``_ConvGeometry`` makes them
  convolutions), the inhibition circuit on their currents, and the output-layer switch.

  Attributes:
    features: n_E, excitatory output units/channels.
    time_repeats: see the module docstring (the current is tiled over T).
    output_layer: return I_bal (the logits, spec §1.3) instead of I_int.
    dtype: computation dtype of the feed-forward convolutions/matmuls (None: promoted from the
      input and parameters); they accumulate in at least float32.
    param_dtype: dtype of the parameters at initialisation.
  """
  features: int
  time_repeats: int = 1
  output_layer: bool = False
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  # Parameters Dale's law constrains to >= 0 (spec §4), and those an output layer never uses
  # (spec §1.3); set by the E-I and DANN layers.
  SIGN_CONSTRAINED: ClassVar[tuple[str, ...]] = ()
  UNUSED_IN_OUTPUT_LAYER: ClassVar[tuple[str, ...]] = ()

  @nn.nowrap
  def parameter_roles(self) -> dict[str, roles.ParamRole]:
    """{parameter name: role} (``ei_snn_jax.roles``): the sign-constrained weights and gains
    (spec §4); in an output layer the unused g_I, g_E, b_E (E-I) or alpha, g, b (DANN), not
    decayed (spec §11.3; the unused gains stay sign-constrained, as every non-bias parameter of
    the reference)."""
    unused = self.UNUSED_IN_OUTPUT_LAYER if self.output_layer else ()
    return {name: roles.ParamRole(sign_constrained=name in self.SIGN_CONSTRAINED,
                                  decayed=name not in unused, unused=name in unused)
            for name in self.SIGN_CONSTRAINED + unused}

  def _kernel_shape(self, c_in: int, n: int) -> tuple[int, ...]:
    """Shape of the kernel from ``c_in`` input features to ``n`` units: (d, n), dense."""
    return (c_in, n)

  def _conv_kwargs(self, x: Array) -> dict[str, Any]:
    """Keyword arguments of ``circuit.feedforward`` beyond the kernel (none for dense)."""
    return {}

  def _check_input(self, x: Array) -> None:
    """Raise a one-line ``LayerError`` unless x is (N, ..., d) (dense: features last)."""
    if x.ndim < 2:
      raise LayerError(f"{layer_name(self)}: a dense layer takes (N, d) inputs (samples first) "
                       f"but got shape {tuple(x.shape)}; add the batch axis (x[None])")

  def _fan_in(self, c_in: int) -> int:
    """d, the inputs of one unit: c_in for a dense layer, k*k*c_in for a convolution."""
    return math.prod(self._kernel_shape(c_in, 1)[:-1])

  def _output_positions(self, x: Array) -> int:
    """M, the rows of the feed-forward current: every position of every sample (dense: the
    leading axes of x)."""
    return math.prod(x.shape[:-1])

  def _feedforward(self, x: Array, kernel: Array, dtype=None,
                   low_precision_result: bool = False) -> Array:
    """W * x with this layer's geometry (``circuit.feedforward``), computed in ``self.dtype``
    (else ``dtype``, else promoted from x and kernel), accumulated in at least float32 and
    returned in at least float32 unless ``low_precision_result`` (``circuit.result_dtype``)."""
    dtype = self.dtype if self.dtype is not None else dtype
    return _at_init(self, circuit.feedforward, x, kernel, dtype=dtype,
                    low_precision_result=low_precision_result, **self._conv_kwargs(x))

  def _weights(self, names: tuple[str, str], scale, c_in: int, n_e: int,
               n_i: int) -> tuple[Array, Array, Array]:
    """(W_E, W_I, W_EI): the feed-forward kernels to the n_E and n_I units, i.i.d. Exp(scale),
    and W_EI = 1/n_I (spec §2, §9), created in this order under ``names`` + "w_ei"."""
    exp_init = lambda key, shape: ei_init.exponential(key, shape, scale, self.param_dtype)
    w_e = self.param(names[0], exp_init, self._kernel_shape(c_in, n_e))
    w_i = self.param(names[1], exp_init, self._kernel_shape(c_in, n_i))
    w_ei = self.param("w_ei", nn.initializers.constant(1.0 / n_i), (n_e, n_i), self.param_dtype)
    return w_e, w_i, w_ei

  def _record(self, stats: dict[str, Array]) -> None:
    """Sow the probe statistics: the I_int samples into "probe_values", the rest into "probes"."""
    for name, value in stats.items():
      self.sow("probe_values" if name == "integrated" else "probes", name, value,
               reduce_fn=lambda _, b: b)


def _pair(value, what: str, layer: str, minimum: int) -> tuple[int, int]:
  """An int or a pair of ints (Flax's spelling of a 2-D size) as (height, width)."""
  pair = (value, value) if isinstance(value, int) else tuple(value) \
      if isinstance(value, (tuple, list)) else None
  if (pair is None or len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool)
                                                and v >= minimum for v in pair)):
    raise LayerError(f"{layer}: {what}={value!r} must be an int >= {minimum} or a pair of them "
                     "(height, width)")
  return pair


class _ConvGeometry(nn.Module):
  """Mixed into a ``_CircuitLayer``: its kernels become convolutions (no bias), as the conv they
  replace, with Flax's spellings of the sizes.

  Attributes:
    kernel_size: k or (k_h, k_w).
    strides: s or (s_h, s_w).
    padding: None (the default: k//2 zeros on each side, PyTorch's ``padding=k//2``), "SAME",
      "VALID", an int p (p on each side), a pair (p_h, p_w) or ((lo, hi), (lo, hi)).
  """
  kernel_size: int | tuple[int, int] = 3
  strides: int | tuple[int, int] = 1
  padding: Any = None

  def _kernel_hw(self) -> tuple[int, int]:
    return _pair(self.kernel_size, "kernel_size", layer_name(self), 1)

  def _kernel_shape(self, c_in: int, n: int) -> tuple[int, ...]:
    """HWIO kernel shape (k_h, k_w, c_in, n)."""
    return self._kernel_hw() + (c_in, n)

  def _pads(self, x: Array) -> tuple[tuple[int, int], tuple[int, int]]:
    """((lo, hi), (lo, hi)) zero padding of H and W for the input x (NHWC)."""
    name, (kh, kw), p = layer_name(self), self._kernel_hw(), self.padding
    if p is None:
      return ((kh // 2, kh // 2), (kw // 2, kw // 2))
    if isinstance(p, str):
      if p.upper() not in ("SAME", "VALID"):
        raise LayerError(f"{name}: padding={p!r} must be 'SAME', 'VALID', an int or pairs")
      pads = jax.lax.padtype_to_pads(x.shape[1:3], (kh, kw),
                                     _pair(self.strides, "strides", name, 1), p.upper())
      return tuple(tuple(int(v) for v in pad) for pad in pads)
    if isinstance(p, (tuple, list)) and len(p) == 2 and all(isinstance(v, (tuple, list))
                                                             for v in p):
      return tuple(_pair(v, "padding", name, 0) for v in p)
    ph, pw = _pair(p, "padding", name, 0)
    return ((ph, ph), (pw, pw))

  def _check_input(self, x: Array) -> None:
    """Raise a one-line ``LayerError`` unless x is a batch of NHWC images."""
    if x.ndim == 4:
      return
    hint = ("an unbatched image: add the batch axis (x[None])" if x.ndim == 3 else
            "a dense input: use EIDense (or reshape to NHWC)" if x.ndim == 2 else "")
    raise LayerError(f"{layer_name(self)}: a convolution takes NHWC images (N, H, W, C) but got "
                     f"shape {tuple(x.shape)}" + (f", {hint}" if hint else ""))

  def _conv_kwargs(self, x: Array) -> dict[str, Any]:
    """The convolution's strides and padding."""
    return dict(strides=_pair(self.strides, "strides", layer_name(self), 1),
                padding=self._pads(x))

  def _output_positions(self, x: Array) -> int:
    """M = N * H_out * W_out for an NHWC input."""
    (kh, kw), (sh, sw) = self._kernel_hw(), _pair(self.strides, "strides", layer_name(self), 1)
    (ht, hb), (wl, wr) = self._pads(x)
    return x.shape[0] * ((x.shape[1] + ht + hb - kh) // sh + 1) * ((x.shape[2] + wl + wr - kw)
                                                                   // sw + 1)


class _EILayer(_CircuitLayer):
  """One E-I layer (spec §1-3): parameters W_EE, W_IE, W_EI, g_I, g_E, b_E (``bias``), E-I
  Init from the layer's input at ``model.init`` (spec §2), E-I Prop's W_EI gradient scaling and
  stabilisation (spec §3).

  Attributes:
    options: ``EIOptions``.
  """
  options: EIOptions = EIOptions()

  SIGN_CONSTRAINED = ("w_ee", "w_ie", "w_ei", "g_i", "g_e")
  UNUSED_IN_OUTPUT_LAYER = ("g_i", "g_e", "bias")

  @nn.compact
  def __call__(self, x: Array, lif: "LIF | None" = None) -> Array:
    """I_int (I_bal for an output layer) of the input x, tiled over ``time_repeats``.

    With ``lif`` (the LIF that follows this layer, for which ``lif.fires_from_currents()``)
    the layer returns that LIF's spikes instead, fired from the stored feed-forward currents
    (``_fire``), in the dtype they are stored in (the computation dtype: bfloat16 under the
    bfloat16 policy; spikes are exactly 0 or 1); ``lif.record`` records the LIF's probes. The
    same values as ``lif(layer(x))``.
    """
    opts = self.options
    n_e = self.features
    n_i = inhibitory_units(n_e, opts.ei_ratio, self.output_layer)
    if n_i < 1:
      raise LayerError(f"{layer_name(self)}: features={n_e} // ei_ratio={opts.ei_ratio} leaves no "
                       "inhibitory unit; use more features or a smaller EIOptions(ei_ratio=...)")
    self._check_input(x)
    c_in = x.shape[-1]
    fan_in = self._fan_in(c_in)

    # Flax also calls initialisers abstractly (shape check) in ``apply``: placeholders then.
    scale = g_i0 = 1.0
    if self.is_initializing():
      stats = None
      if opts.ei_init:
        stats = ei_init.input_statistics(x, self.time_repeats)
        ei_init.check_statistics(stats, layer_name(self))
        self.sow("ei_init_stats", "input", stats._asdict(), reduce_fn=lambda _, b: b)
      scale, g_i0 = (ei_init.ei_init_values(stats, fan_in) if stats is None else
                     _at_init(self, ei_init.ei_init_values, stats, fan_in=fan_in))

    w_ee, w_ie, w_ei = self._weights(("w_ee", "w_ie"), scale, c_in, n_e, n_i)
    g_i = self.param("g_i", lambda key, shape: jnp.full(shape, g_i0, self.param_dtype), (n_i,))
    g_e = self.param("g_e", nn.initializers.ones, (n_e,), self.param_dtype)
    b_e = self.param("bias", nn.initializers.zeros, (n_e,), self.param_dtype)

    if opts.scale_wei_grad:
      w_ei = ei_prop.scale_gradient(w_ei, 1.0 / fan_in)

    # One numerical path for training, the probes and every ablation: the stored feed-forward
    # currents, then I_bal (an output layer) or I_int (``circuit.fused_integrated_current``).
    if self.output_layer:   # I_bal (spec §1.3)
      return _tile_time(self._balanced_current(x, w_ee, w_ie, w_ei), self.time_repeats)
    probes = self.is_mutable_collection("probes")
    if lif is not None and (probes or not opts.written_out_backward):
      raise LayerError(f"{layer_name(self)}: fires into its LIF only with the paper's E-I Prop "
                       "(EIOptions defaults) and no probes; call the LIF on its output instead")

    def integrated(stored, shunting_weights):   # -> I_int, and I_bal, I_shunt for the probes
      if lif is not None:   # -> the LIF's spikes
        return self._fire(lif, stored, g_e, b_e, shunting_weights), None, None
      i_int = circuit.fused_integrated_current(stored, g_e, b_e, shunting_weights,
                                               stabilization=opts.stabilization, ste=opts.ste,
                                               written_out_backward=opts.fused)
      if not probes:
        return i_int, None, None
      return (i_int, stored[..., :n_e],
              circuit.stored_shunting_current(stored, n_e, shunting_weights))

    if self._mixes_currents(x):
      # Small maps at small batches: two products and the mix (fewer FLOPs than folding W_EI
      # into the kernel), and no copy of the concatenated kernel, which outweighs the currents.
      i_ee = self._feedforward(x, w_ee, dtype=opts.conv_dtype)   # >= float32: I_EE - W_EI I_IE
      i_ie = self._feedforward(x, w_ie, dtype=opts.conv_dtype)
      stored = jnp.concatenate([circuit.balanced_current(i_ee, i_ie, w_ei), i_ie], axis=-1)
      i_int, i_bal, i_shunt = integrated(stored, w_ei * g_i)
    else:
      # W_EI commutes with the convolution: folded into the kernel, whose result is I_bal itself
      # (nothing subtracted after it), stored in the computation dtype (bfloat16 convolutions
      # stay bfloat16 on a GPU) and divided in >= float32. The platform being lowered for picks
      # the second part (equal up to float rounding): a GPU or TPU, bandwidth-bound, convolves
      # [balanced_kernel | shunting_kernel] into [I_bal | I_shunt], so no I_IE is stored, mixed
      # or differentiated (issue 21); the CPU, compute-bound, convolves [balanced_kernel | W_IE]
      # (n_E + n_I channels instead of 2 n_E) and mixes I_shunt = W_EI (g_I . I_IE) after it.
      def folded(shunting):
        def currents(x, w_ee, w_ie, w_ei, g_i):
          second, weights = ((circuit.shunting_kernel(w_ie, w_ei, g_i), None) if shunting else
                             (w_ie, w_ei * g_i))
          kernel = jnp.concatenate([circuit.balanced_kernel(w_ee, w_ie, w_ei), second], axis=-1)
          if shunting and lif is not None:   # -> the LIF's spikes
            return self._fire_convolved(lif, x, kernel, g_e, b_e), None, None
          return integrated(self._feedforward(x, kernel, dtype=opts.conv_dtype,
                                              low_precision_result=True), weights)
        return currents

      i_int, i_bal, i_shunt = jax.lax.platform_dependent(
          x, w_ee, w_ie, w_ei, g_i, cpu=folded(False), default=folded(True))
    if probes:   # the probes measure what trains; I_EI = W_EI I_IE is measured beside it
      i_ei = circuit.lateral_inhibition(self._feedforward(x, w_ie, dtype=opts.conv_dtype), w_ei)
      self._record(_at_init(self, _ei_path_statistics, i_bal, i_shunt, i_int, i_ei, w_ei, g_i,
                            values=self.is_mutable_collection("probe_values")))
    if lif is not None:
      return i_int   # the spikes, already over T
    return _tile_time(i_int, self.time_repeats)

  def _fire(self, lif: "LIF", stored: Array, g_e: Array, b_e: Array,
            shunting_weights: Array | None) -> Array:
    """The spikes of ``lif`` driven by this layer's I_int, from the stored currents, in their
    dtype: ``circuit.fused_integrated_current`` then the LIF (``LIF.spikes``); compiled for an
    NVIDIA GPU, where [I_bal | I_shunt] are stored, a forward and a backward kernel instead
    (``ei_lif.make_integrate_and_fire``: no I_int or dL/dI_int stored, each pass one read of
    the currents, issue 21). The same values up to float rounding."""
    def composed(stored, g_e, b_e, shunting_weights):
      i_int = _tile_time(circuit.fused_integrated_current(stored, g_e, b_e, shunting_weights),
                         self.time_repeats)
      return lif.spikes(i_int).reshape(i_int.shape).astype(stored.dtype)

    if shunting_weights is not None:
      return composed(stored, g_e, b_e, shunting_weights)
    n = lif.neuron
    fused = ei_lif.make_integrate_and_fire(lif.T, self.time_repeats, n.tau, n.threshold,
                                           n.surrogate, n.alpha)
    return jax.lax.platform_dependent(
        stored, g_e, b_e, shunting_weights, default=composed,
        cuda=lambda stored, g_e, b_e, _: fused(stored, g_e, b_e))

  def _fire_convolved(self, lif: "LIF", x: Array, kernel: Array, g_e: Array, b_e: Array
                      ) -> Array:
    """The spikes of ``lif`` driven by this layer's I_int, from the input x and the kernel
    [balanced_kernel | shunting_kernel]: the convolution, then ``_fire``; compiled for an NVIDIA
    GPU, a forward pass outside differentiation (evaluation) convolves inside one kernel instead
    and stores no currents (``ei_conv_lif``, issue 21), where the layer's geometry allows it
    (``ei_conv_lif.supports``). The same values up to float rounding; differentiated, the
    convolution and ``_fire`` as before."""
    opts = self.options
    x, kernel = circuit.operands(x, kernel, self.dtype if self.dtype is not None else
                                 opts.conv_dtype)

    def currents(x, kernel):
      return self._feedforward(x, kernel, low_precision_result=True)

    def composed(x, kernel, g_e, b_e):
      return self._fire(lif, currents(x, kernel), g_e, b_e, None)

    if not ei_conv_lif.supports(x.shape, kernel.shape, time_repeats=self.time_repeats,
                                **self._conv_kwargs(x)):
      return composed(x, kernel, g_e, b_e)
    n = lif.neuron
    fused = ei_lif.make_integrate_and_fire(lif.T, self.time_repeats, n.tau, n.threshold,
                                           n.surrogate, n.alpha)
    convolved = ei_conv_lif.make_conv_integrate_and_fire(lif.T, currents, fused, n.tau,
                                                          n.threshold)
    return jax.lax.platform_dependent(x, kernel, g_e, b_e, default=composed, cuda=convolved)

  def _mixes_currents(self, x: Array) -> bool:
    """Whether W_EI mixes the feed-forward currents instead of being folded into the kernel:
    where that costs fewer FLOPs, M x n_I x n_E against fan-in x n_I x n_E (M the output
    positions; small maps at small batches)."""
    return self._output_positions(x) <= self._fan_in(x.shape[-1])

  def _balanced_current(self, x: Array, w_ee: Array, w_ie: Array, w_ei: Array) -> Array:
    """I_bal = I_EE - W_EI I_IE in >= float32 (an output layer's logits, spec §1.3): one product
    with ``balanced_kernel`` (W_EI folded into the kernel), or two products and the mix where
    that costs fewer FLOPs (small maps at small batches)."""
    dtype = self.options.conv_dtype
    if self._mixes_currents(x):
      return circuit.balanced_current(self._feedforward(x, w_ee, dtype=dtype),
                                      self._feedforward(x, w_ie, dtype=dtype), w_ei)
    return self._feedforward(x, circuit.balanced_kernel(w_ee, w_ie, w_ei), dtype=dtype)


class EIConv(_ConvGeometry, _EILayer):
  """E-I convolution (EiConv + EiNorm2d): NHWC input -> integrated current I_int (spec §1.2).

  Attributes:
    features: n_E, excitatory output channels (n_I = n_E // ei_ratio).
    kernel_size, strides, padding: as the conv it replaces (int or (h, w); padding k//2 of
      zeros by default, or "SAME", "VALID", ints or pairs as Flax's ``nn.Conv``; no bias).
    options: ``EIOptions``; time_repeats: see the module docstring.
  """


class EIDense(_EILayer):
  """E-I dense layer (EiLinear + EiNorm1d): (N, d) -> integrated current I_int (spec §1.2)."""


class EIHead(EIDense):
  """E-I output layer (spec §1.3): (N, d) -> balanced current I_EE - W_EI I_IE (the logits).

  Its g_I, g_E and b_E exist (parameter counts equal the reference) but are unused. Any number
  of classes: n_I = max(1, n_classes // ei_ratio) (one inhibitory unit for 2 or 3 classes).
  """
  output_layer: bool = True


class LIF(nn.Module):
  """Multi-step LIF on the merged batch (spec §5): (B*T, ...) currents -> (B*T, ...) spikes.

  The membrane potential V is explicit state, used in one of three ways:

  * stateless (the default, the reference's reset per batch): every call starts from V_0 = 0;
  * carried: when the ``neuron_state`` collection is mutable (``model.apply(variables, x,
    mutable=["neuron_state"])``) a call continues from the stored V ("neuron_state"/"v", zeros
    when absent) and stores its final V_T, so a model built for T = 1 runs one time step per
    call (``ei_snn_jax.models.streaming``); ``model.init`` never creates the state;
  * explicit: ``initial_state(x_t)`` gives V_0 and ``step(v, x_t)`` returns (V_t, S_t), e.g.
    ``lif.apply(variables, v, x_t, method="step")``.

  Attributes:
    T: time steps on the merged axis of the input (the first axis is B*T, sample-major: row
      b*T + t, see ``split_time``).
    neuron: ``NeuronOptions`` (tau, threshold, surrogate; learnable tau / threshold).
    dtype: computation dtype (None: promoted from the input and the learnable parameters).
    param_dtype: dtype of the learnable tau (w) and threshold.
  """
  T: int
  neuron: NeuronOptions = NeuronOptions()
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  def setup(self):
    n = self.neuron
    if isinstance(self.T, bool) or not isinstance(self.T, int) or self.T < 1:
      raise LayerError(f"{layer_name(self)}: T={self.T!r} must be an integer >= 1 (the time steps "
                       "merged into the first axis of the input, B*T)")
    if n.learnable_tau:
      self.w = self.param("w", nn.initializers.constant(-math.log(n.tau - 1.0)), (),
                          self.param_dtype)
    if n.learnable_threshold:
      self.theta = self.param("threshold", nn.initializers.constant(n.threshold), (),
                              self.param_dtype)

  @nn.nowrap
  def parameter_roles(self) -> dict[str, roles.ParamRole]:
    """{parameter name: role}: the learnable w (1/tau = sigmoid(w)) and threshold are not
    weights: not sign-constrained, not weight-decayed."""
    return {"w": roles.NOT_DECAYED, "threshold": roles.NOT_DECAYED}

  def _learnables(self) -> list[Array]:
    n = self.neuron
    return ([self.w] if n.learnable_tau else []) + ([self.theta] if n.learnable_threshold else [])

  def _compute_dtype(self, x: Array) -> Dtype:
    return self.dtype if self.dtype is not None else jnp.result_type(x, *self._learnables())

  def _dynamics(self, dtype: Dtype) -> tuple[Any, Any]:
    """(tau, theta): the options' constants, or tau = 1 / sigmoid(w) and theta when learnable,
    in the computation ``dtype`` (so that a bfloat16 LIF with float32 parameters keeps its
    membrane potential in bfloat16)."""
    n = self.neuron
    tau = (1.0 / jax.nn.sigmoid(self.w)).astype(dtype) if n.learnable_tau else n.tau
    threshold = self.theta.astype(dtype) if n.learnable_threshold else n.threshold
    return tau, threshold

  def initial_state(self, x_t: Array) -> Array:
    """V_0 = 0 shaped like one time step's input x_t (B, ...), in the computation dtype."""
    return neurons.lif_initial_state(x_t.astype(self._compute_dtype(x_t)))

  def step(self, v: Array, x_t: Array) -> tuple[Array, Array]:
    """One time step (spec §5): (V_{t-1}, x_t) -> (V_t, S_t) with
    H_t = (1 - 1/tau) V_{t-1} + x_t, S_t = Theta(H_t - theta), V_t = H_t - theta sg(S_t)."""
    n = self.neuron
    dtype = self._compute_dtype(x_t)
    tau, threshold = self._dynamics(dtype)
    return neurons.lif_step(v.astype(dtype), x_t.astype(dtype), tau=tau, threshold=threshold,
                            spike_fn=neurons.make_spike_fn(n.surrogate, n.alpha))

  def _stored_state(self, x_t: Array) -> Array:
    """The carried V (``neuron_state``/"v") for a step shaped like x_t, or V_0 = 0."""
    v0 = neurons.lif_initial_state(x_t)
    if not self.has_variable(NEURON_STATE, "v"):
      return v0
    v = self.get_variable(NEURON_STATE, "v")
    if v.shape != v0.shape:
      raise LayerError(f"{layer_name(self)}: the carried membrane potential has shape {v.shape} but one "
                       f"time step of the input has shape {v0.shape}; start a new stream (drop "
                       f"the {NEURON_STATE!r} collection) for a new batch size")
    return v.astype(v0.dtype)

  def fires_from_currents(self) -> bool:
    """Whether an E-I layer may fire this LIF from its stored currents (``_EILayer`` with
    ``lif=``, ``ei_lif``): no carried state, constant tau and theta, the computation dtype of
    the currents, and not while initialising, probing or capturing intermediates (where the
    layer's I_int and the LIF's output are wanted apart)."""
    n = self.neuron
    return (not self.is_mutable_collection(NEURON_STATE) and not self.is_initializing()
            and not self.is_mutable_collection("probes")
            and not self.is_mutable_collection("intermediates") and not n.learnable_tau
            and not n.learnable_threshold and self.dtype is None)

  def record(self, spikes: Array) -> Array:
    """Record the probes of spikes (B*T, ...) fired for this LIF elsewhere (an E-I layer's
    ``lif=``) and return them: what ``__call__`` records."""
    self._record(spikes.reshape((-1, self.T) + spikes.shape[1:]))
    return spikes

  def _record(self, spikes: Array) -> None:
    """Sow the firing rates of spikes (B, T, ...) into the probe collections that are mutable."""
    if self.is_mutable_collection("probe_values"):   # the rate of each time step, shape (T,)
      per_step = jnp.mean(spikes, axis=(0,) + tuple(range(2, spikes.ndim)))
      self.sow("probe_values", "firing_rate_per_step", per_step, reduce_fn=lambda _, b: b)
    if self.is_mutable_collection("probes"):
      self.sow("probes", "firing_rate", jnp.mean(spikes), reduce_fn=lambda _, b: b)

  def __call__(self, x: Array) -> Array:
    if x.ndim < 1 or x.shape[0] % self.T:
      raise LayerError(f"{layer_name(self)}: the first axis of the input must be the merged B*T "
                       f"axis, a multiple of T={self.T}, but the input has shape {tuple(x.shape)}")
    carry = self.is_mutable_collection(NEURON_STATE) and not self.is_initializing()
    spikes = self.spikes(x, carry)
    self._record(spikes)
    return spikes.reshape((-1,) + spikes.shape[2:])                          # (B*T, ...)

  def spikes(self, x: Array, carry: bool = False) -> Array:
    """The spikes (B, T, ...) of the currents x (B*T, ...), in the computation dtype, recording
    nothing: from V_0 = 0, or with ``carry`` from the stored V (storing V_T)."""
    n = self.neuron
    x = x.astype(self._compute_dtype(x))
    if (not carry and not n.learnable_tau and not n.learnable_threshold and n.unroll is True
        and self.T <= neurons.WRITTEN_OUT_BACKWARD_MAX_T):
      # Same spikes from V_0 = 0; the backward pass through time as one T x T mix (issue 11),
      # on the merged axis viewed as (B, T, ...): no transpose.
      lif = neurons.make_lif_multistep(n.tau, n.threshold, n.surrogate, n.alpha, time_axis=1)
      return _at_init(self, lif, x.reshape((-1, self.T) + x.shape[1:]))      # (B, T, ...)
    x_seq = neurons.split_time(x, self.T)                                    # (T, B, ...)
    v0 = self._stored_state(x_seq[0]) if carry else neurons.lif_initial_state(x_seq[0])
    tau, threshold = self._dynamics(x_seq.dtype)
    v_end, spikes = neurons.lif_scan(v0, x_seq, tau=tau, threshold=threshold,
                                     spike_fn=neurons.make_spike_fn(n.surrogate, n.alpha),
                                     unroll=n.unroll)
    if carry:
      self.put_variable(NEURON_STATE, "v", v_end)
    return jnp.swapaxes(spikes, 0, 1)                                        # (B, T, ...)


# ------------------------------------------------------------------------------------------
# BN-SNN baseline (spec §6.2-6.3)
# ------------------------------------------------------------------------------------------

def torch_default_kernel_init():
  """PyTorch's default conv/linear weight init: kaiming-uniform with a = sqrt(5)."""
  return nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_kaiming_normal_fan_out():
  """PyTorch ``kaiming_normal_(mode='fan_out', nonlinearity='relu')`` (BN-ResNet convs)."""
  return nn.initializers.variance_scaling(2.0, "fan_out", "normal")


class BNConv(nn.Module):
  """Conv (no bias) -> BatchNorm over the merged B*T*H*W axis per channel (spec §6.2).

  BatchNorm: momentum 0.1 in PyTorch terms (0.9 in Flax), eps 1e-5, gamma 1, beta 0.
  """
  features: int
  kernel_size: int = 3
  strides: int = 1
  time_repeats: int = 1
  kernel_init: Any = dataclasses.field(default_factory=torch_default_kernel_init)
  conv_dtype: str | None = None

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    kernel = self.param("kernel", self.kernel_init,
                        (self.kernel_size, self.kernel_size, x.shape[-1], self.features))
    y = circuit.conv(x, kernel, (self.strides, self.strides), dtype=self.conv_dtype)
    y = _tile_time(y.astype(jnp.float32), self.time_repeats)
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        name="bn")(y)


class TorchDense(nn.Module):
  """nn.Linear with PyTorch's default init (the BN models' classifier)."""
  features: int

  @nn.compact
  def __call__(self, x: Array) -> Array:
    d = x.shape[-1]
    bound = 1.0 / math.sqrt(d)
    kernel = self.param("kernel", torch_default_kernel_init(), (d, self.features))
    bias = self.param("bias", lambda key, shape: jax.random.uniform(key, shape, jnp.float32,
                                                                  -bound, bound), (self.features,))
    return x @ kernel + bias


# ------------------------------------------------------------------------------------------
# Spiking DANN baseline (spec §9; Cornford et al. 2021)
# ------------------------------------------------------------------------------------------

class _DANNLayer(_CircuitLayer):
  """z_E = W_EX x, z_I = W_IX x, z_hat = z_E - W_EI z_I, gamma = W_EI (exp(alpha) z_I) + eps,
  z = g z_hat / gamma + b (spec §9). Gradient corrections (DANN's cSGD): W_EI / d,
  W_IX / sqrt(n_E), alpha / (sqrt(n_E) d). Init: W ~ Exp(sigma*), sigma* = sqrt(2 pi/(d(2 pi-1)))
  (sqrt(1/(2d)) for the first layer), W_EI = 1/n_I, g = 1, b = 0, exp(alpha) = sqrt((2 pi-1)/d).

  Attributes:
    ei_ratio: n_I = max(n_E // ei_ratio, 1).
    first_layer: the first layer's init scale sqrt(1/(2d)).
    correct_gradients: DANN's gradient corrections (above).
  """
  ei_ratio: int = 4
  first_layer: bool = False
  correct_gradients: bool = True

  SIGN_CONSTRAINED = ("w_ex", "w_ix", "w_ei", "g")
  UNUSED_IN_OUTPUT_LAYER = ("alpha", "g", "bias")

  @nn.compact
  def __call__(self, x: Array) -> Array:
    n_e = self.features
    n_i = max(n_e // self.ei_ratio, 1)
    self._check_input(x)
    c_in = x.shape[-1]
    d = self._fan_in(c_in)
    sigma = (math.sqrt(1.0 / (2 * d)) if self.first_layer
             else math.sqrt(2 * math.pi / (d * (2 * math.pi - 1))))
    w_ex, w_ix, w_ei = self._weights(("w_ex", "w_ix"), sigma, c_in, n_e, n_i)
    alpha = self.param("alpha", nn.initializers.constant(0.5 * math.log((2 * math.pi - 1) / d)),
                       (n_i,), self.param_dtype)
    g = self.param("g", nn.initializers.ones, (n_e,), self.param_dtype)
    b = self.param("bias", nn.initializers.zeros, (n_e,), self.param_dtype)
    if self.correct_gradients:
      w_ei = ei_prop.scale_gradient(w_ei, 1.0 / d)
      w_ix = ei_prop.scale_gradient(w_ix, 1.0 / math.sqrt(n_e))
      alpha = ei_prop.scale_gradient(alpha, 1.0 / (math.sqrt(n_e) * d))
    z_e = self._feedforward(x, w_ex)
    z_i = self._feedforward(x, w_ix)
    return self._inhibit(z_e, z_i, w_ei, jnp.exp(alpha), g, b, stabilization="epsilon")

  def _inhibit(self, i_ee: Array, i_ie: Array, w_ei: Array, g_i: Array, g_e: Array,
               b_e: Array, *, stabilization: str, ste: bool = True) -> Array:
    """The layer's output from its feed-forward currents, tiled over T: I_bal for an output
    layer (spec §1.3), else I_int (spec §1.2), with its currents recorded for the probes."""
    if self.output_layer:
      return _at_init(self, _output_layer_output, i_ee, i_ie, w_ei,
                      time_repeats=self.time_repeats)
    probes = self.is_mutable_collection("probes")
    i_int, stats = _at_init(self, _hidden_layer_output, i_ee, i_ie, w_ei, g_i, g_e, b_e,
                            stabilization=stabilization, ste=ste, time_repeats=self.time_repeats,
                            probes=probes, values=probes and self.is_mutable_collection(
                                "probe_values"))
    self._record(stats)
    return i_int


class DANNConv(_ConvGeometry, _DANNLayer):
  """Spiking-DANN convolution (spec §9): NHWC input -> pre-spike current."""


class DANNDense(_DANNLayer):
  """Spiking-DANN dense layer (spec §9): (N, d) -> pre-spike current."""


class DANNHead(DANNDense):
  """Spiking-DANN output layer: returns z_hat = z_E - W_EI z_I, like ``EIHead``."""
  output_layer: bool = True
