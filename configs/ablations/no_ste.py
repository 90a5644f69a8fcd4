r"""Ablation of E-I SNN VGG-16 on CIFAR-10 (spec §8.3): without the straight-through estimator.

Base: configs/ei_cifar10_vgg16.py (lr 0.001, warmup 30, 300 epochs; 91.01 % with every component).
Change: model.ei_ste = False (differentiate through the stabilised denominator).
Expected (paper, qualitative only; spec §8.3): wrong gradient direction, worse
accuracy.

Command:
  python -m experiments.train --config configs/ablations/no_ste.py \
      --workdir runs/ablations/no_ste
Tiny smoke run:
  python -m experiments.train --config configs/ablations/no_ste.py:runlocal \
      --workdir /tmp/ablations_no_ste_runlocal
"""

from __future__ import annotations

import ml_collections

from configs import ei_cifar10_vgg16
from ei_snn_jax.training import config as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """ei_cifar10_vgg16 with model.ei_ste = False (differentiate through the stabilised denominator).

  ``arg``: see ``ei_snn_jax.training.config.apply_config_arg`` (e.g. "runlocal").
  """
  c = ei_cifar10_vgg16.get_config()
  c.model.ei_ste = False
  return config_lib.apply_config_arg(c, arg)
