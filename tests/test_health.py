"""Dead-layer detection (issue 10, item 9 of its findings): every logging step records, per E-I
layer, the fraction of g_I at 0 and of samples with a +inf denominator (with the firing rates);
a dead layer stops training with one line (last good checkpoint intact); the same check runs on
any model."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ei_snn_jax import layers
from ei_snn_jax.analysis import health
from ei_snn_jax.training import metrics, train
from test_reliability import capture_steps, complete_steps, restore, tiny_config


class OwnEINet(nn.Module):
  """The user's model of the issue: EIConv -> LIF -> pool -> EIDense -> LIF -> EIHead."""
  T: int = 2

  @nn.compact
  def __call__(self, images):
    x = layers.tile_time(images, self.T)
    opts = layers.NeuronOptions(surrogate="atan", alpha=2.0)
    x = layers.LIF(self.T, opts)(layers.EIConv(16)(x))
    x = nn.avg_pool(x, (2, 2), (2, 2)).reshape((x.shape[0], -1))
    x = layers.LIF(self.T, opts)(layers.EIDense(32)(x))
    return layers.mean_over_time(layers.EIHead(4)(x), self.T)


def test_find_dead_layers_on_an_own_model():
  images = jax.random.uniform(jax.random.key(0), (8, 8, 8, 3))
  model = OwnEINet()
  variables = model.init(jax.random.key(1), images)
  assert health.find_dead_layers(model, variables, images) == []
  params = jax.tree.map(lambda a: a, variables["params"])
  params["EIDense_0"]["g_i"] = jnp.zeros_like(params["EIDense_0"]["g_i"])
  dead = health.find_dead_layers(model, {"params": params}, images)
  assert [d.layer for d in dead] == ["EIDense_0"]
  assert dead[0].silent_shunting_fraction == 1.0 and dead[0].zero_g_i_fraction == 1.0
  assert "every inhibitory gain g_I is 0" in dead[0].cause
  line = health.describe(dead[0], 105)
  assert line.startswith("E-I layer EIDense_0 died at step 105: every inhibitory gain g_I is 0")
  assert "Lower optim.lr or optim.weight_decay" in line and "\n" not in line


def test_training_stops_at_the_first_dead_logging_step(tmp_path, monkeypatch):
  def kill_conv1(state):
    if int(jax.device_get(state.step)) == 4:   # g_I of conv1 to 0, as weight decay + projection can leave them
      params = dict(state.params)
      conv1 = {**params["conv1"], "ei": {**params["conv1"]["ei"]}}
      conv1["ei"]["g_i"] = jnp.zeros_like(conv1["ei"]["g_i"])
      params["conv1"] = conv1
      state = state.replace(params=params)
    return state

  capture_steps(monkeypatch, kill_conv1)
  with pytest.raises(health.DeadLayerError,
                     match=r"^E-I layer conv1 died at step 6: every inhibitory gain g_I is 0"):
    train.train_and_evaluate(tiny_config(), tmp_path / "run")
  records = metrics.read_metrics(tmp_path / "run", "train")
  assert [r["step"] for r in records] == [2, 3, 4, 6]      # checkpoint steps close a window
  assert records[2]["silent_shunting_fraction/conv1"] == 0.0   # the step before the damage
  assert records[3]["silent_shunting_fraction/conv1"] == 1.0
  assert records[3]["zero_g_i_fraction/conv1"] == 1.0 and "firing_rate/lif1" in records[3]
  assert complete_steps(tmp_path / "run" / "checkpoints") == [3]   # the last good one
  state, _ = restore(tmp_path / "run")
  assert np.all(np.asarray(state.params["conv1"]["ei"]["g_i"]) > 0)


def test_the_check_can_be_switched_off(tmp_path, monkeypatch):
  capture_steps(monkeypatch, lambda s: s.replace(params={**s.params, "conv1": {
      "ei": {**s.params["conv1"]["ei"], "g_i": jnp.zeros_like(s.params["conv1"]["ei"]["g_i"])}}})
                if int(s.step) == 4 else s)
  summary = train.train_and_evaluate(tiny_config("train.stop_on_dead_layer=False",
                                                 "train.max_steps=8"), tmp_path / "run")
  assert summary["step"] == 8


def test_probes_work_on_an_own_model_with_per_step_rates():
  """No `train` keyword needed; per-time-step firing rates average to the layer's rate."""
  from ei_snn_jax.analysis import probes
  images = jax.random.uniform(jax.random.key(0), (8, 8, 8, 3))
  model = OwnEINet(T=3)
  variables = model.init(jax.random.key(1), images)
  stats = probes.probe(model, variables, images, values=True)
  per_step = stats["firing_rate_per_step_values/LIF_0"]
  assert per_step.shape == (3,)
  assert float(np.mean(per_step)) == pytest.approx(stats["firing_rate/LIF_0"], rel=1e-6)
  with pytest.raises(ValueError, match="takes no `train` argument"):
    probes.probe(model, variables, images, train=True)


def test_a_layer_whose_inputs_went_quiet_is_not_dead():
  """Silent inputs make the shunting current 0 for every sample, but the layer can wake up (its
  W_EI g_I is not 0): logged, not a stop."""
  images = jnp.zeros((8, 8, 8, 3))
  model = OwnEINet()
  variables = model.init(jax.random.key(1), jax.random.uniform(jax.random.key(0), (8, 8, 8, 3)))
  from ei_snn_jax.analysis import probes
  stats = probes.probe(model, variables, images)
  assert stats["silent_shunting_fraction/EIConv_0"] == 1.0
  assert stats["zero_shunting_gain_fraction/EIConv_0"] == 0.0
  assert health.dead_layers(stats) == []
