"""Recipes shared by several config files (values from ../shared/spec/paper_spec.md §7).

Every config starts from ``ei_snn_jax.training.config.base_config()`` (the schema, with the
paper's E-I CIFAR-10 recipe as defaults); what more than one file changes in the same way lives
here.
"""

import ml_collections


def bn_recipe(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """BN-SNN baseline recipe (spec §7.1): lr 0.1, wd 1e-4, no warmup, plain cosine."""
  c.model.variant = "bn"
  c.optim.lr = 0.1
  c.optim.weight_decay = 1e-4
  c.optim.warmup_epochs = 0
  return c
