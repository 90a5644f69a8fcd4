"""Spiking SEW-ResNet-18 (ADD connect) for 32x32 inputs, E-I / BN / DANN variants (spec §6.3).

Stem: 3x3 conv (stride 1) -> norm -> LIF, no max-pool. Stages of BasicBlocks [2, 2, 2, 2] with
64/128/256/512 channels and first strides 1/2/2/2. BasicBlock: conv3x3(s) -> LIF -> conv3x3 ->
LIF, out = spikes + identity, where identity is x or a spiking downsample (1x1 conv(s) -> norm ->
LIF). Block outputs are non-negative integer spike counts. Head: global average pool -> classifier.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ei_snn_jax.models import common

Array = jax.Array

# BasicBlocks per stage of each SEW-ResNet (spec §6.3).
RESNET_STAGES: dict[str, tuple[int, ...]] = {"resnet18": (2, 2, 2, 2)}


def resnet18_widths(width_multiplier: float = 1.0) -> tuple[int, ...]:
  """Stage widths of ResNet-18 scaled by ``width_multiplier`` (at least 4 channels)."""
  return tuple(max(4, int(round(w * width_multiplier))) for w in (64, 128, 256, 512))


def block_layout(stage_sizes: Sequence[int],
                 widths: Sequence[int]) -> Iterator[tuple[int, int, int, int]]:
  """(stage, block, width, strides) of every BasicBlock in forward order: the first block of
  every stage but the first has stride 2 (spec §6.3)."""
  for stage, (blocks, width) in enumerate(zip(stage_sizes, widths)):
    for block in range(blocks):
      yield stage, block, width, 2 if stage > 0 and block == 0 else 1


def has_downsample(in_channels: int, features: int, strides: int) -> bool:
  """Whether a BasicBlock's identity needs the 1x1 downsample (a stride or a width change)."""
  return strides != 1 or in_channels != features


class SEWBasicBlock(nn.Module):
  """SEW BasicBlock with ADD connect after the second LIF (spec §6.3)."""
  features: int
  strides: int
  options: common.ModelOptions

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    o = self.options
    init = "kaiming_fan_out"
    h = common.fire(common.CurrentLayer(self.features, o, strides=self.strides,
                                        bn_kernel_init=init, name="conv1"),
                    common.spiking(o, name="lif1"), x, train)
    h = common.fire(common.CurrentLayer(self.features, o, bn_kernel_init=init, name="conv2"),
                    common.spiking(o, name="lif2"), h, train)
    identity = x
    if has_downsample(x.shape[-1], self.features, self.strides):
      identity = common.fire(common.CurrentLayer(self.features, o, kernel_size=1,
                                                 strides=self.strides, bn_kernel_init=init,
                                                 name="downsample"),
                             common.spiking(o, name="lif_down"), x, train)
    return h + identity


class SEWResNet(nn.Module):
  """SEW-ResNet for CIFAR-size inputs. Returns logits (B, num_classes) = mean over T."""
  stage_sizes: Sequence[int]
  num_classes: int
  options: common.ModelOptions = common.ModelOptions()
  widths: Sequence[int] = (64, 128, 256, 512)

  @nn.compact
  def __call__(self, x: Array, train: bool = False) -> Array:
    o = self.options
    h, repeats = common.prepare_input(x, o)
    h = common.fire(common.CurrentLayer(self.widths[0], o, time_repeats=repeats, first_layer=True,
                                        bn_kernel_init="kaiming_fan_out", name="stem"),
                    common.spiking(o, name="lif_stem"), h, train)
    for stage, block, width, strides in block_layout(self.stage_sizes, self.widths):
      h = SEWBasicBlock(width, strides, o, name=f"stage{stage}_block{block}")(h, train)
    h = jnp.mean(h, axis=(1, 2))
    logits = common.Head(self.num_classes, o, name="head")(h)
    return common.mean_over_time(logits, o.T)
