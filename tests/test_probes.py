"""probes.probe against currents and spikes computed by hand in NumPy (spec §1.2, §3.1, §5).

Small E-I layers with given parameters (dense and 3x3 conv), including an all-zero input row (its
shunting current is all zero: I_int = b_E) and an E channel without inhibition (its zeros are
replaced by the row's smallest positive shunting current, E-I Prop §3.1).
"""

from __future__ import annotations

import flax.linen as nn
from flax import nnx
import jax.numpy as jnp
import numpy as np
import pytest

from ei_snn_jax import layers
from ei_snn_jax.analysis import probes

T = 2
TAU, THRESHOLD = 2.0, 1.0
OPTS = layers.EIOptions(ei_init=False)


class TinyDense(nn.Module):
  """EIDense -> LIF, the unit the probes see in every model."""
  features: int = 8

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = layers.EIDense(self.features, options=OPTS, name="fc")(x)
    return layers.LIF(T, name="lif")(h)


class TinyConv(nn.Module):
  """EIConv (3x3, padding 1) -> LIF."""
  features: int = 4

  @nn.compact
  def __call__(self, x, train: bool = False):
    h = layers.EIConv(self.features, options=OPTS, kernel_size=3, name="conv0")(x)
    return layers.LIF(T, name="lif0")(h)


def _stabilize(shunt: np.ndarray) -> np.ndarray:
  """Spec §3.1: zeros -> the smallest positive value of the same merged sample (row); +inf if
  the whole row is zero."""
  out = shunt.copy()
  for n in range(shunt.shape[0]):
    row = shunt[n]
    pos = row[row > 0]
    out[n][row == 0] = pos.min() if pos.size else np.inf
  return out


def _currents(i_ee, i_ie, w_ei, g_i, g_e, b):
  """The currents of spec §1.2 from the feed-forward currents (channels last), float64."""
  i_ei = i_ie @ w_ei.T
  bal = i_ee - i_ei
  shunt = (i_ie * g_i) @ w_ei.T
  integrated = g_e * bal / _stabilize(shunt) + b
  return dict(excitatory=i_ee, lateral_inhibition=i_ei, balanced=bal, shunting=shunt,
              integrated=integrated)


def _lif_rate(current: np.ndarray) -> float:
  """Firing rate of the LIF (spec §5: H = (1 - 1/tau) V + x, S = H >= theta, V = H - theta S)."""
  x = np.swapaxes(current.reshape((-1, T) + current.shape[1:]), 0, 1)   # row b*T + t -> [t, b]
  v = np.zeros_like(x[0])
  spikes = []
  for t in range(T):
    h = (1 - 1 / TAU) * v + x[t]
    assert np.min(np.abs(h - THRESHOLD)) > 1e-4, "a membrane sits on the threshold: pick new data"
    s = (h >= THRESHOLD).astype(np.float64)
    v = h - THRESHOLD * s
    spikes.append(s)
  return float(np.mean(spikes))


def _params(rng, kernel_shape_e, kernel_shape_i, n_e, n_i):
  w_ee = rng.exponential(0.4, kernel_shape_e)
  w_ie = rng.exponential(0.4, kernel_shape_i)
  w_ei = rng.uniform(0.2, 1.0, (n_e, n_i))
  w_ei[1, :] = 0.0          # E unit 1 gets no inhibition: its I_shunt is 0 -> stabilized
  g_i = rng.uniform(0.5, 2.0, n_i)
  g_e = rng.uniform(0.5, 1.5, n_e)
  b = rng.normal(0.0, 0.3, n_e)
  return dict(w_ee=w_ee, w_ie=w_ie, w_ei=w_ei, g_i=g_i, g_e=g_e, bias=b)


def _check(stats, expected, layer, lif_layer, rate, values_key):
  for cur, value in expected.items():
    np.testing.assert_allclose(stats[f"{cur}_mean/{layer}"], value.mean(), rtol=1e-5, atol=1e-6,
                               err_msg=cur)
    np.testing.assert_allclose(stats[f"{cur}_std/{layer}"], value.std(), rtol=1e-5, atol=1e-6,
                               err_msg=cur)
  assert stats[f"firing_rate/{lif_layer}"] == pytest.approx(rate, abs=1e-7)
  np.testing.assert_allclose(stats[values_key], expected["integrated"].reshape(-1), rtol=1e-5,
                             atol=1e-6)


