"""The E-I layer fired straight into its LIF (``core.ei_lif``): the Pallas kernels, run
interpreted on the CPU, against the composition they replace, and the layer's wiring."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ei_snn_jax import layers
from ei_snn_jax.core import circuit, ei_lif, neurons
from ei_snn_jax.models import common

T = 4


def _currents(samples, n_e=8, hw=4, dtype=jnp.float32, seed=0):
  """[I_bal | I_shunt] with exact zeros in I_shunt, and one sample whose I_shunt is all 0."""
  rng = np.random.default_rng(seed)
  i_bal = rng.normal(0.0, 2.0, (samples, hw, hw, n_e))
  i_shunt = np.abs(rng.normal(0.0, 1.0, (samples, hw, hw, n_e)))
  i_shunt[rng.random(i_shunt.shape) < 0.3] = 0.0
  i_shunt[1] = 0.0
  g_e = jnp.linspace(0.5, 2.0, n_e)
  b_e = jnp.linspace(-0.3, 0.4, n_e)
  return jnp.asarray(np.concatenate([i_bal, i_shunt], -1), dtype), g_e, b_e


def _composed(time_repeats, tau=2.0, threshold=1.0, surrogate="sigmoid", alpha=4.0, steps=T):
  """What the kernels replace: ``fused_integrated_current``, tiled, then the LIF's multistep."""
  lif = neurons.make_lif_multistep(tau, threshold, surrogate, alpha, time_axis=1)

  def composed(stored, g_e, b_e):
    i_int = neurons.tile_time(circuit.fused_integrated_current(stored, g_e, b_e), time_repeats)
    return lif(i_int.reshape((-1, steps) + i_int.shape[1:])).reshape(i_int.shape)
  return composed


@pytest.mark.parametrize("time_repeats, neuron", [
    (1, {}), (T, {}), (1, dict(tau=3.0, threshold=0.5, surrogate="atan", alpha=2.0))])
def test_kernels_give_the_spikes_and_gradients_of_the_composition(time_repeats, neuron):
  """Forward kernel (the spikes under differentiation), backward kernel (dL/d[I_bal | I_shunt],
  dL/dg_E, dL/db_E): equal to the composition's spikes and, to float32 rounding, gradients; on
  the merged B*T axis and for a static input (``time_repeats`` = T)."""
  stored, g_e, b_e = _currents(3 * T // time_repeats)
  fused = ei_lif.make_integrate_and_fire(T, time_repeats, interpret=True, **neuron)
  composed = _composed(time_repeats, **neuron)
  cotangent = jax.random.normal(jax.random.key(1), (3 * T,) + stored.shape[1:-1] + (8,))
  spikes, pullback = jax.vjp(fused, stored, g_e, b_e)
  want_spikes, want_pullback = jax.vjp(composed, stored, g_e, b_e)
  np.testing.assert_array_equal(spikes, want_spikes)
  np.testing.assert_array_equal(fused(stored, g_e, b_e), want_spikes)   # evaluation
  assert 0.05 < float(jnp.mean(spikes)) < 0.95
  for got, want in zip(pullback(cotangent), want_pullback(cotangent)):
    assert got.shape == want.shape and got.dtype == want.dtype
    assert float(jnp.max(jnp.abs(want))) > 0
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(want))))


def test_bfloat16_currents_get_a_bfloat16_gradient():
  """Currents stored in bfloat16 (the bfloat16 policy) are read in float32; the spikes and the
  gradient of the currents are written in bfloat16 (dL/dS comes in bfloat16)."""
  stored, g_e, b_e = _currents(2 * T, dtype=jnp.bfloat16)
  fused = ei_lif.make_integrate_and_fire(T, interpret=True)
  cotangent = jax.random.normal(jax.random.key(2), (2 * T, 4, 4, 8)).astype(jnp.bfloat16)
  spikes, pullback = jax.vjp(fused, stored, g_e, b_e)
  want_spikes, want_pullback = jax.vjp(_composed(1), stored, g_e, b_e)
  assert spikes.dtype == jnp.bfloat16   # exactly 0 or 1, read by the next bfloat16 convolution
  np.testing.assert_array_equal(spikes.astype(jnp.float32), want_spikes)
  got = pullback(cotangent)[0]
  want = want_pullback(cotangent.astype(jnp.float32))[0]
  assert got.dtype == jnp.bfloat16
  np.testing.assert_allclose(got.astype(jnp.float32), want.astype(jnp.float32), rtol=2e-2,
                             atol=2e-2 * float(jnp.max(jnp.abs(want.astype(jnp.float32)))))


