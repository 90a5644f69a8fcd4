"""Pieces shared by the spiking VGG and SEW-ResNet models (spec §6.1).

``CurrentLayer`` builds the pre-spike current of one layer for a model variant:
"ei" (E-I circuit), "bn" (conv + BatchNorm) or "dann" (spiking DANN). Direct encoding: a static
image batch (B, H, W, C) in [0, 1] stands for T identical time steps; sequences come as
(T, B, ...). Everything except the LIF runs on the merged B*T axis (sample-major, row b*T + t,
``layers.merge_time``); the logits are the mean over T of the head's output.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ei_snn_jax import layers

Array = jax.Array
VARIANTS = ("ei", "bn", "dann")


@dataclasses.dataclass(frozen=True)
class ModelOptions:
  """Everything a model needs besides its architecture (hashable, so a module attribute).

  Attributes:
    variant: "ei" | "bn" | "dann".
    T: time steps.
    ei: E-I method switches; neuron: LIF settings.
    dropout: dropout rate after each E-I/DANN conv layer of a VGG (0 in every paper config).
    static_input_once: compute the first layer once for a static image batch and tile it over
      T (identical values; the plain path tiles the image first).
  """
  variant: str = "ei"
  T: int = 4
  ei: layers.EIOptions = layers.EIOptions()
  neuron: layers.NeuronOptions = layers.NeuronOptions()
  dropout: float = 0.0
  static_input_once: bool = True


class CurrentLayer(nn.Module):
  """Conv layer of the chosen variant: input -> pre-spike current on the merged B*T axis.

  The E-I / DANN layer is created under the name "ei" / "dann" (``tree.WRAPPERS``, left out of
  layer names), the BN one as "bn_conv".

  Attributes:
    features, kernel_size, strides: the convolution's output channels, k and stride.
    options: ``ModelOptions`` (the variant and its switches).
    time_repeats: see ``layers`` (a static image batch standing for T steps).
    first_layer: the DANN first layer's init scale (spec §9).
    bn_kernel_init: "torch_default" (VGG) or "kaiming_fan_out" (ResNet) for BN convs.
  """
  features: int
  options: ModelOptions
  kernel_size: int = 3
  strides: int = 1
  time_repeats: int = 1
  first_layer: bool = False
  bn_kernel_init: str = "torch_default"

  @nn.compact
  def __call__(self, x: Array, train: bool = False, lif: layers.LIF | None = None) -> Array:
    """The current (B*T, ...); with ``lif`` (E-I variant only) the spikes it fires
    (``layers.EIConv``'s ``lif=``)."""
    o = self.options
    if o.variant == "ei":
      return layers.EIConv(self.features, options=o.ei, kernel_size=self.kernel_size,
                           strides=self.strides, time_repeats=self.time_repeats,
                           name="ei")(x, lif=lif)
    if lif is not None:
      raise ValueError(f"only an E-I layer fires its LIF itself, not variant {o.variant!r}")
    if o.variant == "bn":
      init = (layers.torch_default_kernel_init() if self.bn_kernel_init == "torch_default"
              else layers.torch_kaiming_normal_fan_out())
      return layers.BNConv(self.features, kernel_size=self.kernel_size, strides=self.strides,
                           time_repeats=self.time_repeats, kernel_init=init,
                           conv_dtype=o.ei.conv_dtype, name="bn_conv")(x, train)
    if o.variant == "dann":
      return layers.DANNConv(self.features, ei_ratio=o.ei.ei_ratio, kernel_size=self.kernel_size,
                             strides=self.strides, time_repeats=self.time_repeats,
                             first_layer=self.first_layer, name="dann")(x)
    raise ValueError(f"unknown variant {o.variant!r}; choose one of {VARIANTS}")


class Head(nn.Module):
  """Classifier of the chosen variant: (N, d) -> (N, classes) per time step (spec §6.2): an E-I
  or DANN output layer (named "ei" / "dann", like ``CurrentLayer``'s) or a Linear ("dense")."""
  num_classes: int
  options: ModelOptions

  @nn.compact
  def __call__(self, x: Array) -> Array:
    o = self.options
    if o.variant == "ei":
      return layers.EIHead(self.num_classes, options=o.ei, name="ei")(x)
    if o.variant == "bn":
      return layers.TorchDense(self.num_classes, name="dense")(x)
    if o.variant == "dann":
      return layers.DANNHead(self.num_classes, ei_ratio=o.ei.ei_ratio, name="dann")(x)
    raise ValueError(f"unknown variant {o.variant!r}; choose one of {VARIANTS}")


def prepare_input(x: Array, options: ModelOptions) -> tuple[Array, int]:
  """Direct encoding (spec §6.1). Returns (layer-1 input, time_repeats for layer 1).

  Static images (B, H, W, C): with ``static_input_once`` layer 1 sees (B, ...) and tiles its
  current T times; otherwise the image is tiled to (B*T, ...) here. Sequences (T, B, ...) are
  merged to (B*T, ...), sample-major (``layers.merge_time``).
  """
  x = x.astype(jnp.float32)
  T = options.T
  if x.ndim == 5:
    if x.shape[0] != T:
      raise ValueError(f"sequence input has {x.shape[0]} time steps but the model has T={T}")
    return layers.merge_time(x), 1
  if x.ndim != 4:
    raise ValueError(f"expected images (B, H, W, C) or sequences (T, B, H, W, C), got {x.shape}")
  if options.static_input_once:
    return x, T
  return layers.tile_time(x, T), 1


def mean_over_time(logits: Array, T: int) -> Array:
  """(B*T, classes) -> (B, classes): the model output is the mean over T (spec §6.1)."""
  return layers.mean_over_time(logits, T)


def avg_pool(x: Array) -> Array:
  """AvgPool2d(2, 2) (floor), NHWC."""
  return nn.avg_pool(x, (2, 2), strides=(2, 2), padding="VALID")


def spiking(options: ModelOptions, name: str | None = None) -> layers.LIF:
  """The LIF layer for these options."""
  return layers.LIF(options.T, options.neuron, name=name)


def fire(current: CurrentLayer, lif: layers.LIF, x: Array, train: bool = False) -> Array:
  """``lif(current(x, train))``: one layer's spikes. An E-I layer fires the LIF from its stored
  feed-forward currents when the LIF allows it (``layers.LIF.fires_from_currents``): the same
  values, in the layer's computation dtype, by two kernels on an NVIDIA GPU (``core.ei_lif``,
  issue 21)."""
  o = current.options
  if o.variant == "ei" and o.ei.written_out_backward and lif.fires_from_currents():
    return lif.record(current(x, train, lif=lif))
  return lif(current(x, train))


def maybe_dropout(module: nn.Module, x: Array, rate: float, train: bool) -> Any:
  """Dropout after a feature layer when rate > 0 (p = 0 in every paper config)."""
  if rate <= 0:
    return x
  return nn.Dropout(rate)(x, deterministic=not train)
