r"""Quick start: a quarter-width E-I VGG-8 on all of CIFAR-10 for 3 epochs; learns on a CPU.

Not a paper run: the paper's E-I recipe (SGD momentum 0.9, coupled wd 5e-4, linear warmup from
1e-7 then per-step cosine to 0, T=4, E-I Init, adaptive stabilization + STE, W_EI grad / d) on a
network with a quarter of the channels, batch 64, 3 epochs (1 of warmup). The knobs to tune for
speed or accuracy are the ``QUICK`` values below.
lr: the VGG-8 recipe value 0.002 is kept (0.01 learned more slowly in a 2-epoch trial).
Target: clearly above chance (10 %). Measured on the 2-core CPU at commit 35b6d41 (load 1.5):
23.8 / 35.9 / 41.1 % test accuracy after epochs 1 / 2 / 3; 614 s of training, 10 min 23 s for
the whole command. tests/test_train.py trains a cut of it (5k/1k images, 4 epochs; its bar is
written there).

Command:
  python -m experiments.train --config configs/default.py --workdir runs/default
Tiny smoke run:
  python -m experiments.train --config configs/default.py:runlocal --workdir /tmp/default_runlocal
"""

from __future__ import annotations

import ml_collections

from ei_snn_jax.training import config as config_lib

# Everything that makes this run small, in one place (tune these by measurement).
QUICK = dict(
    arch="vgg8",
    width_multiplier=0.25,
    T=4,
    batch_size=64,
    eval_batch_size=400,   # divides test_subset and 1/2/4/8/16 devices
    train_subset=0,        # all 50,000 training images
    test_subset=0,         # all 10,000 test images
    epochs=3,
    warmup_epochs=1,
    lr=0.002,
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The small E-I CIFAR-10 run described in the module docstring.

  ``arg``: see ``ei_snn_jax.training.config.apply_config_arg`` (e.g. "runlocal" or "optim.lr=0.005").
  """
  c = config_lib.base_config()
  c.model.arch = QUICK["arch"]
  c.model.variant = "ei"
  c.model.width_multiplier = QUICK["width_multiplier"]
  c.model.T = QUICK["T"]
  c.data.train_subset = QUICK["train_subset"]
  c.data.test_subset = QUICK["test_subset"]
  c.train.batch_size = QUICK["batch_size"]
  c.train.eval_batch_size = QUICK["eval_batch_size"]
  c.train.epochs = QUICK["epochs"]
  c.optim.warmup_epochs = QUICK["warmup_epochs"]
  c.optim.lr = QUICK["lr"]
  c.train.log_every_steps = 20
  c.train.checkpoint_every_steps = 200
  return config_lib.apply_config_arg(c, arg)