def test_probe_dense_layer_equals_numpy():
  rng = np.random.default_rng(0)
  d, n_e, n_i, batch = 6, 8, 2, 5
  p = _params(rng, (d, n_e), (d, n_i), n_e, n_i)
  x = rng.uniform(0.0, 1.0, (T * batch, d))
  x[3] = 0.0                # an all-zero sample: I_shunt row all zero -> I_int = b_E
  variables = {"params": {"fc": {k: jnp.asarray(v, jnp.float32) for k, v in p.items()}}}

  stats = probes.probe(TinyDense(n_e), variables, jnp.asarray(x, jnp.float32), values=True)

  expected = _currents(x @ p["w_ee"], x @ p["w_ie"], p["w_ei"], p["g_i"], p["g_e"], p["bias"])
  assert np.all(expected["shunting"][:, 1] == 0) and np.all(expected["shunting"][3] == 0)
  np.testing.assert_allclose(expected["integrated"][3], p["bias"])
  _check(stats, expected, "fc", "lif", _lif_rate(expected["integrated"]),
         "integrated_values/fc")
  assert set(probes.by_layer(stats)) == {"fc", "lif"}
  assert probes.current_summary(stats, "fc")["balanced"] == (
      pytest.approx(expected["balanced"].mean(), rel=1e-5),
      pytest.approx(expected["balanced"].std(), rel=1e-5))


def _conv_same(x, w):
  """NHWC x HWIO correlation, stride 1, zero padding k//2 (as the reference's pad=k//2)."""
  k = w.shape[0]
  pad = k // 2
  xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  n, h, wd, _ = x.shape
  out = np.zeros((n, h, wd, w.shape[-1]))
  for i in range(k):
    for j in range(k):
      out += np.einsum("nhwc,co->nhwo", xp[:, i:i + h, j:j + wd], w[i, j])
  return out


def test_probe_conv_layer_equals_numpy():
  rng = np.random.default_rng(1)
  c_in, n_e, n_i, batch, hw = 3, 4, 1, 2, 5
  p = _params(rng, (3, 3, c_in, n_e), (3, 3, c_in, n_i), n_e, n_i)
  x = rng.uniform(0.0, 1.0, (T * batch, hw, hw, c_in)) * (rng.uniform(size=(T * batch, hw, hw, 1))
                                                          > 0.3)
  variables = {"params": {"conv0": {k: jnp.asarray(v, jnp.float32) for k, v in p.items()}}}

  stats = probes.probe(TinyConv(n_e), variables, jnp.asarray(x, jnp.float32), values=True)

  flat = lambda a: a.reshape(a.shape[0], -1, a.shape[-1])
  i_ee = flat(_conv_same(x, p["w_ee"]))
  i_ie = flat(_conv_same(x, p["w_ie"]))
  expected = _currents(i_ee, i_ie, p["w_ei"], p["g_i"], p["g_e"], p["bias"])
  # Stabilization acts per merged sample over positions and channels: redo it on (N, H*W*C).
  shunt = expected["shunting"]
  stab = _stabilize(shunt.reshape(shunt.shape[0], -1)).reshape(shunt.shape)
  expected["integrated"] = p["g_e"] * expected["balanced"] / stab + p["bias"]
  _check(stats, expected, "conv0", "lif0", _lif_rate(expected["integrated"]),
         "integrated_values/conv0")


def test_probe_leaves_params_and_output_unchanged():
  rng = np.random.default_rng(2)
  p = _params(rng, (6, 8), (6, 2), 8, 2)
  variables = {"params": {"fc": {k: jnp.asarray(v, jnp.float32) for k, v in p.items()}}}
  x = jnp.asarray(rng.uniform(size=(2 * T, 6)), jnp.float32)
  model = TinyDense(8)
  stats = probes.probe(model, variables, x, with_logits=True)
  np.testing.assert_array_equal(stats["logits"], np.asarray(model.apply(variables, x)))
  assert not any(k.startswith(probes.VALUES_STAT) for k in stats)   # values=False
  assert all(isinstance(v, float) for k, v in stats.items() if k != "logits")


def test_probe_summary_flattens_sown_statistics_by_layer():
  tree = {"conv0": {"ei": {"integrated_mean": (1.5,)}}, "lif0": {"firing_rate": (0.25,)},
          "stage1_block0": {"conv1": {"dann": {"balanced_std": (2.0,)}}}}
  assert probes.probe_summary(tree) == {"integrated_mean/conv0": 1.5, "firing_rate/lif0": 0.25,
                                        "balanced_std/stage1_block0.conv1": 2.0}


