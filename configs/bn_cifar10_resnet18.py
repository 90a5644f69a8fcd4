r"""BN-SNN baseline, ResNet-18 on CIFAR-10, T=4: BatchNorm instead of E-I circuits.

Spec: ../shared/spec/paper_spec.md §7.1, row "BN CIFAR10-ResNet18".
Target: 95.37 % top-1 ("Vanilla BN" ResNet-18 row of the paper's main table, spec
  §8.1, presumably this BN-SNN baseline).

Command:
  python -m experiments.train --config configs/bn_cifar10_resnet18.py \
      --workdir runs/bn_cifar10_resnet18
Tiny smoke run (4 steps on 256 real images):
  python -m experiments.train --config configs/bn_cifar10_resnet18.py:runlocal \
      --workdir /tmp/bn_cifar10_resnet18_runlocal
"""

from __future__ import annotations

import ml_collections

from configs import common
from ei_snn_jax.training import config as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """BN-SNN ResNet-18 on CIFAR-10: lr 0.1, no warmup, plain cosine, wd 1e-4.

  ``arg``: see ``ei_snn_jax.training.config.apply_config_arg`` (e.g. "runlocal" or "model.T=8").
  """
  c = config_lib.base_config()
  c.model.arch = "resnet18"
  common.bn_recipe(c)  # variant "bn", lr 0.1, wd 1e-4, no warmup
  return config_lib.apply_config_arg(c, arg)
