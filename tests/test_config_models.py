"""Every experiment config loads, validates and builds its model (shapes only, no training)."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ei_snn_jax.training import config as config_lib
from ei_snn_jax import models

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").rglob("*.py")
                 if p.name not in ("__init__.py", "common.py", "sweeps.py"))
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "synthetic": 10}


def test_config_lists_match_the_library():
  assert set(config_lib.ARCHS) == set(models.ARCHS)
  assert set(config_lib.VARIANTS) == set(models.VARIANTS)


@pytest.mark.parametrize("path", CONFIGS)
def test_config_builds_its_model(path):
  cfg = config_lib.load_config(str(ROOT / path))
  config_lib.validate_config(cfg, num_devices=8)
  model = models.create_model(cfg.model, NUM_CLASSES[cfg.data.name])
  x = jnp.zeros((2, 32, 32, 3), jnp.float32) + 0.5
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  out = jax.eval_shape(lambda v: model.apply(v, x), shapes)
  assert out.shape == (2, NUM_CLASSES[cfg.data.name])
  assert sum(int(np.prod(l.shape)) for l in jax.tree.leaves(shapes["params"])) > 0
