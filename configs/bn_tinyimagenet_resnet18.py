r"""BN-SNN baseline, SEW-ResNet-18 on Tiny-ImageNet-200 at 32x32, T=4.

Spec: ../shared/spec/paper_spec.md §7.1 (the reference's first commit had this BN config: lr
  0.1, wd 1e-4, 300 epochs, batch
  128, T=4).
Target: none published (the paper quotes a ~3 % gap between DeepEISNN and BN-based SNNs,
  spec §8.1).

Command:
  python -m experiments.train --config configs/bn_tinyimagenet_resnet18.py \
      --workdir runs/bn_tinyimagenet_resnet18 \
      --config.data.path=/data/tiny-imagenet-200
Tiny smoke run (4 steps; add ``,data.source=synthetic`` to run without the dataset):
  python -m experiments.train --config configs/bn_tinyimagenet_resnet18.py:runlocal \
      --workdir /tmp/bn_tinyimagenet_resnet18_runlocal \
      --config.data.path=/data/tiny-imagenet-200
"""

from __future__ import annotations

import ml_collections

from configs import common
from ei_snn_jax.training import config as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """BN-SNN ResNet-18 on Tiny-ImageNet: lr 0.1, no warmup, plain cosine, wd 1e-4, batch 128.

  ``arg``: see ``ei_snn_jax.training.config.apply_config_arg`` (e.g. "runlocal" or "model.T=8").
  """
  c = config_lib.base_config()
  c.data.name = "tiny_imagenet"
  c.model.arch = "resnet18"
  common.bn_recipe(c)  # variant "bn", lr 0.1, wd 1e-4, no warmup
  c.model.T = 4
  c.train.batch_size = 128
  c.train.epochs = 300
  return config_lib.apply_config_arg(c, arg)
