r"""BN-SNN baseline, ResNet-18 on CIFAR-100, T=4: BatchNorm instead of E-I circuits.

Spec: ../shared/spec/paper_spec.md §7.1, row "BN CIFAR100-ResNet18"
(not in the table: the reference's first commit had this config with the same BN recipe;
see the note under the table).
Target: none published (spec §8.1 gives no CIFAR-100 BN-SNN number).

Command:
  python -m experiments.train --config configs/bn_cifar100_resnet18.py \
      --workdir runs/bn_cifar100_resnet18
Tiny smoke run (4 steps on 256 real images):
  python -m experiments.train --config configs/bn_cifar100_resnet18.py:runlocal \
      --workdir /tmp/bn_cifar100_resnet18_runlocal
"""

from __future__ import annotations

import ml_collections

from configs import common
from ei_snn_jax.training import config as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """BN-SNN ResNet-18 on CIFAR-100: lr 0.1, no warmup, plain cosine, wd 1e-4.

  ``arg``: see ``ei_snn_jax.training.config.apply_config_arg`` (e.g. "runlocal" or "model.T=8").
  """
  c = config_lib.base_config()
  c.data.name = "cifar100"
  c.model.arch = "resnet18"
  common.bn_recipe(c)  # variant "bn", lr 0.1, wd 1e-4, no warmup
  return config_lib.apply_config_arg(c, arg)
