"""Stateful neurons (spec §5): a LIF carries its membrane potential, and whole models run one time
step at a time give exactly the multi-step output; learnable tau (spikingjelly's parametric LIF)
and threshold, with their gradients."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from ei_snn_jax import layers, models
from ei_snn_jax.models import streaming
from ei_snn_jax.training import config as config_lib

T, B = 3, 2


def currents(shape, seed=0, scale=1.5):
  return jax.random.normal(jax.random.key(seed), shape) * scale


def lif_reference(x: np.ndarray, decay: float, theta: float) -> tuple[np.ndarray, np.ndarray]:
  """Spec §5 in NumPy: H = decay V + x, S = H >= theta, V = H - theta S; returns (V_T, spikes)."""
  v, out = np.zeros_like(x[0]), []
  for x_t in x:
    h = decay * v + x_t
    s = (h >= theta).astype(x.dtype)
    v = h - theta * s
    out.append(s)
  return v, np.stack(out)


# ------------------------------------------------------------------------------------------------
# The LIF layer's state.


def test_lif_carries_its_membrane_across_calls_in_neuron_state():
  seq = currents((4, B, 5))                           # 4 steps of B samples
  x = layers.merge_time(seq)                          # the merged (B*4, 5) axis
  lif = layers.LIF(4)
  whole = layers.split_time(lif.apply({}, x), 4)      # (4, B, 5)
  assert set(lif.init(jax.random.key(0), x)) <= {"probes", "probe_values"}   # no state, no params
  # Two calls of 2 steps, then 4 calls of 1 step, continuing from the stored state.
  chunk = layers.LIF(2)
  first, state = chunk.apply({}, layers.merge_time(seq[:2]), mutable=[layers.NEURON_STATE])
  second, state = chunk.apply(state, layers.merge_time(seq[2:]), mutable=[layers.NEURON_STATE])
  np.testing.assert_array_equal(
      np.concatenate([layers.split_time(first, 2), layers.split_time(second, 2)]), whole)
  v_end, ref = lif_reference(np.asarray(seq), 0.5, 1.0)
  np.testing.assert_array_equal(whole, ref)
  np.testing.assert_allclose(state[layers.NEURON_STATE]["v"], v_end, rtol=1e-6, atol=1e-6)
  one, state, outs = layers.LIF(1), {}, []
  for t in range(4):                                  # T = 1: the merged axis is the batch
    s, state = one.apply(state, seq[t], mutable=[layers.NEURON_STATE])
    outs.append(s)
  np.testing.assert_array_equal(np.stack(outs), whole)
  # Without the mutable collection every call starts again from V_0 = 0 (the stored V unused).
  fresh = one.apply(state, seq[1])
  np.testing.assert_array_equal(fresh, one.apply({}, seq[1]))
  assert not np.array_equal(fresh, outs[1])           # ... which differs from the carried run
  with pytest.raises(ValueError, match="new batch size"):
    one.apply(state, x[:B + 1], mutable=[layers.NEURON_STATE])


def test_explicit_single_step_call():
  seq = currents((T, B, 4), seed=1)
  lif = layers.LIF(T)
  v = lif.apply({}, seq[0], method="initial_state")
  assert v.shape == (B, 4) and not np.any(v)
  spikes = []
  for t in range(T):
    v, s = lif.apply({}, v, seq[t], method="step")
    spikes.append(s)
  np.testing.assert_array_equal(layers.merge_time(jnp.stack(spikes)),
                                lif.apply({}, layers.merge_time(seq)))


# ------------------------------------------------------------------------------------------------
# Whole models, one time step at a time.


def library_model(kind: str):
  """(model, input batch): a short spiking VGG (convolutions, pooling, E-I head) on 8x8 images,
  or the MLP-2 that ``create_model`` builds from a config."""
  if kind == "vgg":
    options = models.ModelOptions(T=T)
    return models.SpikingVGG((8, "P", 16, "P"), 10, options), (B, 8, 8, 3)
  cfg = config_lib.load_config("configs/default.py", [
      "model.arch=mlp2", f"model.T={T}", "model.width_multiplier=0.0625"])
  return models.create_model(cfg.model, 10), (B, 28, 28, 1)


@pytest.mark.parametrize("kind", ["vgg", "mlp"])
def test_library_model_streamed_equals_multistep(kind):
  model, shape = library_model(kind)
  images = jax.random.uniform(jax.random.key(0), shape)
  variables = jax.jit(lambda x: model.init(jax.random.key(1), x, train=False))(images)
  whole = jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images)
  one = streaming.one_step_model(model)
  assert one.options.T == 1 and model.options.T == T
  xs = jnp.broadcast_to(images, (T,) + images.shape)
  state, outs = jax.jit(lambda v, xs: streaming.run(one, v, xs, train=False))(variables, xs)
  np.testing.assert_allclose(np.asarray(outs).mean(0), whole, rtol=1e-6, atol=1e-6)
  assert any(not np.allclose(outs[0], outs[t]) for t in range(1, T))   # dynamics over time
  v_first = jax.tree.leaves(state)[0]
  assert v_first.shape[0] == B and np.any(v_first)
  # Step by step, continuing from the returned state, equals the scan.
  step = jax.jit(lambda v, s, x: streaming.step(one, v, s, x, train=False))
  s = streaming.initial_state(one, variables, images, train=False)
  assert not any(np.any(leaf) for leaf in jax.tree.leaves(s))
  for t in range(T):
    s, out_t = step(variables, s, images)
    np.testing.assert_allclose(out_t, outs[t], rtol=1e-6, atol=1e-6)
  jax.tree.map(np.testing.assert_array_equal, s, state)


class UserNet(nn.Module):
  """A user's model of library layers on (T, B, d) sequences: E-I dense -> LIF -> E-I head."""
  T: int

  @nn.compact
  def __call__(self, seq):                             # (T, B, d) -> (B, 5)
    x = layers.merge_time(seq)                         # merged (B*T, d)
    h = layers.LIF(self.T, name="spikes")(layers.EIDense(32, name="hidden")(x))
    logits = layers.EIHead(5, name="readout")(h)
    return layers.mean_over_time(logits, self.T)


