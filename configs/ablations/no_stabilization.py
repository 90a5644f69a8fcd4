r"""Ablation of E-I SNN VGG-16 on CIFAR-10 (spec §8.3): without adaptive stabilization.

Base: configs/ei_cifar10_vgg16.py (lr 0.001, warmup 30, 300 epochs; 91.01 % with every component).
Change: model.ei_stabilization = "none" (divide by the raw shunting current).
Expected (paper, qualitative only; spec §8.3): numerical explosion.
A NaN/Inf stop of the trainer is the expected outcome of this run, not a bug.

Command:
  python -m experiments.train --config configs/ablations/no_stabilization.py \
      --workdir runs/ablations/no_stabilization
Tiny smoke run:
  python -m experiments.train --config configs/ablations/no_stabilization.py:runlocal \
      --workdir /tmp/ablations_no_stabilization_runlocal
"""

from __future__ import annotations

import ml_collections

from configs import ei_cifar10_vgg16
from ei_snn_jax.training import config as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """ei_cifar10_vgg16 with model.ei_stabilization = "none" (divide by the raw shunting current).

  ``arg``: see ``ei_snn_jax.training.config.apply_config_arg`` (e.g. "runlocal").
  """
  c = ei_cifar10_vgg16.get_config()
  c.model.ei_stabilization = "none"
  return config_lib.apply_config_arg(c, arg)