def test_kernels_take_any_shape_and_time_window():
  """A 3x3 map, n_E = 12 (blocks of 1 position x 4 channels) and T = 6: the same spikes and
  gradients; currents that are not [I_bal | I_shunt] on B*T rows are refused."""
  steps = 6
  stored, g_e, b_e = _currents(2 * steps, n_e=12, hw=3)
  fused = ei_lif.make_integrate_and_fire(steps, interpret=True)
  spikes, pullback = jax.vjp(fused, stored, g_e, b_e)
  want_spikes, want_pullback = jax.vjp(_composed(1, steps=steps), stored, g_e, b_e)
  np.testing.assert_array_equal(spikes, want_spikes)
  cotangent = jax.random.normal(jax.random.key(3), spikes.shape)
  for got, want in zip(pullback(cotangent), want_pullback(cotangent)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(jnp.max(jnp.abs(want))))
  with pytest.raises(ValueError, match="not \\[I_bal"):
    jax.vjp(fused, stored[:5], g_e, b_e)
  with pytest.raises(ValueError, match="time_repeats"):
    ei_lif.make_integrate_and_fire(T, 2)


class _Layer(nn.Module):
  """One E-I convolution and its LIF, as the models wire them (``common.fire``)."""
  time_repeats: int = 1

  @nn.compact
  def __call__(self, x):
    o = common.ModelOptions(T=T)
    return common.fire(common.CurrentLayer(8, o, time_repeats=self.time_repeats, name="conv0"),
                       common.spiking(o, name="lif0"), x)


@pytest.mark.parametrize("time_repeats", [1, T])
def test_fired_layer_equals_the_lif_of_the_layer(time_repeats):
  """``common.fire`` (the E-I layer fires its LIF; the CPU's composed path) gives the spikes,
  gradients and probes of calling the LIF on the layer's I_int."""
  x = jnp.asarray(np.random.default_rng(0).random((6 * T // time_repeats, 4, 4, 3)) < 0.4,
                  jnp.float32)
  fired = _Layer(time_repeats)
  params = fired.init(jax.random.key(0), x)["params"]

  def separate(p, x):
    i_int = layers.EIConv(8, time_repeats=time_repeats).apply({"params": p["conv0"]["ei"]}, x)
    return layers.LIF(T).apply({}, i_int)

  apply = lambda p, x: fired.apply({"params": p}, x)
  weights = jax.random.normal(jax.random.key(1), (6 * T, 4, 4, 8))
  loss = lambda f: (lambda p, x: jnp.sum(f(p, x) * weights))
  np.testing.assert_array_equal(apply(params, x), separate(params, x))
  got, want = jax.grad(loss(apply))(params, x), jax.grad(loss(separate))(params, x)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), got, want)
  # With the probes on, the layer is not fired; the LIF records its rate either way.
  _, probes = fired.apply({"params": params}, x, mutable=["probes"])
  assert "firing_rate" in probes["probes"]["lif0"]
  assert "integrated_mean" in probes["probes"]["conv0"]["ei"]


@pytest.mark.parametrize("platform", ["cuda", "cpu", "tpu"])
def test_kernels_are_compiled_for_nvidia_gpus_only(platform):
  """Lowered from this CPU host: the training gradient of a fired E-I layer holds the forward
  and backward Triton kernels for a GPU (issue 21), the forward pass alone (evaluation) the
  forward kernel; the CPU and TPU keep the composed path."""
  x = jnp.asarray(np.random.default_rng(0).random((2 * T, 4, 4, 3)) < 0.4, jnp.float32)
  fired = _Layer()
  params = jax.jit(fired.init)(jax.random.key(0), x)["params"]
  grad = jax.jit(jax.grad(lambda p, x: jnp.sum(fired.apply({"params": p}, x) ** 2)))
  kernels = grad.trace(params, x).lower(lowering_platforms=(platform,)).as_text().count(
      "custom_call @__gpu$xla.gpu.triton")
  assert kernels == (2 if platform == "cuda" else 0)
  forward = jax.jit(lambda p, x: fired.apply({"params": p}, x)).trace(params, x).lower(
      lowering_platforms=(platform,)).as_text()
  assert forward.count("custom_call @__gpu$xla.gpu.triton") == (platform == "cuda")