def test_user_model_streamed_equals_multistep():
  seq = jax.random.uniform(jax.random.key(2), (T, B, 12))
  model = UserNet(T)
  variables = jax.jit(lambda x: model.init(jax.random.key(3), x))(seq)
  whole = jax.jit(model.apply)(variables, seq)
  one = streaming.one_step_model(model)
  run = jax.jit(lambda xs, s: streaming.run(one, variables, xs, state=s))
  state, outs = run(seq[:, None], None)             # each step a (1, B, d) sequence
  np.testing.assert_allclose(np.asarray(outs).mean(0), whole, rtol=1e-6, atol=1e-6)
  assert set(state) == {"spikes"} and state["spikes"]["v"].shape == (B, 32)
  # A stream continues: two halves from the carried state equal the whole run.
  s, first = run(seq[:2, None], None)
  s, rest = run(seq[2:, None], s)
  np.testing.assert_allclose(np.concatenate([first, rest]), outs, rtol=1e-6, atol=1e-6)
  with pytest.raises(TypeError, match="T = 1"):
    streaming.one_step_model(layers.EIDense(4))


# ------------------------------------------------------------------------------------------------
# Learnable tau (parametric LIF) and threshold.


PLIF = layers.NeuronOptions(tau=3.0, threshold=0.8, learnable_tau=True, learnable_threshold=True)


def test_parametric_lif_is_spikingjelly_plif():
  """spikingjelly ParametricLIFNode(decay_input=False, v_reset=None): H = V (1 - sigmoid(w)) + X,
  w initialised to -log(tau - 1); here with a learnable threshold too."""
  x = currents((T * B, 6), seed=4)
  lif = layers.LIF(T, PLIF)
  params = lif.init(jax.random.key(0), x)["params"]
  assert set(params) == {"w", "threshold"}
  np.testing.assert_allclose(1.0 / jax.nn.sigmoid(params["w"]), 3.0, rtol=1e-6)
  assert float(params["threshold"]) == pytest.approx(0.8)
  params = {"w": jnp.float32(0.3), "threshold": jnp.float32(1.1)}
  decay = 1.0 - float(jax.nn.sigmoid(jnp.float32(0.3)))
  _, ref = lif_reference(np.asarray(layers.split_time(x, T)), decay, 1.1)
  spikes = lif.apply({"params": params}, x)
  np.testing.assert_array_equal(np.asarray(layers.split_time(spikes, T)), ref)
  assert "params" not in layers.LIF(T).init(jax.random.key(0), x)   # off by default


def test_parametric_lif_gradients():
  x = currents((T * B, 6), seed=5)
  lif = layers.LIF(T, PLIF)
  params = lif.init(jax.random.key(0), x)["params"]
  g = jax.grad(lambda p: jnp.sum(lif.apply({"params": p}, x) * jnp.arange(6.0)))(params)
  assert np.isfinite(g["w"]) and g["w"] != 0 and np.isfinite(g["threshold"])
  assert g["threshold"] != 0
  # The final membrane V_T is a smooth function of (w, theta) away from threshold crossings:
  # its autodiff gradient is the true one (float64 finite differences).
  with jax.enable_x64(True):
    x64 = jnp.asarray(np.asarray(x), jnp.float64)
    lif64 = layers.LIF(T, PLIF, param_dtype=jnp.float64)
    p64 = lif64.init(jax.random.key(0), x64)["params"]

    def final_membrane(p):
      _, state = lif64.apply({"params": p}, x64, mutable=[layers.NEURON_STATE])
      return jnp.sum(state[layers.NEURON_STATE]["v"] * jnp.arange(1.0, 7.0))

    assert p64["w"].dtype == jnp.float64
    check_grads(final_membrane, (p64,), order=1, modes=["rev"], eps=1e-6)
