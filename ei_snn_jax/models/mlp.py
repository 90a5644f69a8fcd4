"""Spiking MLPs, E-I and BN (spec §6.4; the reference's models/MLP.py, unused by its configs).

Hidden widths by depth (``num_layers`` counts the hidden layers plus the output layer):

    2: 500 | 4: 500 500 300 | 6: 500 500 300 300 300 | 8: 500 500 300 300 300 100 100
    12: 500 x4, 300 x4, 100 x3 | 16: 500 x5, 300 x5, 100 x5

The input is flattened per sample (MNIST: 784 features). Per hidden layer the E-I model has
EiLinear + EiNorm1d (``layers.EIDense``, E-I Init) -> LIF; the BN model Linear (with bias,
PyTorch init) -> BatchNorm1d over the merged B*T axis -> LIF. The output layer is the E-I
output layer (I_bal) or a Linear with bias; the logits are the mean over T. Static images use
direct encoding (spec §6.1); sequences (T, B, ...) are flattened per time step.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ei_snn_jax import layers
from ei_snn_jax.models import common

Array = jax.Array

MLP_WIDTHS: dict[int, tuple[int, ...]] = {
    2: (500,),
    4: (500, 500, 300),
    6: (500, 500, 300, 300, 300),
    8: (500, 500, 300, 300, 300, 100, 100),
    12: (500,) * 4 + (300,) * 4 + (100,) * 3,
    16: (500,) * 5 + (300,) * 5 + (100,) * 5,
}


def mlp_widths(num_layers: int, width_multiplier: float = 1.0) -> tuple[int, ...]:
  """Hidden widths of the reference's MLP of ``num_layers`` layers (at least 4 units each)."""
  if num_layers not in MLP_WIDTHS:
    raise ValueError(f"no MLP with {num_layers} layers; choose one of {sorted(MLP_WIDTHS)}")
  return tuple(max(4, int(round(w * width_multiplier))) for w in MLP_WIDTHS[num_layers])


class BNDense(nn.Module):
  """Linear (bias, PyTorch init) -> BatchNorm1d over the merged B*T axis (spec §6.4)."""
  features: int
  time_repeats: int = 1

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    y = layers.TorchDense(self.features, name="dense")(x)
    y = layers.tile_time(y.astype(jnp.float32), self.time_repeats)
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                        name="bn")(y)


class SpikingMLP(nn.Module):
  """Spiking MLP (spec §6.4), variants "ei" and "bn". Input: images (B, ...) or (T, B, ...)."""
  widths: Sequence[int]
  num_classes: int
  options: common.ModelOptions = common.ModelOptions()

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    o = self.options
    if o.variant not in ("ei", "bn"):
      raise ValueError(f"the MLP has variants 'ei' and 'bn', not {o.variant!r}")
    if x.ndim == 5:                                   # sequence (T, B, H, W, C)
      x = x.reshape(x.shape[:2] + (-1,))
    elif x.ndim == 4:                                 # images (B, H, W, C)
      x = x.reshape((x.shape[0], -1))
    h = x.astype(jnp.float32)
    if h.ndim == 3:
      if h.shape[0] != o.T:
        raise ValueError(f"sequence input has {h.shape[0]} time steps but the model has T={o.T}")
      h, repeats = layers.merge_time(h), 1
    elif o.static_input_once:
      repeats = o.T
    else:
      h, repeats = layers.tile_time(h, o.T), 1
    for k, width in enumerate(self.widths):
      if o.variant == "ei":
        h = layers.EIDense(width, options=o.ei, time_repeats=repeats, name=f"fc{k}")(h)
      else:
        h = BNDense(width, time_repeats=repeats, name=f"fc{k}")(h, train)
      h = common.spiking(o, name=f"lif{k}")(h)
      repeats = 1
    if repeats > 1:
      h = layers.tile_time(h, repeats)
    logits = common.Head(self.num_classes, o, name="head")(h)
    return common.mean_over_time(logits, o.T)