def test_kernels_split_over_the_samples_of_a_data_parallel_step():
  """On 8 devices with the samples sharded (as the training step's batch), each device runs
  the kernels on its own samples: no all-gather or all-to-all in the compiled gradient, only
  the all-reduce of dL/dg_E, dL/db_E; the same spikes and gradients as on one device."""
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  devices = jax.devices()
  assert len(devices) == 8, "conftest sets 8 host devices"
  mesh = Mesh(np.asarray(devices), ("data",))
  stored, g_e, b_e = _currents(8 * T)
  fused = ei_lif.make_integrate_and_fire(T, interpret=True)
  cotangent = jax.random.normal(jax.random.key(4), (8 * T, 4, 4, 8))

  def loss(stored, g_e, b_e):
    return jnp.sum(fused(stored, g_e, b_e) * cotangent)

  data, rep = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
  grad = jax.jit(jax.grad(loss, (0, 1, 2)), in_shardings=(data, rep, rep),
                 out_shardings=(data, rep, rep))
  text = grad.lower(stored, g_e, b_e).compile().as_text()
  assert "all-gather" not in text and "all-to-all" not in text
  assert "all-reduce" in text
  for got, want in zip(grad(stored, g_e, b_e), jax.grad(loss, (0, 1, 2))(stored, g_e, b_e)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_vmapped_replicas_split_over_the_samples_too():
  """Vmapped replicas (``train.num_replicas``) of a data-parallel step, the samples sharded and
  the replica axis not (``Experiment.replica_batch_sharded``): each device still runs the
  kernels on its own samples of every replica, with no all-gather or all-to-all, and each
  replica gets the gradients it gets alone."""
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  mesh = Mesh(np.asarray(jax.devices()), ("data",))
  stored, g_e, b_e = _currents(8 * T)
  stacked = (jnp.stack([stored, stored[::-1]]), jnp.stack([g_e, 2 * g_e]), jnp.stack([b_e, -b_e]))
  fused = ei_lif.make_integrate_and_fire(T, interpret=True)
  cotangent = jax.random.normal(jax.random.key(5), (8 * T, 4, 4, 8))
  loss = lambda *a: jnp.sum(fused(*a) * cotangent)
  data, rep = NamedSharding(mesh, P(None, "data")), NamedSharding(mesh, P())
  grad = jax.jit(jax.vmap(jax.grad(loss, (0, 1, 2))), in_shardings=(data, rep, rep),
                 out_shardings=(data, rep, rep))
  text = grad.lower(*stacked).compile().as_text()
  assert "all-gather" not in text and "all-to-all" not in text
  assert "all-reduce" in text
  got = grad(*stacked)
  for r in range(2):
    for g, w in zip(got, jax.grad(loss, (0, 1, 2))(*(a[r] for a in stacked))):
      np.testing.assert_allclose(g[r], w, rtol=1e-5, atol=1e-6)


def test_kernels_under_vmap_equal_each_replica():
  """Vmapped replicas (``train.num_replicas``: parameters and data per replica) run the kernels
  batched: the same spikes and gradients as each replica alone."""
  stored, g_e, b_e = _currents(2 * T)
  stacked = (jnp.stack([stored, stored[::-1]]), jnp.stack([g_e, 2 * g_e]), jnp.stack([b_e, -b_e]))
  fused = ei_lif.make_integrate_and_fire(T, interpret=True)
  loss = lambda *a: jnp.sum(fused(*a) ** 2 * jnp.arange(8))
  got = jax.vmap(jax.grad(loss, (0, 1, 2)))(*stacked)
  for r in range(2):
    want = jax.grad(loss, (0, 1, 2))(*(a[r] for a in stacked))
    for g, w in zip(got, want):
      np.testing.assert_allclose(g[r], w, rtol=1e-5, atol=1e-6)
