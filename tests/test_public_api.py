"""The researcher's API (issue 25): one import, tools that work on any model (stacked by nn.scan or
vmap, user-named), forward-mode autodiff where the math allows, the bfloat16 LIF, one-line
errors in a layer user's terms, the "mostly dead" health level, Flax-style sizes and padding, a
head for any number of classes and a first init without per-shape random-number compiles."""

from __future__ import annotations

import pathlib
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ei_snn_jax as ei
from ei_snn_jax import errors, layers, models
from ei_snn_jax.analysis import health
from ei_snn_jax.core import circuit, ei_init, ei_prop, neurons

REPO = pathlib.Path(__file__).resolve().parents[1]


def uniform(shape, seed=0):
  return jax.random.uniform(jax.random.key(seed), shape)


# 1. One import --------------------------------------------------------------------------------

def test_every_public_name_is_at_the_package_top_and_the_version_is_pyprojects():
  for name in ei.__all__:
    assert hasattr(ei, name), name
  assert ei.layers is layers and ei.EIConv is layers.EIConv and ei.streaming is models.streaming
  from ei_snn_jax.training import optim as training_optim
  assert training_optim.make_optimizer is ei.make_optimizer is ei.optim.make_optimizer
  version = re.search(r'^version = "(.*)"', (REPO / "pyproject.toml").read_text(), re.M)[1]
  assert ei.__version__ == version


# 2. Tools on stacked and user-named models ------------------------------------------------------

def test_check_ei_init_on_vmapped_variables_names_the_bad_copy():
  m = ei.EIDense(4)
  x = uniform((8, 5))
  v = jax.vmap(lambda k: m.init(k, x))(jax.random.split(jax.random.key(1), 3))
  ei.check_ei_init(v)                                        # the repro: no error
  xs = jnp.stack([x, jnp.zeros_like(x), x])                  # copy 1 sees an all-zero input
  bad = jax.vmap(lambda k, xi: m.init(k, xi))(jax.random.split(jax.random.key(1), 3), xs)
  with pytest.raises(ei.EIInitError, match=r"^EIDense\[1\]: E-I Init saw an all-zero input"):
    ei.check_ei_init({"ei_init_stats": {"EIDense": bad["ei_init_stats"]}})


class Cell(nn.Module):
  @nn.compact
  def __call__(self, h, _):
    return layers.LIF(1)(layers.EIDense(6)(h)) + 0.5, None


class Stacked(nn.Module):
  """Three E-I cells stacked by nn.scan (their parameters and probes have a leading axis 3)."""

  @nn.compact
  def __call__(self, x):
    scan = nn.scan(Cell, variable_axes={"params": 0, "probes": 0, "ei_init_stats": 0},
                   split_rngs={"params": True}, length=3)
    return scan(name="cells")(x, None)[0]


def test_probe_and_health_on_a_layer_stacked_by_nn_scan():
  x = uniform((8, 6))
  model = Stacked()
  variables = model.init(jax.random.key(2), x)
  ei.check_ei_init(variables)
  stats = ei.probe(model, {"params": variables["params"]}, x)
  assert stats["firing_rate/cells.LIF_0"].shape == (3,)
  assert stats["integrated_std/cells.EIDense_0"].shape == (3,)
  assert ei.find_dead_layers(model, {"params": variables["params"]}, x) == []
  params = jax.tree.map(lambda a: a, variables["params"])
  params["cells"]["EIDense_0"]["g_i"] = params["cells"]["EIDense_0"]["g_i"].at[1].set(0.0)
  dead = ei.find_dead_layers(model, {"params": params}, x)
  assert [(d.layer, d.level) for d in dead] == [("cells.EIDense_0[1]", health.DEAD)]


class UserNet(nn.Module):
  """A user's model whose E-I output layer is itself named "head" (no "ei" wrapper)."""

  @nn.compact
  def __call__(self, x):
    spikes = layers.LIF(1)(layers.EIDense(8, name="body")(x))
    return layers.EIHead(3, name="head")(jnp.concatenate([spikes, x], axis=-1))


def test_default_decay_mask_and_roles_agree_on_a_user_head_named_head():
  x = uniform((8, 5))
  model = UserNet()
  params = model.init(jax.random.key(0), x)["params"]
  masks = ei.parameter_masks(model, x)
  assert ei.optim.weight_decay_mask(params) == masks.weight_decay
  assert not any(masks.weight_decay["head"][k] for k in ("g_i", "g_e", "bias"))
  assert masks.weight_decay["body"]["bias"] and masks.weight_decay["head"]["w_ee"]
  # make_optimizer takes the roles' masks as they are: the unused head gains are not decayed.
  tx, _ = ei.make_optimizer(0.1, 0.1, 1, 100, 0.5, momentum=0.0, decay_mask=masks)
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  assert float(jnp.abs(updates["head"]["g_e"]).max()) == 0.0
  assert float(jnp.abs(updates["head"]["w_ee"]).max()) > 0.0


