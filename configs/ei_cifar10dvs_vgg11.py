r"""E-I SNN (DeepEISNN), VGG-11 on CIFAR10-DVS (10 classes, 9000/1000 split, T=10 event frames),
  48x48 input.

Spec: ../shared/spec/paper_spec.md §7.1, row "EI CIFAR10DVS-VGG11"; data §7.4, model §6.2.
Target: 78.40 % top-1 (README released checkpoint, spec §8.2); best-epoch test accuracy.

Command:
  python -m experiments.train --config configs/ei_cifar10dvs_vgg11.py \
      --workdir runs/ei_cifar10dvs_vgg11 \
      --config.data.path=/data/CIFAR10DVS
Tiny smoke run (4 steps; add ``,data.source=synthetic`` to run without the dataset):
  python -m experiments.train --config configs/ei_cifar10dvs_vgg11.py:runlocal \
      --workdir /tmp/ei_cifar10dvs_vgg11_runlocal \
      --config.data.path=/data/CIFAR10DVS
"""

from __future__ import annotations

import ml_collections

from ei_snn_jax.training import config as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """E-I VGG-11 on cifar10_dvs: T=10, batch 32, lr 0.001 (warmup 10 of 300 epochs from 1e-7), wd
  5e-4.

  ``arg``: see ``ei_snn_jax.training.config.apply_config_arg`` (e.g. "runlocal" or "model.T=8").
  """
  c = config_lib.base_config()
  c.data.name = "cifar10_dvs"
  c.model.arch = "vgg11"
  c.model.variant = "ei"
  c.model.T = 10
  c.train.batch_size = 32
  c.optim.lr = 0.001
  c.optim.init_lr = 1e-7
  c.optim.warmup_epochs = 10
  c.train.epochs = 300
  return config_lib.apply_config_arg(c, arg)
