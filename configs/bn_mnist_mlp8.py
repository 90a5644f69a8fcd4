r"""BN-SNN baseline, 8-layer MLP (500-500-300-300-300-100-100) on MNIST, T=4.

Spec: ../shared/spec/paper_spec.md §6.4 (the MLP; no reference config uses it) with the BN
  recipe of §7.1.
Target: none published: not a paper run; the BN counterpart of configs/ei_mnist_mlp8.py.

Command:
  python -m experiments.train --config configs/bn_mnist_mlp8.py \
      --workdir runs/bn_mnist_mlp8 \
      --config.data.path=/data/mnist
Tiny smoke run (4 steps; add ``,data.source=synthetic`` to run without the dataset):
  python -m experiments.train --config configs/bn_mnist_mlp8.py:runlocal \
      --workdir /tmp/bn_mnist_mlp8_runlocal \
      --config.data.path=/data/mnist
"""

from __future__ import annotations

import ml_collections

from configs import common
from ei_snn_jax.training import config as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """BN-SNN MLP-8 on MNIST: the BN recipe (lr 0.1, wd 1e-4, no warmup), 100 epochs.

  ``arg``: see ``ei_snn_jax.training.config.apply_config_arg`` (e.g. "runlocal" or "model.T=8").
  """
  c = config_lib.base_config()
  c.data.name = "mnist"
  c.data.augment = False  # the reference's MNIST transform is ToTensor only
  c.model.arch = "mlp8"
  common.bn_recipe(c)  # variant "bn", lr 0.1, wd 1e-4, no warmup
  c.model.T = 4
  c.train.epochs = 100
  return config_lib.apply_config_arg(c, arg)
