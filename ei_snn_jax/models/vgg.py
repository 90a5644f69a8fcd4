"""Spiking VGG-8/11/16/19 with the light classifier, E-I / BN / DANN variants (spec §6.2).

Per conv: current layer (EiConv+EiNorm2d | Conv+BN | DANN) -> LIF (-> Dropout for E-I/DANN);
"P" = AvgPool2d(2, 2). Five pools take 32x32 to 1x1; flatten gives 512 features; the head is a
single E-I output layer (I_bal), a Linear with bias (BN) or a DANN output layer.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax

from ei_snn_jax.models import common

Array = jax.Array

VGG_LAYERS: dict[str, tuple] = {
    "vgg8": (64, "P", 128, "P", 256, "P", 512, "P", 512, "P"),
    "vgg11": (64, "P", 128, "P", 256, 256, "P", 512, 512, "P", 512, 512, "P"),
    "vgg16": (64, 64, "P", 128, 128, "P", 256, 256, 256, "P", 512, 512, 512, "P",
              512, 512, 512, "P"),
    "vgg19": (64, 64, "P", 128, 128, "P", 256, 256, 256, 256, "P", 512, 512, 512, 512, "P",
              512, 512, 512, 512, "P"),
}


def scaled_layers(arch: str, width_multiplier: float = 1.0) -> tuple:
  """The layer list of ``arch`` with every channel count scaled (at least 4 channels)."""
  if arch not in VGG_LAYERS:
    raise ValueError(f"unknown VGG {arch!r}; choose one of {sorted(VGG_LAYERS)}")
  return tuple(v if v == "P" else max(4, int(round(v * width_multiplier)))
               for v in VGG_LAYERS[arch])


class SpikingVGG(nn.Module):
  """Spiking VGG (spec §6.2). Input: images (B, H, W, C) in [0, 1] or sequences (T, B, ...).

  Returns logits (B, num_classes), the mean over T of the head's per-step output.
  """
  layers: Sequence
  num_classes: int
  options: common.ModelOptions = common.ModelOptions()

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    o = self.options
    h, repeats = common.prepare_input(x, o)
    conv_index = 0
    for v in self.layers:
      if v == "P":
        h = common.avg_pool(h)
        continue
      h = common.fire(common.CurrentLayer(v, o, time_repeats=repeats,
                                          first_layer=conv_index == 0, name=f"conv{conv_index}"),
                      common.spiking(o, name=f"lif{conv_index}"), h, train)
      if o.variant != "bn":
        h = common.maybe_dropout(self, h, o.dropout, train)
      repeats = 1
      conv_index += 1
    h = h.reshape((h.shape[0], -1))
    logits = common.Head(self.num_classes, o, name="head")(h)
    return common.mean_over_time(logits, o.T)
