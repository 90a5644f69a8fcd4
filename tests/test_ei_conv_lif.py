"""An E-I layer's convolution, integrated current and LIF in two kernels for evaluation
(``core.ei_conv_lif``): the Pallas kernels, run interpreted on the CPU, against the convolution
followed by ``ei_lif``'s kernels, and the layer's wiring for a GPU."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ei_snn_jax.core import circuit, ei_conv_lif, ei_lif
from ei_snn_jax.models import common

T = 4


def _inputs(samples, c_in=16, n_e=32, hw=8, k=3, dtype=jnp.float32, seed=0, unshunted=True):
  """Input spikes (samples*T, hw, hw, C_in) with silent corners (I_shunt and I_bal exactly 0
  there) and one all-silent sample (no positive I_shunt: d = +inf), and a kernel [I_bal part |
  I_shunt part] whose shunting half is non-negative, g_E, b_E. ``unshunted``: every fifth unit
  has an all-zero shunting kernel (I_shunt = 0 with I_bal != 0: d is the sample's smallest)."""
  rng = np.random.default_rng(seed)
  x = (rng.random((samples * T, hw, hw, c_in)) < 0.3).astype(np.float32)
  x[:, : hw // 2, : hw // 2] = 0.0
  x[T:2 * T] = 0.0
  balanced = rng.normal(0.0, 0.4, (k, k, c_in, n_e))
  shunting = np.abs(rng.normal(0.0, 0.2, (k, k, c_in, n_e)))
  if unshunted:
    shunting[..., ::5] = 0.0
  kernel = np.concatenate([balanced, shunting], -1)
  g_e = jnp.linspace(0.5, 2.0, n_e)
  b_e = jnp.linspace(-0.2, 0.6, n_e)
  return jnp.asarray(x, dtype), jnp.asarray(kernel, dtype), g_e, b_e


def _op(k=3, steps=T, **neuron):
  """The op as the layer builds it, interpreted, and the composition it equals."""
  fused = ei_lif.make_integrate_and_fire(steps, interpret=True, **neuron)
  currents = lambda x, kernel: circuit.conv(x, kernel, padding=k // 2, low_precision_result=True)
  op = ei_conv_lif.make_conv_integrate_and_fire(steps, currents, fused, interpret=True,
                                                **{n: v for n, v in neuron.items()
                                                   if n in ("tau", "threshold")})
  return op, lambda x, kernel, g_e, b_e: fused(currents(x, kernel), g_e, b_e)


@pytest.mark.parametrize("k, neuron, unshunted", [
    (3, {}, True), (3, {}, False), (1, {}, True), (3, dict(tau=3.0, threshold=0.5), True)])
def test_kernels_give_the_spikes_of_the_convolution_and_lif(k, neuron, unshunted):
  """Evaluation (outside differentiation): the kernel's spikes equal those of the convolution
  followed by ``ei_lif``'s kernels, with zeros in I_shunt and a sample with none positive;
  where some unit has I_shunt = 0 and I_bal != 0 (``unshunted``: the second, repairing run)
  and where none has (the speculative run alone)."""
  x, kernel, g_e, b_e = _inputs(3, k=k, unshunted=unshunted)
  op, composed = _op(k, **neuron)
  stored = circuit.conv(x, kernel, padding=k // 2)
  i_bal, i_shunt = stored[..., :32], stored[..., 32:]
  assert float(jnp.mean(i_shunt == 0)) > 0.1   # the stabilisation is exercised
  assert bool(jnp.any((i_shunt == 0) & (i_bal != 0))) == unshunted
  spikes = op(x, kernel, g_e, b_e)
  want = composed(x, kernel, g_e, b_e)
  assert spikes.shape == want.shape == (3 * T, 8, 8, 32) and spikes.dtype == x.dtype
  np.testing.assert_array_equal(spikes, want)
  assert 0.05 < float(jnp.mean(spikes)) < 0.95


def test_gradients_are_those_of_the_composition():
  """Differentiated, the op is the convolution followed by ``ei_lif``'s kernels: the same
  spikes and the same gradients of x, the kernel, g_E and b_E."""
  x, kernel, g_e, b_e = _inputs(2)
  op, composed = _op()
  cotangent = jax.random.normal(jax.random.key(1), (2 * T, 8, 8, 32))
  spikes, pullback = jax.vjp(op, x, kernel, g_e, b_e)
  want_spikes, want_pullback = jax.vjp(composed, x, kernel, g_e, b_e)
  np.testing.assert_array_equal(spikes, want_spikes)
  for got, want in zip(pullback(cotangent), want_pullback(cotangent)):
    assert float(jnp.max(jnp.abs(want))) > 0
    np.testing.assert_array_equal(got, want)


def test_bfloat16_operands():
  """bfloat16 spikes and kernel (the bfloat16 policy): bfloat16 spikes; the kernels sum the
  products in float32 without rounding I_bal and I_shunt to bfloat16 first, so a unit whose
  charge lies within that rounding of the threshold may differ (here < 1 % of them)."""
  x, kernel, g_e, b_e = _inputs(2, dtype=jnp.bfloat16)
  op, composed = _op()
  spikes = op(x, kernel, g_e, b_e)
  want = composed(x, kernel, g_e, b_e)
  assert spikes.dtype == jnp.bfloat16
  assert float(jnp.mean(spikes != want)) < 0.01
  assert float(jnp.mean(spikes.astype(jnp.float32))) > 0.05


def test_layers_that_do_not_fit_are_refused():
  """``supports``: a stride-1 odd k x k convolution with "same" padding on the merged B*T axis,
  positions, C_in and n_E divisible by 16 (Triton's smallest product); anything else keeps the
  convolution and ``ei_lif``."""
  same = ((1, 1), (1, 1))
  assert ei_conv_lif.supports((8, 4, 4, 16), (3, 3, 16, 32), time_repeats=1, strides=(1, 1),
                              padding=same)
  for x_shape, kernel_shape, repeats, strides, padding in [
      ((8, 4, 4, 3), (3, 3, 3, 32), 1, (1, 1), same),       # the image: C_in 3
      ((8, 2, 2, 16), (3, 3, 16, 32), 1, (1, 1), same),     # 4 positions
      ((8, 4, 4, 16), (3, 3, 16, 24), 1, (1, 1), same),     # n_E 12
      ((8, 4, 4, 16), (3, 3, 16, 32), T, (1, 1), same),     # a static input
      ((8, 4, 4, 16), (3, 3, 16, 32), 1, (2, 2), same),     # stride 2
      ((8, 4, 4, 16), (3, 3, 16, 32), 1, (1, 1), ((0, 0), (0, 0))),
      ((8, 16), (16, 32), 1, None, None)]:                  # dense
    assert not ei_conv_lif.supports(x_shape, kernel_shape, time_repeats=repeats,
                                    strides=strides, padding=padding)
  op, _ = _op()
  x, kernel, g_e, b_e = _inputs(2)
  with pytest.raises(ValueError, match="convolution"):
    op(x[:5], kernel, g_e, b_e)


def test_kernels_split_over_the_samples_of_a_data_parallel_step():
  """On 8 devices with the samples sharded, each device convolves and fires its own samples:
  no all-gather or all-to-all in the compiled forward pass; the same spikes as on one device."""
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  mesh = Mesh(np.asarray(jax.devices()), ("data",))
  x, kernel, g_e, b_e = _inputs(8, hw=4)
  op, _ = _op()
  data, rep = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
  forward = jax.jit(op, in_shardings=(data, rep, rep, rep), out_shardings=data)
  text = forward.lower(x, kernel, g_e, b_e).compile().as_text()
  assert "all-gather" not in text and "all-to-all" not in text
  np.testing.assert_array_equal(forward(x, kernel, g_e, b_e), op(x, kernel, g_e, b_e))


def test_kernels_under_vmap_equal_each_replica():
  """Vmapped replicas (``train.num_replicas``), one needing the repairing run and one not: the
  same spikes as each replica alone, and the repair stays one branch for all of them (a
  ``cond``, not a select that would run it always)."""
  x, kernel, g_e, b_e = _inputs(2, hw=4)
  _, shunted, _, _ = _inputs(2, hw=4, seed=1, unshunted=False)
  stacked = (jnp.stack([x, x[::-1]]), jnp.stack([kernel, shunted]),
             jnp.stack([g_e, 2 * g_e]), jnp.stack([b_e, -b_e]))
  op, _ = _op()
  assert "cond[" in str(jax.make_jaxpr(jax.vmap(op))(*stacked))
  got = jax.vmap(op)(*stacked)
  for r in range(2):
    np.testing.assert_array_equal(got[r], op(*(a[r] for a in stacked)))


class _Stack(nn.Module):
  """Two E-I convolutions, each firing its LIF (``common.fire``): the first on the image, the
  second on 16 channels of spikes (its W_EI folded into the kernel: more output positions
  than fan-in, ``_EILayer._mixes_currents``)."""

  @nn.compact
  def __call__(self, x):
    o = common.ModelOptions(T=T)
    for i in range(2):
      x = common.fire(common.CurrentLayer(16, o, name=f"conv{i}"),
                      common.spiking(o, name=f"lif{i}"), x)
    return x


@pytest.mark.parametrize("platform", ["cuda", "cpu", "tpu"])
def test_layer_convolves_inside_the_kernels_when_evaluated_on_a_gpu(platform):
  """Lowered from this CPU host for a GPU: the forward pass alone (evaluation) holds the
  kernel for the second layer, speculative and in the repairing branch (the first layer, on the
  3-channel image, keeps ``ei_lif``'s forward kernel); the training gradient holds only ``ei_lif``'s kernels (2 per layer); the CPU and the
  TPU hold none."""
  x = jnp.asarray(np.random.default_rng(0).random((2 * T, 8, 8, 3)) < 0.4, jnp.float32)
  stack = _Stack()
  params = jax.jit(stack.init)(jax.random.key(0), x)["params"]
  forward = jax.jit(lambda p, x: stack.apply({"params": p}, x)).trace(params, x).lower(
      lowering_platforms=(platform,)).as_text()
  grad = jax.jit(jax.grad(lambda p, x: jnp.sum(stack.apply({"params": p}, x) ** 2)))
  backward = grad.trace(params, x).lower(lowering_platforms=(platform,)).as_text()
  gpu = platform == "cuda"
  assert ("ei_conv_fire" in forward) == gpu
  assert forward.count("custom_call @__gpu$xla.gpu.triton") == 3 * gpu
  assert "ei_conv" not in backward
  assert backward.count("custom_call @__gpu$xla.gpu.triton") == 4 * gpu
