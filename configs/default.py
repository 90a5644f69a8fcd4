r"""Quick start: a small E-I VGG-8 on a CIFAR-10 subset that learns in about ten CPU minutes.

Not a paper run: the paper's E-I recipe (SGD momentum 0.9, coupled wd 5e-4, linear warmup from
1e-7 then per-step cosine to 0, T=4, E-I Init, adaptive stabilization + STE, W_EI grad / d) on a
network with a quarter of the channels, 10k training images and 4 epochs. The knobs to tune for
speed or accuracy are the ``QUICK`` values below.
lr: the VGG-8 recipe value 0.002 is kept: the batch is half the paper's (64 vs 128), so each
example already moves the weights about twice as far per epoch, and the E-I division makes larger
steps riskier (the paper itself drops to 0.001 for deeper networks).
Target: clearly above chance (10 %) after the first epoch and rising; the lead records the
measured accuracy and wall time here.

Command:
  python -m experiments.train --config configs/default.py --workdir runs/default
Tiny smoke run:
  python -m experiments.train --config configs/default.py:runlocal --workdir /tmp/default_runlocal
"""

from __future__ import annotations

import ml_collections

from configs import common
from ei_snn_jax.config import apply_config_arg

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

  ``arg``: see ``ei_snn_jax.config.apply_config_arg`` (e.g. "runlocal" or "lr=0.005").
  """
  c = common.get_base_config()
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
  return apply_config_arg(c, arg)
