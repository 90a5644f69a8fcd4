r"""Spiking DANN baseline (spec §9), VGG-16 on CIFAR-10, T=4, with the E-I recipe.

Spec: ../shared/spec/paper_spec.md §7.1, row "EI CIFAR10-VGG16" for the hyper-parameters;
the layers are DANN's (eps = 1e-8, DANN init, DANN gradient corrections) with LIF units.
Target: none for a spiking DANN. The paper's only DANN number is "DANN (ANN), VGG-16,
  CIFAR-10, 88.54" (spec §8.1, §9), probably a non-spiking network; compare against it loosely.

Command:
  python -m experiments.train --config configs/dann_cifar10_vgg16.py \
      --workdir runs/dann_cifar10_vgg16
Tiny smoke run (4 steps on 256 real images):
  python -m experiments.train --config configs/dann_cifar10_vgg16.py:runlocal \
      --workdir /tmp/dann_cifar10_vgg16_runlocal
"""

from __future__ import annotations

import ml_collections

from ei_snn_jax.training import config as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Spiking DANN VGG-16 on CIFAR-10 with the E-I hyper-parameters (lr 0.001, warmup 30).

  ``arg``: see ``ei_snn_jax.training.config.apply_config_arg`` (e.g. "runlocal" or "model.T=8").
  """
  c = config_lib.base_config()
  c.model.arch = "vgg16"
  c.model.variant = "dann"  # DANN layers; the model.ei_* switches do not apply
  c.optim.lr = 0.001
  c.optim.warmup_epochs = 30
  return config_lib.apply_config_arg(c, arg)
