"""Shared defaults of every experiment config (values from ../shared/spec/paper_spec.md §5-7).

Each run's config file calls ``get_base_config()`` and overrides what differs. Fields:

  seed                         master seed (init, data order, augmentation).
  data.name                    "cifar10" | "cifar100" | "synthetic".
  data.source                  "auto" (local path if given, else TFDS if installed, else the
                               official archive download) | "arrays" | "tfds" | "download" |
                               "synthetic".
  data.path                    .npz file (x_train, y_train, x_test, y_test) or a directory of
                               such arrays, for source "arrays" / "auto".
  data.cache_dir               where downloads and converted arrays are cached.
  data.train_subset/test_subset  use only the first N examples (0 = all).
  data.cutout_fill             "red" (faithful to the reference) | "grey".
  data.augment                 random crop + Cutout + flip on the training set.
  model.arch                   "vgg8" | "vgg11" | "vgg16" | "vgg19" | "resnet18".
  model.variant                "ei" | "bn" | "dann".
  model.T                      time steps (direct encoding: the image repeated T times).
  model.width_multiplier       scales every channel count (1.0 = the paper's models).
  model.ei_*                   E-I method switches (ablations); see ei_snn_jax.layers.EIOptions.
  model.conv_dtype             "float32" | "bfloat16" (the E-I division stays float32).
  optim.*                      SGD momentum 0.9, coupled L2 weight decay, warmup + cosine (§7).
  train.*                      epochs, batch size, logging, evaluation and checkpoint cadence.
  parallel.*                   device mesh and multi-host settings.
"""

import ml_collections
from ml_collections import config_dict


def get_base_config() -> ml_collections.ConfigDict:
  """The paper's E-I CIFAR-10 recipe (VGG-16 values); run configs override arch/lr/warmup."""
  c = ml_collections.ConfigDict()
  c.seed = 2025

  c.data = ml_collections.ConfigDict()
  c.data.name = "cifar10"
  c.data.source = "auto"
  c.data.path = config_dict.placeholder(str)
  c.data.tfds_data_dir = config_dict.placeholder(str)
  c.data.cache_dir = "~/.cache/ei_snn_jax"
  c.data.train_subset = 0
  c.data.test_subset = 0
  c.data.augment = True
  c.data.cutout_fill = "red"
  c.data.synthetic_train_size = 512
  c.data.synthetic_test_size = 256

  c.model = ml_collections.ConfigDict()
  c.model.arch = "vgg16"
  c.model.variant = "ei"
  c.model.T = 4
  c.model.width_multiplier = 1.0
  c.model.dropout = 0.0
  c.model.ei_ratio = 4
  c.model.ei_init = True
  c.model.ei_stabilization = "adaptive"
  c.model.ei_ste = True
  c.model.ei_scale_wei_grad = True
  c.model.tau = 2.0
  c.model.threshold = 1.0
  c.model.surrogate = "sigmoid"
  c.model.surrogate_alpha = 4.0
  c.model.conv_dtype = "float32"
  c.model.scan_unroll = 0           # 0 = fully unrolled (fast for the paper's small T)
  c.model.static_input_once = True  # compute the first layer once for repeated static images

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 0.001
  c.optim.init_lr = 1e-7            # warmup start
  c.optim.warmup_epochs = 30
  c.optim.momentum = 0.9
  c.optim.weight_decay = 5e-4

  c.train = ml_collections.ConfigDict()
  c.train.epochs = 300
  c.train.batch_size = 128
  c.train.eval_batch_size = 400     # divides 10000 test images and 1/2/4/8/16 devices
  c.train.log_every_steps = 50
  c.train.checkpoint_every_steps = 1000
  c.train.keep_checkpoints = 2
  c.train.max_steps = 0             # stop early after this many steps (0 = full schedule)
  c.train.progress_bar = True
  c.train.num_replicas = 1          # >1: vmap independent seeds in one run (seed, seed+1, ...)

  c.parallel = ml_collections.ConfigDict()
  c.parallel.num_devices = 0        # 0 = every local device
  c.parallel.distributed = False    # call jax.distributed.initialize() (multi-host)
  c.parallel.coordinator_address = config_dict.placeholder(str)  # "host:port"; unset = auto
  c.parallel.num_processes = 1      # with coordinator_address: processes in the job
  c.parallel.process_id = 0         # with coordinator_address: this process's rank
  return c


def bn_recipe(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """BN-SNN baseline recipe (spec §7.1): lr 0.1, wd 1e-4, no warmup, plain cosine."""
  c.model.variant = "bn"
  c.optim.lr = 0.1
  c.optim.weight_decay = 1e-4
  c.optim.warmup_epochs = 0
  return c
