"""E-I Init (spec §2): statistics, Eq. 53/54, the post-init current distribution, guards."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ei_snn_jax.core import ei_init
from ei_snn_jax import layers, models


def test_input_statistics_match_numpy():
  x = np.random.default_rng(0).exponential(1.0, (40, 4, 4, 3)).astype(np.float32)
  s = ei_init.input_statistics(jnp.asarray(x))
  np.testing.assert_allclose(s.mean, x.mean(), rtol=1e-5)
  np.testing.assert_allclose(s.mean_sq, (x ** 2).mean(), rtol=1e-5)
  np.testing.assert_allclose(s.var, x.reshape(40, -1).var(axis=0, ddof=1).mean(), rtol=1e-5)


def test_time_repeats_equals_tiled_input():
  x = np.random.default_rng(1).random((8, 4, 4, 3)).astype(np.float32)
  tiled = np.concatenate([x] * 4)
  a = ei_init.input_statistics(jnp.asarray(x), time_repeats=4)
  b = ei_init.input_statistics(jnp.asarray(tiled))
  for u, v in zip(a, b):
    np.testing.assert_allclose(u, v, rtol=1e-5)


def test_formulas_eq53_eq54_and_bernoulli_special_case():
  p, d = 0.2, 576
  s = ei_init.InputStatistics(jnp.float32(p), jnp.float32(p * (1 - p)), jnp.float32(p))
  np.testing.assert_allclose(ei_init.exponential_scale(s, d), np.sqrt((1 - p) / (d * (2 - p))),
                             rtol=1e-6)
  np.testing.assert_allclose(ei_init.inhibitory_gain(s, d), np.sqrt((2 - p) / (d * p)), rtol=1e-6)


def _bernoulli(rng, shape, p):
  return (rng.random(shape) < p).astype(np.float32)


@pytest.mark.parametrize("p", [0.05, 0.1, 0.3])
@pytest.mark.parametrize("inputs", ["bernoulli", "exponential"])
def test_after_init_currents_are_normalised(p, inputs):
  rng = np.random.default_rng(int(p * 100))
  d = 1152
  if inputs == "bernoulli":
    x = _bernoulli(rng, (512, d), p)
  else:
    x = (rng.exponential(1.0, (512, d)) * _bernoulli(rng, (512, d), 0.5)).astype(np.float32)
  layer = layers.EIDense(256)
  v = layer.init(jax.random.key(0), jnp.asarray(x))
  out, st = layer.apply({"params": v["params"]}, jnp.asarray(x), mutable=["probes"])
  i_ee = jnp.asarray(x) @ v["params"]["w_ee"]
  # Eq. 53: std(I_EE) ~= std(x) (per feature, over samples, as the variance is defined).
  np.testing.assert_allclose(float(jnp.mean(jnp.std(i_ee, axis=0))),
                             float(np.mean(np.std(x, axis=0))), rtol=0.1)
  assert abs(float(out.mean())) <= 0.1
  assert 0.65 <= float(out.std()) <= 0.85
  # W_EI = 1/n_I, g_E = 1, b_E = 0, g_I from Eq. 54.
  np.testing.assert_allclose(v["params"]["w_ei"], 1 / 64)
  np.testing.assert_array_equal(v["params"]["g_e"], 1.0)
  np.testing.assert_array_equal(v["params"]["bias"], 0.0)
  stats = ei_init.input_statistics(jnp.asarray(x))
  np.testing.assert_allclose(v["params"]["g_i"], ei_init.inhibitory_gain(stats, d), rtol=1e-6)
  # Weights are Exp(s): mean == std == s.
  s = float(ei_init.exponential_scale(stats, d))
  w = np.asarray(v["params"]["w_ee"])
  assert w.min() >= 0
  np.testing.assert_allclose([w.mean(), w.std()], [s, s], rtol=0.03)


def test_zero_input_is_a_clear_error_eager_and_jitted():
  x = jnp.zeros((8, 16))
  with pytest.raises(ei_init.EIInitError, match="all-zero input"):
    layers.EIDense(8).init(jax.random.key(0), x)
  v = jax.jit(layers.EIDense(8).init)(jax.random.key(0), x)
  with pytest.raises(ei_init.EIInitError, match="E_x = 0"):
    models.check_ei_init(v)


def test_plain_init_is_data_independent():
  opts = layers.EIOptions(ei_init=False)
  a = layers.EIDense(8, options=opts).init(jax.random.key(0), jnp.ones((4, 16)))
  b = layers.EIDense(8, options=opts).init(jax.random.key(0), 3 * jnp.ones((4, 16)))
  jax.tree.map(np.testing.assert_array_equal, a["params"], b["params"])
  np.testing.assert_allclose(a["params"]["g_i"], ei_init.plain_inhibitory_gain(16))
