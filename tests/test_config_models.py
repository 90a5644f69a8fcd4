"""Every experiment config loads, validates and builds its model (shapes only, no training), with
exactly the parameter count of its layers' formulas."""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ei_snn_jax.training import config as config_lib
from ei_snn_jax import data, models
from ei_snn_jax.data import transforms

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").rglob("*.py")
                 if p.name not in ("__init__.py", "common.py", "sweeps.py"))
NUM_CLASSES = data.NUM_CLASSES


def expected_parameter_count(arch: str, variant: str, width: float, classes: int,
                             ei_ratio: int, in_shape: tuple = (32, 32, 3)) -> int:
  """Trainable parameters from the layers' formulas, written independently of the model code.

  E-I / DANN layer with n_I = n_E // ei_ratio (DANN: at least 1): W_EE|W_EX and W_IE|W_IX
  (k k c_in (n_E + n_I)), W_EI (n_E n_I), g_I|alpha (n_I), g_E|g and b_E (2 n_E); the output layer
  likewise with k = 1 (spec §1.2-1.3, §9). BN-SNN: a bias-free conv and BatchNorm's scale and
  offset, and a Linear head with bias (spec §6.2). Channel layouts: ``models.scaled_layers``
  (VGG) and ResNet-18's stage widths [2, 2, 2, 2] with a 1x1 downsample where the stride or width
  changes (spec §6.3). MLP (spec §6.4): dense layers on the flattened input ``in_shape``; the
  BN MLP's hidden Linear layers have a bias as well.
  """
  def layer(c_in, n, k):
    if variant == "bn":
      return k * k * c_in * n + 2 * n
    n_i = max(n // ei_ratio, 1)
    return k * k * c_in * (n + n_i) + n * n_i + n_i + 2 * n

  def head(d):
    return d * classes + classes if variant == "bn" else layer(d, classes, 1)

  if arch.startswith("mlp"):
    total, d = 0, int(np.prod(in_shape))
    for n in models.mlp_widths(int(arch[3:]), width):
      total, d = total + layer(d, n, 1) + (n if variant == "bn" else 0), n
    return total + head(d)
  if arch.startswith("vgg"):
    total, c = 0, in_shape[-1]
    for v in models.scaled_layers(arch, width):
      if v != "P":
        total, c = total + layer(c, v, 3), v
    return total + head(c)
  widths = models.resnet18_widths(width)
  total, c = layer(in_shape[-1], widths[0], 3), widths[0]
  for stage, w in enumerate(widths):
    for block in range(2):
      stride = 2 if stage > 0 and block == 0 else 1
      total += layer(c, w, 3) + layer(w, w, 3) + (layer(c, w, 1) if stride > 1 or c != w else 0)
      c = w
  return total + head(c)


def test_parameter_formula_reproduces_the_reference_counts():
  """The formula above against the reference's torchinfo counts (spec §11.3)."""
  from tests.test_models import REFERENCE_COUNTS
  for arch, variant, classes, want in REFERENCE_COUNTS:
    assert expected_parameter_count(arch, variant, 1.0, classes, 4) == want, (arch, variant)


def test_config_takes_its_lists_from_the_library():
  """The allowed archs and variants are the models package's own (no copy in the config)."""
  options = config_lib.options()
  assert set(options["model.arch"][1]) == set(models.ARCHS)
  assert options["model.variant"][1] == models.VARIANTS


@pytest.mark.parametrize("path", CONFIGS)
def test_config_builds_its_model(path):
  cfg = config_lib.load_config(str(ROOT / path))
  config_lib.validate_config(cfg, num_devices=8)
  model = models.create_model(cfg.model, NUM_CLASSES[cfg.data.name])
  name = cfg.data.name                 # the model input of the dataset's eval transform
  stored = data.registry.get(name).example_shape(cfg.model.T)
  x = transforms.eval_transform(name)(jnp.full((2,) + stored, 128, jnp.uint8))
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  out = jax.eval_shape(lambda v: model.apply(v, x), shapes)
  assert out.shape == (2, NUM_CLASSES[cfg.data.name])
  want = expected_parameter_count(cfg.model.arch, cfg.model.variant, cfg.model.width_multiplier,
                                  NUM_CLASSES[cfg.data.name], cfg.model.ei_ratio, x.shape[-3:])
  assert sum(int(np.prod(l.shape)) for l in jax.tree.leaves(shapes["params"])) == want
