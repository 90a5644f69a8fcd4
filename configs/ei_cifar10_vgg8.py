r"""E-I SNN (DeepEISNN), VGG-8 on CIFAR-10, T=4: the paper's E-I recipe.

Spec: ../shared/spec/paper_spec.md §7.1, row "EI CIFAR10-VGG8".
Target: 87.03 % top-1 (README released checkpoint, spec §8.2; best-epoch test accuracy).

Command:
  python -m experiments.train --config configs/ei_cifar10_vgg8.py \
      --workdir runs/ei_cifar10_vgg8
Tiny smoke run (4 steps on 256 real images):
  python -m experiments.train --config configs/ei_cifar10_vgg8.py:runlocal \
      --workdir /tmp/ei_cifar10_vgg8_runlocal
"""

from __future__ import annotations

import ml_collections

from ei_snn_jax.training import config as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """E-I VGG-8 on CIFAR-10: lr 0.002, warmup 10 of 300 epochs, batch 128, wd 5e-4.

  ``arg``: see ``ei_snn_jax.training.config.apply_config_arg`` (e.g. "runlocal" or "model.T=8").
  """
  c = config_lib.base_config()
  c.model.arch = "vgg8"
  c.model.variant = "ei"
  c.optim.lr = 0.002
  c.optim.warmup_epochs = 10
  return config_lib.apply_config_arg(c, arg)
