r"""BN-SNN baseline, VGG-8 on CIFAR10-DVS (10 classes, 9000/1000 split, T=10 event frames):
  BatchNorm instead of E-I circuits.

Spec: ../shared/spec/paper_spec.md §7.1 (the BN recipe: lr 0.1, wd 1e-4, no warmup) with the T
  and batch of row "EI CIFAR10DVS-VGG8".
Target: none published: the reference has no BN config for this dataset; this applies
  the BN recipe of §7.1 to the E-I row's T and batch size.

Command:
  python -m experiments.train --config configs/bn_cifar10dvs_vgg8.py \
      --workdir runs/bn_cifar10dvs_vgg8 \
      --config.data.path=/data/CIFAR10DVS
Tiny smoke run (4 steps; add ``,data.source=synthetic`` to run without the dataset):
  python -m experiments.train --config configs/bn_cifar10dvs_vgg8.py:runlocal \
      --workdir /tmp/bn_cifar10dvs_vgg8_runlocal \
      --config.data.path=/data/CIFAR10DVS
"""

from __future__ import annotations

import ml_collections

from configs import common
from ei_snn_jax.training import config as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """BN-SNN VGG-8 on cifar10_dvs: T=10, batch 32, lr 0.1, no warmup, wd 1e-4.

  ``arg``: see ``ei_snn_jax.training.config.apply_config_arg`` (e.g. "runlocal" or "model.T=8").
  """
  c = config_lib.base_config()
  c.data.name = "cifar10_dvs"
  c.model.arch = "vgg8"
  common.bn_recipe(c)  # variant "bn", lr 0.1, wd 1e-4, no warmup
  c.model.T = 10
  c.train.batch_size = 32
  c.train.epochs = 300
  return config_lib.apply_config_arg(c, arg)