def test_layer_order_follows_the_network():
  keys = [f"firing_rate/{l}" for l in ("lif10", "lif2", "lif0", "lif1")] + ["loss"]
  assert probes.layer_names(keys, "firing_rate") == ["lif0", "lif1", "lif2", "lif10"]
  names = ["head", "stage2_block0.conv1", "stage1_block1.conv2", "stem", "stage1_block0.conv1",
           "stage1_block0.downsample"]
  assert sorted(names, key=probes.layer_sort_key) == [
      "stem", "stage1_block0.conv1", "stage1_block0.downsample", "stage1_block1.conv2",
      "stage2_block0.conv1", "head"]


# ------------------------------------------------------------------------------------------------
# Models bridged into Flax NNX (nnx.bridge.ToNNX): a plain call never updates their probes.


class _NNXEINet(nnx.Module):
  """The README's NNX model: library layers through ``nnx.bridge.ToNNX``."""

  def __init__(self, rngs):
    self.conv = nnx.bridge.ToNNX(layers.EIConv(8, name="conv"), rngs=rngs)
    self.lif = nnx.bridge.ToNNX(layers.LIF(T), rngs=rngs)
    self.head = nnx.bridge.ToNNX(layers.EIHead(4), rngs=rngs)

  def __call__(self, images):
    spikes = self.lif(self.conv(layers.tile_time(images, T)))
    return layers.mean_over_time(self.head(spikes.mean(axis=(1, 2))), T)


def test_probe_nnx_bridged_layers():
  first = jnp.asarray(np.random.default_rng(5).uniform(size=(4, 6, 6, 3)), jnp.float32)
  model = _NNXEINet(nnx.Rngs(0))
  nnx.bridge.lazy_init(model, first)                  # E-I Init; the probes hold init values
  stale = float(model.conv.integrated_mean.get_value())
  x = jnp.asarray(np.random.default_rng(6).uniform(0.0, 0.5, size=(4, 6, 6, 3)), jnp.float32)
  model(x)                                            # a plain call leaves them as they were
  assert float(model.conv.integrated_mean.get_value()) == stale
  stats = probes.probe(model, x, values=True, with_logits=True)
  assert float(model.conv.integrated_mean.get_value()) == stale   # the model is not changed
  # The same layers in Linen on the same parameters give the same statistics.
  conv_params = nnx.to_pure_dict(nnx.state(model.conv, nnx.Param))
  merged = layers.tile_time(x, T)
  current, sown = layers.EIConv(8).apply({"params": conv_params}, merged, mutable=["probes"])
  spikes, lif_sown = layers.LIF(T).apply({}, current, mutable=["probes"])
  for cur in probes.CURRENTS:
    for stat in ("mean", "std"):
      key = f"{cur}_{stat}"
      assert stats[f"{key}/conv"] == pytest.approx(float(sown["probes"][key]), rel=1e-5, abs=1e-6), key
  assert stats["integrated_mean/conv"] != pytest.approx(stale)
  assert stats["firing_rate/lif"] == pytest.approx(float(np.mean(spikes)))
  assert stats["firing_rate_per_step_values/lif"].shape == (T,)
  np.testing.assert_allclose(stats["integrated_values/conv"], np.asarray(current).reshape(-1),
                             rtol=1e-6)
  np.testing.assert_allclose(stats["logits"], model(x), rtol=1e-6)
  with pytest.raises(ValueError, match="probe\\(nnx_model, x\\)"):
    probes.probe(model, {"params": conv_params}, x)


def test_probe_nnx_bridged_library_model_equals_linen():
  from ei_snn_jax import models

  linen = models.SpikingVGG((8, "P", 16, "P"), 10, models.ModelOptions(T=T))
  x = jnp.asarray(np.random.default_rng(7).uniform(size=(2, 8, 8, 3)), jnp.float32)
  bridged = nnx.bridge.ToNNX(linen, rngs=nnx.Rngs(1))
  nnx.bridge.lazy_init(bridged, x)
  params = nnx.to_pure_dict(nnx.state(bridged, nnx.Param))
  nnx_stats = probes.probe(bridged, x * 0.7)
  linen_stats = probes.probe(linen, {"params": params}, x * 0.7)
  assert set(nnx_stats) == set(linen_stats) and "firing_rate/lif1" in nnx_stats
  for key, value in linen_stats.items():
    assert nnx_stats[key] == pytest.approx(value, rel=1e-6, abs=1e-7), key
