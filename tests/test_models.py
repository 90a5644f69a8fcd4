"""The paper's models (spec §6, §11.3): parameter counts, gradients, speed-path equivalence."""


import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ei_snn_jax import models
from ei_snn_jax.training import optim

REFERENCE_COUNTS = [  # spec §11.3 (torchinfo trainable parameters of the reference)
    ("vgg16", "ei", 10, 18_856_378),
    ("vgg19", "ei", 10, 25_642_234),
    ("resnet18", "ei", 10, 14_401_226),
    ("vgg16", "bn", 10, 14_724_042),
    ("resnet18", "bn", 10, 11_173_962),
    ("vgg16", "ei", 100, 18_916_917),
]


def model_cfg(**kw):
  c = ml_collections.ConfigDict(dict(
      arch="vgg8", variant="ei", T=2, width_multiplier=1.0, dropout=0.0, ei_ratio=4,
      ei_init=True, ei_stabilization="adaptive", ei_ste=True, ei_scale_wei_grad=True, tau=2.0,
      threshold=1.0, surrogate="sigmoid", surrogate_alpha=4.0, conv_dtype="float32",
      scan_unroll=0, static_input_once=True))
  c.update(kw)
  return c


def images(b=4, seed=0):
  return jnp.asarray(np.random.default_rng(seed).random((b, 32, 32, 3)), jnp.float32)


@pytest.mark.parametrize("arch,variant,classes,want", REFERENCE_COUNTS)
def test_parameter_counts_equal_reference(arch, variant, classes, want):
  m = models.create_model(model_cfg(arch=arch, variant=variant, T=4), classes)
  shapes = jax.eval_shape(lambda: m.init(jax.random.key(0), images(2)))
  assert sum(int(np.prod(l.shape)) for l in jax.tree.leaves(shapes["params"])) == want


SMALL = [("vgg8", "ei", 0.125), ("vgg8", "bn", 0.125), ("vgg8", "dann", 0.125),
         ("resnet18", "ei", 0.0625), ("resnet18", "bn", 0.0625),
         # Spiking DANN's fixed eps = 1e-8 makes 1/gamma^2 ~ 1e16 wherever a receptive field has
         # no spike; at 1/16 width (n_I = 1) those factors compound through the ResNet to inf/NaN
         # gradients at init (the failure adaptive stabilisation fixes). 1/4 width stays finite.
         ("resnet18", "dann", 0.25)]


@pytest.mark.parametrize("arch,variant,width", SMALL)
def test_every_parameter_gets_a_gradient_except_unused_head(arch, variant, width):
  m = models.create_model(model_cfg(arch=arch, variant=variant, width_multiplier=width), 10)
  x = images(8)
  y = jnp.arange(8) % 10
  v = jax.jit(m.init)(jax.random.key(1), x)

  @jax.jit
  def grads(params):
    def loss(p):
      variables = {**v, "params": p}
      logits, _ = m.apply(variables, x, train=True, mutable=["batch_stats"])
      return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(8), y])
    return jax.grad(loss)(params)

  g = grads(v["params"])
  unused = optim.unused_parameter_mask(v["params"])
  for (path, leaf), dead in zip(jax.tree_util.tree_flatten_with_path(g)[0], jax.tree.leaves(unused)):
    name = jax.tree_util.keystr(path)
    assert np.all(np.isfinite(leaf)), name
    if dead:
      assert variant in ("ei", "dann") and "head" in name
      np.testing.assert_array_equal(leaf, 0.0, err_msg=name)
    else:
      assert float(jnp.max(jnp.abs(leaf))) > 0, f"no gradient reaches {name}"
  assert sum(jax.tree.leaves(unused)) == (0 if variant == "bn" else 3)


@pytest.mark.parametrize("arch,variant,width", [("vgg8", "ei", 0.125), ("vgg8", "bn", 0.125),
                                                ("resnet18", "dann", 0.0625)])
def test_static_input_once_equals_plain_path(arch, variant, width):
  fast = models.create_model(model_cfg(arch=arch, variant=variant, width_multiplier=width), 10)
  plain = models.create_model(model_cfg(arch=arch, variant=variant, width_multiplier=width,
                                        static_input_once=False), 10)
  x = images(4)
  v_fast = jax.jit(fast.init)(jax.random.key(2), x)
  v_plain = jax.jit(plain.init)(jax.random.key(2), x)
  # E-I Init counts the T copies: identical parameters either way.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5), v_fast["params"],
               v_plain["params"])
  out_fast = jax.jit(lambda v: fast.apply(v, x, mutable=["batch_stats"], train=True)[0])(v_fast)
  out_plain = jax.jit(lambda v: plain.apply(v, x, mutable=["batch_stats"], train=True)[0])(v_fast)
  np.testing.assert_allclose(out_fast, out_plain, rtol=1e-5, atol=1e-5)


def test_sequence_input_and_logits_are_mean_over_time():
  m = models.create_model(model_cfg(width_multiplier=0.125, T=3), 10)
  x = images(2)
  v = jax.jit(m.init)(jax.random.key(0), x)
  seq = jnp.broadcast_to(x, (3,) + x.shape)
  apply = jax.jit(m.apply)
  np.testing.assert_allclose(apply(v, seq), apply(v, x), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="time steps"):
    apply(v, jnp.broadcast_to(x, (2,) + x.shape))


def test_vgg16_forward_backward_batch2_on_cpu():
  m = models.create_model(model_cfg(arch="vgg16", T=4), 10)
  x = images(2)
  v = jax.jit(m.init)(jax.random.key(0), x)

  @jax.jit
  def step(p):
    return jax.value_and_grad(lambda q: jnp.sum(m.apply({"params": q}, x) ** 2))(p)

  loss, g = step(v["params"])
  assert np.isfinite(float(loss))
  assert all(np.all(np.isfinite(l)) for l in jax.tree.leaves(g))


def test_bfloat16_convolutions_close_to_float32():
  f32 = models.create_model(model_cfg(width_multiplier=0.25), 10)
  bf16 = models.create_model(model_cfg(width_multiplier=0.25, conv_dtype="bfloat16"), 10)
  x = images(4)
  v = jax.jit(f32.init)(jax.random.key(0), x)
  a = jax.jit(f32.apply)(v, x)
  b = jax.jit(bf16.apply)(v, x)
  assert b.dtype == jnp.float32
  # Spikes can flip near threshold, so compare the logit scale, not exact values.
  np.testing.assert_allclose(jnp.std(a), jnp.std(b), rtol=0.3)


def test_unknown_arch_and_variant_are_clear_errors():
  with pytest.raises(ValueError, match="unknown arch"):
    models.create_model(model_cfg(arch="vgg13"), 10)
  with pytest.raises(ValueError, match="unknown variant"):
    m = models.create_model(model_cfg(variant="xx", width_multiplier=0.125), 10)
    m.init(jax.random.key(0), images(2))
