"""Invariants that must hold at every step (issue 4, point 3), as hypothesis properties over
random shapes and inputs:

* Dale's law: constrained parameters (E-I ``w_ee, w_ie, w_ei, g_i, g_e``; DANN ``w_ex, w_ix,
  w_ei, g``) are >= 0 after any optimizer update followed by the projection (the training step's
  order), from any projected state, for any finite gradient, learning rate, momentum and decay;
  the optax form ``dale_projection`` gives the same guarantee.
* The shunting current W_EI (g_I . W_IE x) is >= 0 for non-negative inputs and weights.
* Stabilized denominators are > 0 (or +inf for an all-zero sample), and the integrated current
  and its gradients are finite, for inputs with exact zeros and all-zero samples.
* Spikes are exactly 0 or 1 for any finite current (every surrogate); SEW-ResNet block outputs
  (spikes + identity) are non-negative integers; a whole E-I network's LIF outputs are binary
  and its integrated currents and logits finite, for any image (black and saturated included).

Shapes come from small sets so that each jitted function compiles only a few times.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from ei_snn_jax.core import circuit, dale, ei_prop, neurons
from ei_snn_jax import layers, models
from ei_snn_jax.training import optim
from ei_snn_jax.models import common
from ei_snn_jax.models.resnet import SEWBasicBlock

SETTINGS = dict(deadline=None, database=None, derandomize=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

finite32 = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)
huge32 = st.floats(-2.0 ** 100, 2.0 ** 100, width=32)       # ~1.3e30, exactly representable
# Non-negative weights with exact zeros, bounded away from float32 underflow: W_IE x and g_I
# products then stay representable, as for trained networks (Dale's projection yields zeros).
nonneg_weight = st.one_of(st.just(0.0), st.floats(2.0 ** -10, 4.0, width=32))


def arrays(shape, elements):
  return hnp.arrays(np.float32, shape, elements=elements)


def is_binary(x) -> bool:
  x = np.asarray(x)
  return bool(np.all((x == 0) | (x == 1)))


# ---------------------------------------------------------------------------------------------
# Dale's law after any update.
# ---------------------------------------------------------------------------------------------

@st.composite
def params_and_grads(draw):
  """A projected E-I + DANN parameter tree of random shapes and finite gradients for it."""
  k = draw(st.sampled_from([1, 3]))
  c_in, n_e = draw(st.sampled_from([1, 3])), draw(st.sampled_from([4, 8]))
  n_i = n_e // draw(st.sampled_from([1, 4]))
  e_i_shapes = dict(w_ee=(k, k, c_in, n_e), w_ie=(k, k, c_in, n_i), w_ei=(n_e, n_i),
                    g_i=(n_i,), g_e=(n_e,), bias=(n_e,))
  dann_shapes = dict(w_ex=(n_e, 10), w_ix=(n_e, 1), w_ei=(10, 1), g=(10,), alpha=(1,),
                     bias=(10,))
  values = st.floats(-3.0, 3.0, width=32)
  grads = st.one_of(finite32, huge32)
  tree = lambda shapes, elements: {name: draw(arrays(shape, elements))
                                   for name, shape in shapes.items()}
  params = {"conv0": {"ei": tree(e_i_shapes, values)}, "fc": {"dann": tree(dann_shapes, values)}}
  grad_trees = [{"conv0": {"ei": tree(e_i_shapes, grads)}, "fc": {"dann": tree(dann_shapes, grads)}}
                for _ in range(draw(st.integers(1, 3)))]
  return dale.project_nonnegative(jax.tree.map(jnp.asarray, params)), grad_trees


def assert_constrained_nonnegative(params):
  for (path, leaf), constrained in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                                       jax.tree.leaves(dale.constrained_mask(params))):
    if constrained:
      assert np.all(np.asarray(leaf) >= 0), jax.tree_util.keystr(path)


@settings(max_examples=30, **SETTINGS)
@given(data=params_and_grads(), lr=st.floats(1e-7, 10.0), momentum=st.sampled_from([0.0, 0.9]),
       weight_decay=st.sampled_from([0.0, 5e-4, 1e-2]), warmup=st.sampled_from([0, 2]))
def test_constrained_parameters_stay_nonnegative_after_any_update(data, lr, momentum,
                                                                 weight_decay, warmup):
  params, grad_trees = data
  assert_constrained_nonnegative(params)
  tx, _ = optim.make_optimizer(lr, 1e-7, warmup, 10, weight_decay, momentum)
  with_projection = optax.chain(tx, dale.dale_projection())
  state, state2, params2 = tx.init(params), with_projection.init(params), params
  mask = jax.tree.leaves(dale.constrained_mask(params))
  assert any(mask) and not all(mask)
  for grads in grad_trees:
    grads = jax.tree.map(jnp.asarray, grads)
    # The training step: optimizer update, apply, then project.
    updates, state = tx.update(grads, state, params)
    plain = optax.apply_updates(params, updates)
    params = dale.project_nonnegative(plain)
    assert_constrained_nonnegative(params)
    # Unconstrained leaves (biases, DANN alpha) are left exactly as the optimizer put them.
    for constrained, new, old in zip(mask, jax.tree.leaves(params), jax.tree.leaves(plain)):
      if not constrained:
        assert np.array_equal(np.asarray(new), np.asarray(old))
    # The optax piece: the projection folded into the updates.
    updates2, state2 = with_projection.update(grads, state2, params2)
    params2 = optax.apply_updates(params2, updates2)
    assert_constrained_nonnegative(params2)


# ---------------------------------------------------------------------------------------------
# Currents: shunting >= 0, denominators > 0 or +inf, integrated current finite.
# ---------------------------------------------------------------------------------------------

@st.composite
def circuit_case(draw):
  """Input (dense or conv, spikes or uint8 pixels / 255, all-zero samples allowed) and
  non-negative weights with exact zeros.

  Inputs and weights are bounded away from float32 underflow (pixels are multiples of 1/255,
  weights 0 or >= 2^-10): the gradient of g_E I_bal / I_shunt with respect to I_shunt scales as
  1 / I_shunt^2, which overflows for a shunting current below ~1e-19 (the NaN guard's case).
  """
  conv = draw(st.booleans())
  n = draw(st.sampled_from([2, 3]))
  c_in, n_e = draw(st.sampled_from([1, 3])), draw(st.sampled_from([4, 8]))
  n_i = n_e // draw(st.sampled_from([1, 4]))
  pixel = st.integers(0, 255).map(lambda k: k / 255.0)    # uint8 images; spikes are 0 / 1
  x_shape = (n, 4, 4, c_in) if conv else (n, 5 * c_in)
  x = draw(arrays(x_shape, pixel))
  zero_samples = draw(st.lists(st.integers(0, n - 1), max_size=n))
  x[zero_samples] = 0.0
  kernel = (3, 3, c_in) if conv else (5 * c_in,)
  w = lambda shape: draw(arrays(shape, nonneg_weight))
  bias = st.floats(-2, 2, width=32, allow_subnormal=False)   # XLA:CPU flushes subnormals
  params = dict(w_ee=w(kernel + (n_e,)), w_ie=w(kernel + (n_i,)), w_ei=w((n_e, n_i)),
                g_i=w((n_i,)), g_e=w((n_e,)), b_e=draw(arrays((n_e,), bias)))
  return x, params, zero_samples


@functools.partial(jax.jit, static_argnames=("stabilization", "ste"))
def currents_and_grads(x, params, stabilization="adaptive", ste=True):
  def total(p):
    out = circuit.ei_currents(x, p["w_ee"], p["w_ie"], p["w_ei"], p["g_i"], p["g_e"], p["b_e"],
                              stabilization=stabilization, ste=ste)
    return jnp.sum(out["integrated"] * jnp.cos(jnp.arange(out["integrated"].size).reshape(
        out["integrated"].shape))), out

  (_, out), grads = jax.value_and_grad(total, has_aux=True)(params)
  out["denominator"] = ei_prop.stabilize_shunting(out["shunting"], stabilization, ste)
  return out, grads


@settings(max_examples=60, **SETTINGS)
@given(case=circuit_case(), ste=st.booleans())
def test_shunting_nonnegative_denominators_positive_integrated_finite(case, ste):
  x, params, zero_samples = case
  out, grads = jax.device_get(currents_and_grads(x, params, ste=ste))
  assert np.all(out["inhibitory"] >= 0)
  assert np.all(out["shunting"] >= 0)
  denominator = out["denominator"]
  assert np.all(denominator > 0)                        # +inf counts: inf > 0
  assert np.all(np.isfinite(denominator) | (denominator == np.inf))
  # A sample with no shunting current at all gets +inf, so I_int = b_E exactly there.
  axes = tuple(range(1, out["shunting"].ndim))
  silent = np.all(out["shunting"] == 0, axis=axes)
  assert np.all(denominator[silent] == np.inf)
  assert np.all(out["integrated"][silent] == np.broadcast_to(params["b_e"],
                                                             out["integrated"][silent].shape))
  for i in set(zero_samples):
    assert silent[i]
  assert np.all(np.isfinite(out["integrated"]))
  for name, g in grads.items():
    assert np.all(np.isfinite(g)), name


@settings(max_examples=60, **SETTINGS)
@given(shunt=st.sampled_from([(3, 4), (2, 3, 3, 2)]).flatmap(lambda shape: arrays(
    shape, st.one_of(st.just(0.0), st.floats(0.0, 2.0 ** 100, width=32,
                                             allow_subnormal=False)))),
    zero_rows=st.lists(st.integers(0, 1), max_size=2))
def test_stabilized_denominator_positive_for_any_shunting_current(shunt, zero_rows):
  """(XLA:CPU flushes subnormals to zero, so they are left out: they would count as zeros.)"""
  shunt[zero_rows] = 0.0
  for method, ste in (("adaptive", True), ("adaptive", False), ("epsilon", True)):
    d = np.asarray(ei_prop.stabilize_shunting(jnp.asarray(shunt), method, ste))
    assert np.all(d > 0), (method, ste)
    assert not np.any(np.isnan(d))
    if method == "adaptive":
      nonzero = shunt != 0
      assert np.array_equal(d[nonzero], shunt[nonzero])   # only exact zeros are replaced
      for row, drow in zip(shunt, d):
        positive = row[row > 0]
        fill = positive.min() if positive.size else np.inf
        assert np.all(drow[row == 0] == fill)


# ---------------------------------------------------------------------------------------------
# Spikes.
# ---------------------------------------------------------------------------------------------

@functools.partial(jax.jit, static_argnames=("surrogate",))
def lif_spikes_and_grad(x, surrogate):
  """Spikes of ``lif_multistep`` and of the ``LIF`` layer on x (T, B, C), and the surrogate
  gradient of their sum."""
  spike_fn = neurons.make_spike_fn(surrogate, 4.0)
  T = x.shape[0]
  spikes = neurons.lif_multistep(x, spike_fn=spike_fn)
  merged = layers.LIF(T, layers.NeuronOptions(surrogate=surrogate)).apply(
      {}, neurons.merge_time(x))
  grad = jax.grad(lambda v: jnp.sum(neurons.lif_multistep(v, spike_fn=spike_fn)))(x)
  return spikes, merged, grad


@settings(max_examples=40, **SETTINGS)
@given(T=st.integers(1, 4), surrogate=st.sampled_from(sorted(neurons.SURROGATES)),
       currents=arrays((4, 2, 3), st.one_of(finite32, huge32)))
def test_spikes_are_exactly_zero_or_one(T, surrogate, currents):
  x = jnp.asarray(np.resize(currents, (T, 2, 3)))
  spikes, merged, grad = jax.device_get(lif_spikes_and_grad(x, surrogate))
  assert spikes.dtype == np.float32 and is_binary(spikes) and is_binary(merged)
  assert np.array_equal(merged, neurons.merge_time(spikes))
  assert np.all(np.isfinite(grad))                       # the surrogate gradient too


TINY_OPTIONS = common.ModelOptions(variant="ei", T=2)


@functools.lru_cache(maxsize=None)
def sew_block(features: int, strides: int, c_in: int):
  """A SEW block initialised (E-I Init) on a fixed spike batch, and its jitted apply."""
  block = SEWBasicBlock(features, strides, TINY_OPTIONS)
  x0 = (np.random.default_rng(0).random((4, 8, 8, c_in)) < 0.3).astype(np.float32)
  variables = jax.jit(lambda x: block.init(jax.random.key(0), x))(x0)
  return variables, jax.jit(lambda v, x: block.apply(v, x))


@settings(max_examples=20, **SETTINGS)
@given(config=st.sampled_from([(8, 1, 8), (16, 2, 8)]), data=st.data())
def test_sew_block_outputs_are_nonnegative_integers(config, data):
  """out = spikes + identity: identity spikes/counts in, non-negative integer counts out."""
  features, strides, c_in = config
  counts = data.draw(arrays((4, 8, 8, c_in), st.sampled_from([0.0, 1.0, 2.0, 3.0])))
  variables, apply = sew_block(features, strides, c_in)
  out = np.asarray(apply(variables, counts))
  assert np.all(out >= 0) and np.array_equal(out, np.round(out))
  # Chained: a block fed the previous block's sums still yields integer counts.
  if strides == 1:
    again = np.asarray(apply(variables, out))
    assert np.all(again >= 0) and np.array_equal(again, np.round(again))


@functools.lru_cache(maxsize=None)
def tiny_vgg():
  model = models.SpikingVGG(models.scaled_layers("vgg8", 0.125), 10, TINY_OPTIONS)
  x0 = np.random.default_rng(1).random((4, 32, 32, 3)).astype(np.float32)
  variables = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(x0)

  @jax.jit
  def run(v, x):
    return model.apply(v, x, train=False, capture_intermediates=True, mutable=["intermediates"])

  return variables, run


@settings(max_examples=15, **SETTINGS)
@given(images=arrays((4, 32, 32, 3), st.sampled_from([0.0, 1.0, 0.5, 0.25, 0.999])),
       black=st.lists(st.integers(0, 3), max_size=4))
def test_network_spikes_binary_currents_finite_for_any_image(images, black):
  images[black] = 0.0
  variables, run = tiny_vgg()
  logits, state = run(variables, images)
  inter = jax.device_get(state["intermediates"])
  lif_outputs = [v["__call__"][0] for k, v in inter.items() if k.startswith("lif")]
  currents = [v["__call__"][0] for k, v in inter.items() if k.startswith("conv")]
  assert lif_outputs and currents
  assert all(is_binary(s) for s in lif_outputs)
  assert all(np.all(np.isfinite(c)) for c in currents)          # I_int of every E-I layer
  assert np.all(np.isfinite(np.asarray(logits)))
