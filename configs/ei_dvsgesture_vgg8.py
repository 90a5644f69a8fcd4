r"""E-I SNN (DeepEISNN), VGG-8 on DVS128-Gesture (11 classes, 1176/288, T=16 event frames),
  48x48 input.

Spec: ../shared/spec/paper_spec.md §7.1, row "EI DVSGesture-VGG8"; data §7.4, model §6.2.
Target: 95.83 % top-1 (README released checkpoint, spec §8.2; the paper reports 94.86,
  §8.1); best-epoch test accuracy.

Command:
  python -m experiments.train --config configs/ei_dvsgesture_vgg8.py \
      --workdir runs/ei_dvsgesture_vgg8 \
      --config.data.path=/data/DvsGesture
Tiny smoke run (4 steps; add ``,data.source=synthetic`` to run without the dataset):
  python -m experiments.train --config configs/ei_dvsgesture_vgg8.py:runlocal \
      --workdir /tmp/ei_dvsgesture_vgg8_runlocal \
      --config.data.path=/data/DvsGesture
"""

from __future__ import annotations

import ml_collections

from ei_snn_jax.training import config as config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """E-I VGG-8 on dvs128_gesture: T=16, batch 32, lr 0.001 (warmup 10 of 300 epochs from 1e-7),
  wd 5e-4.

  ``arg``: see ``ei_snn_jax.training.config.apply_config_arg`` (e.g. "runlocal" or "model.T=8").
  """
  c = config_lib.base_config()
  c.data.name = "dvs128_gesture"
  c.model.arch = "vgg8"
  c.model.variant = "ei"
  c.model.T = 16
  c.train.batch_size = 32
  c.optim.lr = 0.001
  c.optim.init_lr = 1e-7
  c.optim.warmup_epochs = 10
  c.train.epochs = 300
  return config_lib.apply_config_arg(c, arg)