# 3. Forward mode ---------------------------------------------------------------------------------

def test_forward_mode_of_the_spike_function_is_its_surrogate():
  u = jnp.array([-0.7, 0.0, 0.3])
  spike = neurons.make_spike_fn("sigmoid", 4.0)
  out, tangent = jax.jvp(spike, (u,), (jnp.ones_like(u),))
  np.testing.assert_array_equal(out, [0.0, 1.0, 1.0])
  np.testing.assert_allclose(tangent, neurons.sigmoid_surrogate(u, 4.0), rtol=1e-6)
  np.testing.assert_allclose(jax.grad(lambda v: spike(v).sum())(u), tangent, rtol=1e-6)


@pytest.mark.parametrize("unroll", [True, 2], ids=["written-out", "scan"])
def test_lif_layer_jacfwd_equals_jacrev(unroll):
  lif = layers.LIF(3, layers.NeuronOptions(unroll=unroll))
  x = uniform((6, 4)) * 2.0
  f = lambda v: lif.apply({}, v).sum(axis=0)
  np.testing.assert_allclose(jax.jacfwd(f)(x), jax.jacrev(f)(x), rtol=1e-5, atol=1e-7)


def test_e_i_layer_forward_mode_with_the_plain_circuit_equals_reverse_mode():
  x = uniform((8, 5))
  fused = layers.EIDense(4)
  plain = layers.EIDense(4, options=layers.EIOptions(fused=False))
  variables = fused.init(jax.random.key(1), x)
  f = lambda v: plain.apply(variables, v).sum(axis=0)
  np.testing.assert_allclose(jax.jacfwd(f)(x), jax.jacrev(f)(x), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(plain.apply(variables, x), fused.apply(variables, x), rtol=1e-4,
                             atol=1e-6)
  # W_EI's E-I Prop scaling (1/d, spec §3.3) is the same rule in both modes.
  g_rev = jax.grad(lambda p: fused.apply({"params": p}, x).sum())(variables["params"])["w_ei"]
  g_plain = jax.grad(lambda p: plain.apply({"params": p}, x).sum())(variables["params"])["w_ei"]
  np.testing.assert_allclose(g_plain, g_rev, rtol=1e-5, atol=1e-7)
  _, t = jax.jvp(lambda w: ei_prop.scale_gradient(w, 0.25), (jnp.ones(3),), (jnp.ones(3),))
  np.testing.assert_array_equal(t, 0.25 * jnp.ones(3))
  # The E-I current alone (spec §1.2), adaptive stabilisation with its STE included.
  p = variables["params"]
  current = lambda v: circuit.ei_currents(v, p["w_ee"], p["w_ie"], p["w_ei"], p["g_i"], p["g_e"],
                                          p["bias"])["integrated"].sum(axis=0)
  np.testing.assert_allclose(jax.jacfwd(current)(x), jax.jacrev(current)(x), rtol=1e-5,
                             atol=1e-6)


# 4. The bfloat16 LIF -------------------------------------------------------------------------------

@pytest.mark.parametrize("learnable", ["learnable_tau", "learnable_threshold"])
def test_bfloat16_lif_with_learnable_parameters_on_float32_currents(learnable):
  lif = layers.LIF(2, layers.NeuronOptions(**{learnable: True}), dtype=jnp.bfloat16)
  x = uniform((8, 5)) * 2.0
  variables = lif.init(jax.random.key(0), x)
  spikes = lif.apply(variables, x)
  assert spikes.dtype == jnp.bfloat16
  assert jax.tree.leaves(variables["params"])[0].dtype == jnp.float32
  reference = layers.LIF(2, layers.NeuronOptions(**{learnable: True})).apply(variables, x)
  assert float(jnp.mean(spikes.astype(jnp.float32) == reference)) > 0.9


# 5. Errors in a layer user's terms ------------------------------------------------------------------

ERROR_CASES = {
    "negative mean": (lambda: ei.EIDense(4).init(jax.random.key(0), uniform((8, 5)) - 1.0),
                      ei.EIInitError,
                      r"^EIDense: E-I Init needs a non-negative input .*EIOptions\(ei_init=False\)"
                      r".*model\.ei_init=False"),
    "all zero": (lambda: ei.EIDense(4).init(jax.random.key(0), jnp.zeros((8, 5))),
                 ei.EIInitError, r"^EIDense: E-I Init saw an all-zero input.*EIOptions\(ei_init"),
    "no inhibitory unit": (lambda: ei.EIDense(3).init(jax.random.key(0), uniform((8, 5))),
                           ei.LayerError, r"^EIDense: features=3 // ei_ratio=4 leaves no"),
    "conv on 2-D": (lambda: ei.EIConv(4).init(jax.random.key(0), uniform((8, 5))),
                    ei.LayerError, r"^EIConv: a convolution takes NHWC .* use EIDense"),
    "conv unbatched": (lambda: ei.EIConv(4).init(jax.random.key(0), uniform((8, 8, 3))),
                       ei.LayerError, r"^EIConv: .*\(8, 8, 3\), an unbatched image"),
    "LIF(0)": (lambda: ei.LIF(0).init(jax.random.key(0), uniform((8, 5))),
               ei.LayerError, r"^LIF: T=0 must be an integer >= 1"),
    "LIF merged axis": (lambda: ei.LIF(3).init(jax.random.key(0), uniform((8, 5))),
                        ei.LayerError, r"^LIF: the first axis .* multiple of T=3"),
    "ei_ratio=0": (lambda: ei.EIOptions(ei_ratio=0), ei.LayerError, r"^EIOptions: ei_ratio=0"),
    "stabilization": (lambda: ei.EIOptions(stabilization="adaptve"), ei.LayerError,
                      r"^EIOptions: unknown stabilization"),
    "tau=0.5": (lambda: ei.NeuronOptions(tau=0.5), ei.LayerError,
                r"^NeuronOptions: tau=0.5 must be >= 1 \(the leak factor 1 - 1/tau would be -1"),
    "kernel_size": (lambda: ei.EIConv(4, kernel_size=(3, 0)).init(jax.random.key(0),
                                                                  uniform((2, 8, 8, 3))),
                    ei.LayerError, r"^EIConv: kernel_size=\(3, 0\) must be an int >= 1"),
    "padding": (lambda: ei.EIConv(4, padding="FULL").init(jax.random.key(0),
                                                          uniform((2, 8, 8, 3))),
                ei.LayerError, r"^EIConv: padding='FULL' must be"),
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_layer_errors_are_one_line_in_the_layer_users_terms(case):
  make, error, pattern = ERROR_CASES[case]
  with pytest.raises(error, match=pattern) as info:
    make()
  assert isinstance(info.value, errors.UserError)
  assert "\n" not in str(info.value)


def test_a_layer_inside_a_model_is_named_by_its_path():
  model = UserNet()
  with pytest.raises(ei.EIInitError, match=r"^body: E-I Init saw an all-zero input"):
    model.init(jax.random.key(0), jnp.zeros((8, 5)))


# 6. The "mostly dead" health level --------------------------------------------------------------

def test_mostly_dead_layer_is_reported_with_a_threshold_the_user_sets():
  x = uniform((16, 5))
  model = UserNet()
  variables = model.init(jax.random.key(0), x)
  params = jax.tree.map(lambda a: a, variables["params"])
  params["body"]["g_i"] = params["body"]["g_i"].at[0].set(0.0)     # 1 of 2 g_I at 0 (50 %)
  found = ei.find_dead_layers(model, {"params": params}, x)
  assert [(d.layer, d.level) for d in found] == [("body", health.MOSTLY_DEAD)]
  assert found[0].zero_g_i_fraction == 0.5 and "50% of its inhibitory gains g_I are 0" in \
      found[0].cause
  assert "is mostly dead at step 7" in health.describe(found[0], 7)
  assert ei.find_dead_layers(model, {"params": params}, x, mostly_dead=0.6) == []
  assert ei.find_dead_layers(model, {"params": params}, x, mostly_dead=None) == []
  stats = ei.probe(model, {"params": params}, x)
  assert health.dead_layers(stats) == []                  # what stops training: dead ones only


# 7. Flax habits and small heads -------------------------------------------------------------------

@pytest.mark.parametrize("kernel_size,strides,padding", [
    ((3, 3), (2, 2), None), ((3, 5), 1, "SAME"), (3, (2, 1), "VALID"), (5, 1, 1),
    ((1, 3), 2, ((0, 1), (2, 0))), (3, 2, (1, 0))])
def test_conv_sizes_and_padding_as_flax_spells_them(kernel_size, strides, padding):
  x = uniform((2, 9, 8, 3))
  layer = ei.EIConv(8, kernel_size=kernel_size, strides=strides, padding=padding)
  variables = layer.init(jax.random.key(0), x)
  kh, kw = (kernel_size,) * 2 if isinstance(kernel_size, int) else kernel_size
  if padding is None:
    flax_padding = ((kh // 2, kh // 2), (kw // 2, kw // 2))
  elif isinstance(padding, int):
    flax_padding = ((padding, padding), (padding, padding))
  elif isinstance(padding, tuple) and isinstance(padding[0], int):
    flax_padding = ((padding[0], padding[0]), (padding[1], padding[1]))
  else:
    flax_padding = padding
  conv = nn.Conv(8, (kh, kw), strides=strides, padding=flax_padding, use_bias=False)
  kernel = variables["params"]["w_ee"]
  expected = conv.apply({"params": {"kernel": kernel}}, x)
  fused = layer.apply(variables, x)
  assert fused.shape == expected.shape
  plain = ei.EIConv(8, kernel_size=kernel_size, strides=strides, padding=padding,
                    options=ei.EIOptions(fused=False))
  currents = plain.apply(variables, x, mutable=["probes"])[1]["probes"]
  np.testing.assert_allclose(currents["excitatory_mean"], jnp.mean(expected), rtol=1e-5)
  np.testing.assert_allclose(plain.apply(variables, x), fused, rtol=1e-4, atol=1e-5)


def test_a_head_for_any_number_of_classes_and_the_papers_heads_unchanged():
  x = uniform((8, 12))
  for classes, n_i in ((2, 1), (3, 1), (5, 1), (10, 2), (100, 25)):
    params = jax.eval_shape(ei.EIHead(classes).init, jax.random.key(0), x)["params"]
    assert params["w_ie"].shape == (12, n_i) and params["w_ei"].shape == (classes, n_i)
  from ei_snn_jax.training import config
  cfg = config.base_config()
  cfg.model.arch, cfg.model.width_multiplier, cfg.model.T = "vgg8", 1 / 16, 2
  model = models.create_model(cfg.model, 2)
  images = uniform((4, 32, 32, 3))
  variables = jax.jit(model.init)(jax.random.key(0), images)
  assert jax.jit(model.apply)(variables, images).shape == (4, 2)


def test_exponential_init_draws_the_same_values_as_jax_random_in_and_out_of_jit():
  key = jax.random.key(3)
  for shape in [(3, 3, 3, 16), (5, 4), (1,), (300, 7)]:
    expected = jax.random.exponential(key, shape) * 0.3
    np.testing.assert_array_equal(ei_init.exponential(key, shape, 0.3), expected)
    np.testing.assert_array_equal(jax.jit(lambda k: ei_init.exponential(k, shape, 0.3))(key),
                                  expected)


def test_probe_and_health_on_vmapped_variables():
  m = ei.EIDense(4)
  x = uniform((8, 5))
  v = jax.vmap(lambda k: m.init(k, x))(jax.random.split(jax.random.key(1), 3))
  stats = ei.probe(m, {"params": v["params"]}, x, vmapped=True, values=True)
  key = "integrated_std/"                    # a bare layer's path is ""
  assert stats[key].shape == (3,)
  one = ei.probe(m, {"params": jax.tree.map(lambda a: a[1], v["params"])}, x)
  np.testing.assert_allclose(stats[key][1], one[key], rtol=1e-5)
  assert stats[key.replace("integrated_std", "integrated_values")].shape[0] == 3
  params = jax.tree.map(lambda a: a, v["params"])
  params["g_i"] = params["g_i"].at[2].set(0.0)
  dead = ei.find_dead_layers(m, {"params": params}, x, vmapped=True)
  assert [(d.layer, d.level) for d in dead] == [("[2]", health.DEAD)]


def test_package_top_imports_lazily():
  """The public names load on first use: config handling (every command-line tool's error
  path) and ``import ei_snn_jax`` itself import no JAX."""
  import subprocess
  import sys
  code = ("import sys, ei_snn_jax, ei_snn_jax.training.config; assert 'jax' not in sys.modules; "
          "import ei_snn_jax as ei; assert ei.EIConv.__module__ == 'ei_snn_jax.layers'; "
          "assert ei.streaming.__name__ == 'ei_snn_jax.models.streaming'; "
          "assert set(ei.__all__) <= set(dir(ei)); print('ok')")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
