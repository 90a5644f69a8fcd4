"""Dtypes the Flax way (spec §11.7, §11.9): ``dtype``/``param_dtype`` on the layers, bfloat16
inputs by default, bfloat16 convolutions accumulated in float32, float64 kept under x64; gradient
checks of an E-I layer in float64 (E-I Prop off: the true gradient; on: its definitions)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from ei_snn_jax import layers
from ei_snn_jax.core import circuit, ei_prop

N = 6   # merged T*B rows

OFF = layers.EIOptions(stabilization="none", ste=False, scale_wei_grad=False)


def conv_input(dtype=jnp.float32, seed=0):
  return jax.random.uniform(jax.random.key(seed), (N, 5, 5, 3), dtype)


def init(layer, x):
  """``layer.init`` compiled (E-I Init included)."""
  return jax.jit(lambda x: layer.init(jax.random.key(1), x))(x)


def ei_params(c_in: int, n_e: int, k: int | None, dtype=np.float64, seed: int = 0) -> dict:
  """E-I layer parameters away from 0 (every shunting current > 0 for positive inputs)."""
  rng = np.random.default_rng(seed)
  n_i = n_e // 4
  kernel = (lambda n: (k, k, c_in, n)) if k else (lambda n: (c_in, n))
  p = dict(w_ee=rng.uniform(0.05, 0.5, kernel(n_e)), w_ie=rng.uniform(0.05, 0.5, kernel(n_i)),
           w_ei=rng.uniform(0.2, 1.0, (n_e, n_i)), g_i=rng.uniform(0.5, 2.0, n_i),
           g_e=rng.uniform(0.5, 1.5, n_e), bias=rng.normal(0.0, 0.3, n_e))
  return {name: jnp.asarray(a, dtype) for name, a in p.items()}


def test_bfloat16_input_works_by_default_and_computes_in_float32():
  x = conv_input()
  for layer in (layers.EIConv(8), layers.EIHead(8), layers.BNConv(8), layers.DANNConv(8)):
    inp = x if not isinstance(layer, layers.EIHead) else x.reshape((N, -1))
    variables = init(layer, inp)
    apply = jax.jit(layer.apply)
    want = apply(variables, inp)
    got = apply(variables, inp.astype(jnp.bfloat16))
    assert got.dtype == jnp.float32, type(layer).__name__
    # The only difference is the rounding of the input to bfloat16.
    same = apply(variables, inp.astype(jnp.bfloat16).astype(jnp.float32))
    np.testing.assert_array_equal(got, same)
    assert np.allclose(got, want, rtol=0.05, atol=0.05)


def equations(fn, *args, primitive: str) -> list:
  """Every equation of ``primitive`` in the jaxpr of fn(*args), nested jaxprs included."""
  found = []

  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name == primitive:
        found.append(eqn)
      for value in eqn.params.values():
        for sub in value if isinstance(value, (tuple, list)) else (value,):
          inner = getattr(sub, "jaxpr", sub)
          if hasattr(inner, "eqns"):
            walk(inner)

  walk(jax.make_jaxpr(fn)(*args).jaxpr)
  return found


def test_bfloat16_convolutions_accumulate_in_float32():
  x = conv_input()
  layer = layers.EIConv(8, dtype=jnp.bfloat16)
  variables = {"params": ei_params(3, 8, 3, np.float32)}
  convs = equations(lambda v: layer.apply(v, x), variables, primitive="conv_general_dilated")
  # E and I fused into one convolution, staged once per platform (``platform_dependent``):
  # [I_bal | I_IE] for the CPU (10 channels), [I_bal | I_shunt] elsewhere (16 channels).
  assert sorted(c.outvars[0].aval.shape[-1] for c in convs) == [10, 16]
  for conv in convs:
    assert [v.aval.dtype for v in conv.invars] == [jnp.bfloat16] * 2
    # The folded convolution's result is I_bal itself, stored in bfloat16 (a float32 result
    # makes XLA:GPU run the convolution in float32, issue 21); it is the float32-accumulated
    # sum rounded once, and the layer divides in float32.
    assert conv.params["preferred_element_type"] == jnp.bfloat16
  out = layer.apply(variables, x)
  assert out.dtype == jnp.float32
  xb, kb = x.astype(jnp.bfloat16), jnp.asarray(np.random.default_rng(0).uniform(
      size=(3, 3, 3, 10)), jnp.bfloat16)
  np.testing.assert_array_equal(circuit.conv(xb, kb, low_precision_result=True),
                                circuit.conv(xb, kb).astype(jnp.bfloat16))
  assert circuit.conv(xb, kb).dtype == jnp.float32
  # The configs' spelling (EIOptions.conv_dtype) is the same computation; dtype wins over it.
  legacy = layers.EIConv(8, options=layers.EIOptions(conv_dtype="bfloat16"))
  np.testing.assert_array_equal(legacy.apply(variables, x), out)
  both = layers.EIConv(8, dtype=jnp.float32, options=layers.EIOptions(conv_dtype="bfloat16"))
  np.testing.assert_array_equal(both.apply(variables, x), layers.EIConv(8).apply(variables, x))
  # Dense layers: the matmul accumulates in float32 too.
  dense = layers.EIDense(8, dtype=jnp.bfloat16)
  xd = x.reshape((N, -1))
  # The feed-forward matmuls are those whose first operand is the (cast) input: one with the
  # folded kernel, or x W_EE and x W_IE where the layer mixes the currents (here: N = 6 rows
  # < fan-in 75); the others are the W_EI mixes, which stay float32.
  matmuls = equations(lambda v: dense.apply(v, xd), {"params": ei_params(75, 8, None, np.float32)},
                      primitive="dot_general")
  feedforward = [m for m in matmuls if m.invars[0].aval.shape == xd.shape]
  assert len(feedforward) == 2
  for matmul in feedforward:
    assert [v.aval.dtype for v in matmul.invars] == [jnp.bfloat16] * 2
    assert matmul.params["preferred_element_type"] == jnp.float32


def test_param_dtype():
  x = conv_input()
  params = jax.eval_shape(lambda x: layers.EIConv(8, param_dtype=jnp.bfloat16).init(
      jax.random.key(1), x), x)["params"]
  assert {p.dtype for p in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}
  default = jax.eval_shape(lambda x: layers.EIConv(8).init(jax.random.key(1), x), x)["params"]
  assert {p.dtype for p in jax.tree.leaves(default)} == {jnp.dtype(jnp.float32)}


def test_float64_stays_float64_under_x64():
  with jax.enable_x64(True):
    x = conv_input(jnp.float64)
    layer = layers.EIConv(8, param_dtype=jnp.float64)
    variables = jax.eval_shape(lambda x: layer.init(jax.random.key(1), x), x)
    assert {p.dtype for p in jax.tree.leaves(variables["params"])} == {jnp.dtype(jnp.float64)}
    params = ei_params(3, 8, 3, np.float64)
    out = jax.jit(lambda p, x: layer.apply({"params": p}, x))(params, x)
    assert out.dtype == jnp.float64
    # The division really ran in float64: float32 parameters and input give another result.
    out32 = layer.apply({"params": jax.tree.map(lambda p: p.astype(jnp.float32), params)},
                        x.astype(jnp.float32))
    assert out32.dtype == jnp.float32 and not np.array_equal(out, np.asarray(out32, np.float64))
    np.testing.assert_allclose(out, out32, rtol=1e-4, atol=1e-4)
    assert layers.LIF(2).apply({}, out).dtype == jnp.float64
    # float64 inputs with float32 parameters are promoted to float64 as well.
    params32 = jax.tree.map(lambda p: p.astype(jnp.float32), params)
    assert layer.apply({"params": params32}, x).dtype == jnp.float64
    assert circuit.accumulation_dtype(jnp.bfloat16) == jnp.float32
    assert circuit.accumulation_dtype(jnp.float64) == jnp.float64


def positive_case(kind: str, seed: int = 0):
  """A float64 E-I layer with inputs and parameters away from 0 (every shunting current > 0)."""
  rng = np.random.default_rng(seed)
  x = rng.uniform(0.2, 1.0, (N, 4, 4, 3) if kind == "conv" else (N, 10))
  layer = (layers.EIConv(8, param_dtype=jnp.float64, options=OFF) if kind == "conv" else
           layers.EIDense(8, param_dtype=jnp.float64, options=OFF))
  params = ei_params(x.shape[-1], 8, 3 if kind == "conv" else None, np.float64, seed)
  return layer, params, jnp.asarray(x)


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_check_grads_float64_with_ei_prop_off(kind):
  """Without E-I Prop's backward rules the layer's gradient is the true one: finite differences
  agree (``jax.test_util.check_grads`` in float64, reverse mode)."""
  with jax.enable_x64(True):
    layer, params, x = positive_case(kind)
    assert all(p.dtype == jnp.float64 for p in jax.tree.leaves(params))
    weights = jnp.asarray(np.random.default_rng(1).normal(size=x.shape[:-1] + (8,)))
    f = jax.jit(lambda p, x: jnp.sum(layer.apply({"params": p}, x) * weights))
    assert f(params, x).dtype == jnp.float64
    check_grads(f, (params, x), order=1, modes=["rev"])


def stabilized_ste_reference(i_shunt):
  """Spec §3.2 as written: I~ = I_shunt + sg(replace(I_shunt) - I_shunt)."""
  pos = jnp.where(i_shunt == 0, jnp.inf, i_shunt)
  smallest = jnp.min(pos, axis=tuple(range(1, i_shunt.ndim)), keepdims=True)
  replaced = jnp.where(i_shunt == 0, smallest, i_shunt)
  return i_shunt + jax.lax.stop_gradient(replaced - i_shunt)


def test_ei_prop_gradients_match_their_definitions_float64():
  """With E-I Prop on: the stabiliser's backward is the identity (STE, §3.2), and the W_EI
  gradient is the plain gradient divided by the fan-in d (§3.3), to float64 precision."""
  with jax.enable_x64(True):
    rng = np.random.default_rng(3)
    x = jnp.asarray((rng.random((N, 12)) < 0.3) * rng.integers(1, 3, (N, 12)), jnp.float64)
    params = ei_params(12, 8, None, np.float64, seed=3)
    params["w_ei"] = params["w_ei"].at[2].set(0.0)      # E unit 2 gets no inhibition: I_shunt = 0
    weights = jnp.asarray(rng.normal(size=(N, 8)))

    def reference(p):   # the definitions, written out: no custom_vjp
      i_ee, i_ie = x @ p["w_ee"], x @ p["w_ie"]
      i_bal = i_ee - i_ie @ p["w_ei"].T
      i_shunt = (i_ie * p["g_i"]) @ p["w_ei"].T
      return jnp.sum((p["g_e"] * i_bal / stabilized_ste_reference(i_shunt) + p["bias"]) * weights)

    i_shunt = (x @ params["w_ie"] * params["g_i"]) @ params["w_ei"].T
    assert np.any(i_shunt == 0) and np.all(np.any(i_shunt > 0, axis=1))   # zeros are replaced
    loss = lambda opts: jax.jit(jax.grad(lambda p: jnp.sum(
        layers.EIDense(8, options=opts).apply({"params": p}, x) * weights)))(params)
    on = loss(layers.EIOptions(ei_init=False))
    unscaled = loss(layers.EIOptions(ei_init=False, scale_wei_grad=False))
    want = jax.grad(reference)(params)
    assert on["w_ei"].dtype == jnp.float64
    for name in ("w_ee", "w_ie", "g_i", "g_e", "bias"):
      np.testing.assert_allclose(on[name], want[name], rtol=1e-12, atol=1e-12, err_msg=name)
      np.testing.assert_array_equal(unscaled[name], on[name])
    np.testing.assert_allclose(unscaled["w_ei"], want["w_ei"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(on["w_ei"], want["w_ei"] / 12, rtol=1e-12, atol=1e-14)
    # Without the STE the gradient of the replaced entries differs (the test can tell).
    no_ste = loss(layers.EIOptions(ei_init=False, ste=False, scale_wei_grad=False))
    assert not np.allclose(no_ste["w_ei"], want["w_ei"])
    np.testing.assert_array_equal(ei_prop.stabilize(i_shunt), stabilized_ste_reference(i_shunt))
