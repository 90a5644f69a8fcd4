r"""BN-SNN baseline, VGG-16 on CIFAR-10, T=4: BatchNorm instead of E-I circuits.

Spec: ../shared/spec/paper_spec.md §7.1, row "BN CIFAR10-VGG16".
Target: none published (the paper quotes a ~3 % gap between DeepEISNN and BN-based
  SNNs, spec §8.1); expect roughly 94 %.

Command:
  python -m experiments.train --config configs/bn_cifar10_vgg16.py \
      --workdir runs/bn_cifar10_vgg16
Tiny smoke run (4 steps on 256 real images):
  python -m experiments.train --config configs/bn_cifar10_vgg16.py:runlocal \
      --workdir /tmp/bn_cifar10_vgg16_runlocal
"""

from __future__ import annotations

import ml_collections

from configs import common
from ei_snn_jax.training import config as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """BN-SNN VGG-16 on CIFAR-10: lr 0.1, no warmup, plain cosine, wd 1e-4.

  ``arg``: see ``ei_snn_jax.training.config.apply_config_arg`` (e.g. "runlocal" or "model.T=8").
  """
  c = config_lib.base_config()
  c.model.arch = "vgg16"
  common.bn_recipe(c)  # variant "bn", lr 0.1, wd 1e-4, no warmup
  return config_lib.apply_config_arg(c, arg)
