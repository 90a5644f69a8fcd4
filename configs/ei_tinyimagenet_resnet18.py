r"""E-I SNN (DeepEISNN), SEW-ResNet-18 on Tiny-ImageNet-200 at 32x32, T=4.

Spec: ../shared/spec/paper_spec.md §7.1, row "EI TinyImageNet200-ResNet18"; data §7.4, model §6.3.
Target: 50.29 % top-1 (paper and README released checkpoint, spec §8.1-8.2); best-epoch
  accuracy on the official val set.

Command:
  python -m experiments.train --config configs/ei_tinyimagenet_resnet18.py \
      --workdir runs/ei_tinyimagenet_resnet18 \
      --config.data.path=/data/tiny-imagenet-200
Tiny smoke run (4 steps; add ``,data.source=synthetic`` to run without the dataset):
  python -m experiments.train --config configs/ei_tinyimagenet_resnet18.py:runlocal \
      --workdir /tmp/ei_tinyimagenet_resnet18_runlocal \
      --config.data.path=/data/tiny-imagenet-200
"""

from __future__ import annotations

import ml_collections

from ei_snn_jax.training import config as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """E-I ResNet-18 on Tiny-ImageNet: lr 0.003, warmup 10 of 300 epochs from 1e-3, batch 128.

  ``arg``: see ``ei_snn_jax.training.config.apply_config_arg`` (e.g. "runlocal" or "model.T=8").
  """
  c = config_lib.base_config()
  c.data.name = "tiny_imagenet"
  c.model.arch = "resnet18"
  c.model.variant = "ei"
  c.model.T = 4
  c.train.batch_size = 128
  c.optim.lr = 0.003
  c.optim.init_lr = 1e-3  # warmup starts at 1e-3, not 1e-7 (spec §7.1, §10.14)
  c.optim.warmup_epochs = 10
  c.train.epochs = 300
  return config_lib.apply_config_arg(c, arg)
