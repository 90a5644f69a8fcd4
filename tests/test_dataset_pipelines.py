"""Synthetic stand-ins, per-dataset transforms and the MLP / DVS-VGG models on them (spec §6-7)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ei_snn_jax.data import synthetic, transforms
from ei_snn_jax.models import common, mlp, vgg


@pytest.mark.parametrize("name,shape,classes", [
    ("tiny_imagenet", (64, 64, 3), 200), ("mnist", (28, 28, 1), 10),
    ("dvs128_gesture", (3, 128, 128, 2), 11), ("cifar10_dvs", (3, 128, 128, 2), 10)])
def test_synthetic_shapes_and_seed(name, shape, classes):
  a = synthetic.synthetic_like(name, classes, 12, 6, seed=1, T=3)
  b = synthetic.synthetic_like(name, classes, 12, 6, seed=1, T=3)
  assert a[0].shape == (12,) + shape and a[2].shape == (6,) + shape
  assert a[0].dtype == np.uint8 and a[1].dtype == np.int32
  assert a[1].min() >= 0 and a[1].max() < classes
  for u, v in zip(a, b):
    np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("name,classes,out_shape", [
    ("tiny_imagenet", 200, (4, 32, 32, 3)), ("mnist", 10, (4, 28, 28, 1)),
    ("dvs128_gesture", 11, (3, 4, 48, 48, 2)), ("cifar10_dvs", 10, (3, 4, 48, 48, 2))])
def test_transforms_give_model_inputs(name, classes, out_shape):
  x = jnp.asarray(synthetic.synthetic_like(name, classes, 4, 4, T=3)[0])
  train = transforms.train_transform(name)(jax.random.key(0), x)
  test = transforms.eval_transform(name)(x)
  assert train.shape == out_shape and test.shape == out_shape
  assert train.dtype == jnp.float32 and test.dtype == jnp.float32
  assert transforms.is_sequence(name) == (len(out_shape) == 5)
  plain = transforms.train_transform(name, augment_data=False)(jax.random.key(0), x)
  np.testing.assert_array_equal(np.asarray(plain), np.asarray(test))


def test_mlp_widths_follow_the_reference():
  assert mlp.mlp_widths(8) == (500, 500, 300, 300, 300, 100, 100)
  assert mlp.mlp_widths(2) == (500,)
  with pytest.raises(ValueError, match="no MLP with 3 layers"):
    mlp.mlp_widths(3)


@pytest.mark.parametrize("variant", ["ei", "bn"])
def test_mlp_on_mnist_and_vgg_on_dvs(variant):
  o = common.ModelOptions(variant=variant, T=3)
  mutable = ["batch_stats"] if variant == "bn" else False
  x = transforms.eval_transform("mnist")(
      jnp.asarray(synthetic.synthetic_like("mnist", 10, 8, 4)[0]))
  model = mlp.SpikingMLP(mlp.mlp_widths(4, 0.1), 10, o)
  variables = jax.jit(model.init)(jax.random.key(0), x)
  out = jax.jit(functools.partial(model.apply, mutable=mutable))(variables, x)
  out = out[0] if mutable else out
  assert out.shape == (8, 10) and np.isfinite(np.asarray(out)).all()
  assert variables["params"]["fc0"][("w_ee" if variant == "ei" else "dense")] is not None
  frames = jnp.asarray(synthetic.synthetic_like("cifar10_dvs", 10, 2, 2, T=3)[0])
  seq = transforms.train_transform("cifar10_dvs")(jax.random.key(1), frames)
  net = vgg.SpikingVGG(vgg.scaled_layers("vgg8", 0.125), 10, o)
  v = jax.jit(net.init)(jax.random.key(0), seq)
  logits = jax.jit(functools.partial(net.apply, mutable=mutable))(v, seq)
  logits = logits[0] if mutable else logits
  assert logits.shape == (2, 10) and np.isfinite(np.asarray(logits)).all()
  # 48x48 after five 2x2 pools is 1x1: the head sees 512 * 0.125 = 64 features.
  head = v["params"]["head"]
  kernel = head["ei"]["w_ee"] if variant == "ei" else head["dense"]["kernel"]
  assert kernel.shape[0] == 64
