"""E-I circuit and E-I Prop against an independent NumPy float64 implementation (spec §1-3).

The reference below is written from the spec's equations only: forward currents, adaptive
stabilisation (per-sample min positive, +inf for an all-zero sample), and a hand-derived
backward pass (STE through the replacement, W_EI gradient / d). Convolutions use im2col, so the
same dense algebra covers both forms; the input gradient of a conv uses the col2im adjoint.
"""

import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ei_snn_jax.core import circuit, ei_prop
from ei_snn_jax import layers


# ------------------------------- NumPy float64 reference ------------------------------------

def im2col(x, k, stride):
  """(N, H, W, C) -> patches (N, Ho, Wo, k*k*C) in HWIO kernel order, zero padding k//2."""
  n, h, w, c = x.shape
  p = k // 2
  xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
  ho, wo = (h + 2 * p - k) // stride + 1, (w + 2 * p - k) // stride + 1
  out = np.zeros((n, ho, wo, k, k, c))
  for i in range(k):
    for j in range(k):
      out[:, :, :, i, j, :] = xp[:, i:i + stride * ho:stride, j:j + stride * wo:stride, :]
  return out.reshape(n, ho, wo, k * k * c)


def col2im(dcols, x_shape, k, stride):
  """Adjoint of im2col."""
  n, h, w, c = x_shape
  p = k // 2
  ho, wo = dcols.shape[1:3]
  dxp = np.zeros((n, h + 2 * p, w + 2 * p, c))
  d = dcols.reshape(n, ho, wo, k, k, c)
  for i in range(k):
    for j in range(k):
      dxp[:, i:i + stride * ho:stride, j:j + stride * wo:stride, :] += d[:, :, :, i, j, :]
  return dxp[:, p:p + h, p:p + w, :]


def np_stabilize(sh):
  axes = tuple(range(1, sh.ndim))
  pos = np.where(sh == 0, np.inf, sh)
  m = pos.min(axis=axes, keepdims=True)
  return np.where(sh == 0, m, sh)


def np_forward(cols, p):
  """Currents from patches/inputs cols (N, ..., d) and params with 2-D kernels (d, n)."""
  i_ee = cols @ p["w_ee"]
  i_ie = cols @ p["w_ie"]
  i_ei = i_ie @ p["w_ei"].T
  bal = i_ee - i_ei
  sh = (i_ie * p["g_i"]) @ p["w_ei"].T
  sht = np_stabilize(sh)
  with np.errstate(invalid="ignore"):
    out = p["g_e"] * bal / sht + p["bias"]
  return dict(excitatory=i_ee, inhibitory=i_ie, lateral_inhibition=i_ei, balanced=bal,
              shunting=sh, stabilized=sht, integrated=out)


def np_backward(cols, p, f, g_out, scale_wei=True):
  """Hand-derived gradients of sum(g_out * I_int) (STE: d/d I_shunt = d/d stabilized)."""
  fan_in = cols.shape[-1]
  sht, bal, i_ie = f["stabilized"], f["balanced"], f["inhibitory"]
  dbal = g_out * p["g_e"] / sht
  dsh = -g_out * p["g_e"] * bal / sht ** 2
  lead = tuple(range(cols.ndim - 1))
  flat = lambda a: a.reshape(-1, a.shape[-1])
  grads = {"bias": g_out.sum(lead), "g_e": (g_out * bal / sht).sum(lead)}
  di_ie = (-dbal) @ p["w_ei"] + (dsh @ p["w_ei"]) * p["g_i"]
  dw_ei = flat(-dbal).T @ flat(i_ie) + flat(dsh).T @ flat(i_ie * p["g_i"])
  grads["w_ei"] = dw_ei / fan_in if scale_wei else dw_ei
  grads["g_i"] = ((dsh @ p["w_ei"]) * i_ie).sum(lead)
  grads["w_ee"] = flat(cols).T @ flat(dbal)
  grads["w_ie"] = flat(cols).T @ flat(di_ie)
  dcols = dbal @ p["w_ee"].T + di_ie @ p["w_ie"].T
  return grads, dcols


def random_params(rng, c_in, n_e, ratio=4, k=None):
  n_i = n_e // ratio
  kshape = (lambda n: (k, k, c_in, n)) if k else (lambda n: (c_in, n))
  return {"w_ee": rng.exponential(0.2, kshape(n_e)), "w_ie": rng.exponential(0.2, kshape(n_i)),
          "w_ei": rng.exponential(1.0 / n_i, (n_e, n_i)), "g_i": rng.exponential(0.5, (n_i,)),
          "g_e": rng.exponential(1.0, (n_e,)), "bias": rng.normal(0, 0.1, (n_e,))}


def flat_params(p, k):
  return {n: (v.reshape(-1, v.shape[-1]) if (k and v.ndim == 4) else v) for n, v in p.items()}


# ------------------------------------ test cases --------------------------------------------

def sparse_input(rng, shape, density=0.3):
  return (rng.random(shape) < density).astype(np.float64) * rng.integers(1, 3, shape)


CASES = {
    "dense": dict(kind="dense"),
    "conv": dict(kind="conv"),
    "conv_stride2": dict(kind="conv", stride=2),
    "dense_partial_zero": dict(kind="dense", density=0.05),
    "conv_partial_zero": dict(kind="conv", density=0.02),
    "dense_zero_sample": dict(kind="dense", zero_sample=True),
    "conv_zero_sample": dict(kind="conv", zero_sample=True),
    "dense_zero_wei_rows": dict(kind="dense", zero_rows=True),
    "conv_zero_wei_rows": dict(kind="conv", zero_rows=True),
}


def make_case(name):
  spec = CASES[name]
  rng = np.random.default_rng(zlib.crc32(name.encode()))
  n_e, c_in = 8, 5
  if spec["kind"] == "dense":
    x = sparse_input(rng, (6, 12), spec.get("density", 0.3))
    k = None
  else:
    x = sparse_input(rng, (4, 6, 6, c_in), spec.get("density", 0.3))
    k = 3
  if spec.get("zero_sample"):
    x[1] = 0.0
  p = random_params(rng, x.shape[-1], n_e, k=k)
  if spec.get("zero_rows"):
    p["w_ei"][[0, 3]] = 0.0
  return x, p, k, spec.get("stride", 1)


def jax_layer(k, stride, n_e):
  if k:
    return layers.EIConv(n_e, kernel_size=k, strides=stride)
  return layers.EIDense(n_e)


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_and_gradients_match_numpy_float64(name):
  x, p, k, stride = make_case(name)
  cols = im2col(x, k, stride) if k else x
  ref = np_forward(cols, flat_params(p, k))
  if "zero" in name:  # the case really exercises exact-zero denominators
    assert np.any(ref["shunting"] == 0) and np.any(np.isfinite(ref["stabilized"]))
  g_out = np.random.default_rng(1).normal(size=ref["integrated"].shape)
  ref_grads, dcols = np_backward(cols, flat_params(p, k), ref, g_out)
  ref_dx = col2im(dcols, x.shape, k, stride) if k else dcols

  with jax.enable_x64(True):
    params = jax.tree.map(jnp.asarray, p)
    xj = jnp.asarray(x)
    # Pure functions: every named quantity.
    kw = dict(strides=(stride, stride)) if k else {}
    cur = circuit.ei_currents(xj, params["w_ee"], params["w_ie"], params["w_ei"], params["g_i"],
                              params["g_e"], params["bias"], **kw)
    cur = jax.tree.map(lambda a: np.asarray(a, np.float64), cur)
    for q in ("excitatory", "inhibitory", "lateral_inhibition", "balanced", "shunting"):
      np.testing.assert_allclose(cur[q], ref[q], rtol=1e-5, atol=1e-6, err_msg=q)
    np.testing.assert_allclose(cur["integrated"], ref["integrated"], rtol=1e-5, atol=1e-5)
    assert np.all(np.isfinite(cur["integrated"]))

    # The Flax layer (fused E/I conv, W_EI gradient scaling) on the same parameters.
    layer = jax_layer(k, stride, p["w_ee"].shape[-1])

    def loss(params, xj):
      out = layer.apply({"params": params}, xj)
      return jnp.sum(out * g_out), out

    (val, out), (grads, dx) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, xj)
  out = np.asarray(out)
  np.testing.assert_allclose(out, ref["integrated"], rtol=1e-4, atol=1e-4)
  assert np.all(np.isfinite(out))
  for n, g in grads.items():
    want = ref_grads[n].reshape(np.shape(g))
    assert np.all(np.isfinite(g)), n
    np.testing.assert_allclose(np.asarray(g), want, rtol=2e-4, atol=2e-5, err_msg=n)
  np.testing.assert_allclose(np.asarray(dx), ref_dx, rtol=2e-4, atol=2e-5)


def test_all_zero_sample_gives_bias_and_no_nan():
  x, p, k, _ = make_case("conv_zero_sample")
  out = layers.EIConv(8).apply({"params": jax.tree.map(jnp.asarray, p)}, jnp.asarray(x, jnp.float32))
  np.testing.assert_allclose(np.asarray(out[1]), np.broadcast_to(p["bias"], out[1].shape),
                             rtol=1e-6)
  assert np.all(np.isfinite(out))


def test_stabilize_replaces_zeros_with_per_sample_min_and_is_straight_through():
  sh = jnp.array([[0.0, 2.0, 0.5, 0.0], [3.0, 0.0, 1.0, 4.0], [0.0, 0.0, 0.0, 0.0]])
  out = ei_prop.stabilize(sh)
  np.testing.assert_array_equal(out[0], [0.5, 2.0, 0.5, 0.5])
  np.testing.assert_array_equal(out[1], [3.0, 1.0, 1.0, 4.0])
  assert np.all(np.isposinf(out[2]))
  g = jax.grad(lambda s: jnp.sum(ei_prop.stabilize(s) * jnp.arange(1.0, 5.0)))(sh)
  np.testing.assert_array_equal(g, np.broadcast_to(np.arange(1.0, 5.0), sh.shape))
  # Without STE the replaced entries get no gradient; their gradient goes to the minimum.
  g2 = jax.grad(lambda s: jnp.sum(ei_prop.stabilize_without_ste(s) * jnp.arange(1.0, 5.0)))(sh)
  np.testing.assert_array_equal(g2[0], [0.0, 2.0, 3.0 + 1.0 + 4.0, 0.0])


def test_stabilization_variants():
  sh = jnp.array([[0.0, 2.0]])
  np.testing.assert_allclose(ei_prop.stabilize_shunting(sh, "epsilon"), [[1e-8, 2.0]])
  np.testing.assert_array_equal(ei_prop.stabilize_shunting(sh, "none"), sh)
  with pytest.raises(ValueError, match="unknown stabilization"):
    ei_prop.stabilize_shunting(sh, "bogus")


def test_a_receptive_field_without_input_amplifies_the_gradient_1e8_under_epsilon():
  """Why the spiking DANN of the study took no step: where a receptive field has no input,
  I_shunt = 0 and DANN's denominator is eps, so dI_int/dI_bal = g_E / 1e-8; a few such layers in
  a row overflow float32. Adaptive stabilisation divides by the sample's smallest positive
  I_shunt instead (spec §3.1)."""
  i_bal, i_shunt = jnp.array([[0.3, 0.0]]), jnp.array([[0.5, 0.0]])
  gain = lambda method: jax.grad(lambda b: jnp.sum(circuit.integrated_current(
      b, i_shunt, jnp.ones(2), jnp.zeros(2), stabilization=method)))(i_bal)
  np.testing.assert_allclose(gain("epsilon"), [[1 / (0.5 + 1e-8), 1e8]], rtol=1e-6)
  np.testing.assert_allclose(gain("adaptive"), [[2.0, 2.0]])


def test_head_returns_balanced_current():
  rng = np.random.default_rng(3)
  x = sparse_input(rng, (6, 16))
  p = random_params(rng, 16, 8)
  out = layers.EIHead(8).apply({"params": jax.tree.map(jnp.asarray, p)}, jnp.asarray(x, jnp.float32))
  ref = np_forward(x, p)["balanced"]
  np.testing.assert_allclose(np.asarray(out), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_wei_gradient_is_unscaled_gradient_over_fan_in(kind):
  rng = np.random.default_rng(4)
  if kind == "dense":
    x, k = sparse_input(rng, (6, 12)), None
  else:
    x, k = sparse_input(rng, (2, 5, 5, 3)), 3
  p = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), random_params(rng, x.shape[-1], 8, k=k))
  x = jnp.asarray(x, jnp.float32)
  fan_in = 12 if kind == "dense" else 27
  grads = {}
  for scaled in (True, False):
    opts = layers.EIOptions(scale_wei_grad=scaled)
    layer = layers.EIDense(8, options=opts) if kind == "dense" else layers.EIConv(8, options=opts)
    grads[scaled] = jax.grad(lambda q: jnp.sum(layer.apply({"params": q}, x) ** 2))(p)
  np.testing.assert_allclose(grads[True]["w_ei"], grads[False]["w_ei"] / fan_in, rtol=1e-6)
  for n in ("w_ee", "w_ie", "g_i", "g_e", "bias"):
    np.testing.assert_array_equal(grads[True][n], grads[False][n])


def test_scale_gradient_is_identity_forward():
  x = jnp.arange(4.0)
  np.testing.assert_array_equal(ei_prop.scale_gradient(x, 0.25), x)
  np.testing.assert_allclose(jax.grad(lambda v: jnp.sum(ei_prop.scale_gradient(v, 0.25) * 2))(x),
                             np.full(4, 0.5))


# ----------------------- the training path's fused E-I epilogue ------------------------------

@pytest.mark.parametrize("shunting", ["folded", "mixed"])
@pytest.mark.parametrize("name", ["conv", "conv_zero_sample", "conv_zero_wei_rows",
                                  "dense_partial_zero"])
def test_fused_integrated_current_equals_the_plain_circuit_float64(name, shunting):
  """The training step's path, one product with [``balanced_kernel`` | ``shunting_kernel``]
  (accelerators) or [``balanced_kernel`` | W_IE] with I_shunt mixed from it (CPU), then
  ``fused_integrated_current``, gives the plain circuit's I_int and gradients (every parameter
  and the input) to float64 rounding, exact-zero shunting currents and all-zero samples
  included."""
  x, p, k, stride = make_case(name)
  g_out = np.random.default_rng(2).normal(size=(x.shape[0],) + (
      circuit.conv(jnp.asarray(x), jnp.asarray(p["w_ee"]), (stride, stride)).shape[1:] if k
      else (p["w_ee"].shape[-1],)))
  kw = dict(strides=(stride, stride)) if k else {}
  n_e = p["w_ee"].shape[-1]

  def plain(q, xj):
    out = circuit.ei_currents(xj, q["w_ee"], q["w_ie"], q["w_ei"], q["g_i"], q["g_e"],
                              q["bias"], **kw)["integrated"]
    return jnp.sum(jnp.where(jnp.isfinite(out), out, 0.0) * g_out)

  def fused(q, xj):
    second = (circuit.shunting_kernel(q["w_ie"], q["w_ei"], q["g_i"]) if shunting == "folded"
              else q["w_ie"])
    kernel = jnp.concatenate([circuit.balanced_kernel(q["w_ee"], q["w_ie"], q["w_ei"]),
                              second], axis=-1)
    stored = circuit.feedforward(xj, kernel, **kw)
    weights = q["w_ei"] * q["g_i"] if shunting == "mixed" else None
    out = circuit.fused_integrated_current(stored, q["g_e"], q["bias"], weights)
    assert out.shape[-1] == n_e
    return jnp.sum(jnp.where(jnp.isfinite(out), out, 0.0) * g_out)

  with jax.enable_x64(True):
    params = jax.tree.map(jnp.asarray, p)
    xj = jnp.asarray(x)
    want, want_grads = jax.value_and_grad(plain, argnums=(0, 1))(params, xj)
    got, got_grads = jax.value_and_grad(fused, argnums=(0, 1))(params, xj)
  np.testing.assert_allclose(got, want, rtol=1e-12)
  for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got_grads),
                          jax.tree.leaves(want_grads)):
    assert np.all(np.isfinite(g)), path
    np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12, err_msg=str(path))


@pytest.mark.parametrize("path", ["folded_kernel", "mixed_currents"])
def test_training_path_equals_probe_path_float32(path):
  """A layer applied as the training step applies it (no probes: the fused path) and as the
  probe step does (``probes`` mutable) takes one numerical path: the same I_int and gradients,
  bit for bit, and the probes' I_int statistics are those of that output (issue 21: the probes
  measure what trains). Autodiff of the same path (``fused=False``) gives them to float32
  rounding; the W_EI gradient keeps its 1/fan_in scaling on all. With 4 samples of 6x6 positions (M = 144 >
  fan-in 45) the fused path folds W_EI into the kernel; with one sample (M = 36) it mixes the
  currents."""
  x, p, k, stride = make_case("conv_partial_zero")
  if path == "mixed_currents":
    x = x[:1]
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), p)
  xj = jnp.asarray(x, jnp.float32)
  layer = layers.EIConv(8)
  assert (layer._output_positions(xj) > 9 * x.shape[-1]) == (path == "folded_kernel")
  g_out = jnp.asarray(np.random.default_rng(5).normal(size=x.shape[:3] + (8,)), jnp.float32)

  def loss(q, mode):
    if mode == "probes":
      out, sown = layer.apply({"params": q}, xj, mutable=["probes"])
      return jnp.sum(out * g_out), (out, sown["probes"]["integrated_mean"])
    if mode == "plain":
      out = layers.EIConv(8, options=layers.EIOptions(fused=False)).apply({"params": q}, xj)
    else:
      out = layer.apply({"params": q}, xj)
    return jnp.sum(out * g_out), out

  (_, fused_out), fused_grads = jax.value_and_grad(loss, has_aux=True)(params, "train")
  (_, (probe_out, probed_mean)), probe_grads = jax.value_and_grad(loss, has_aux=True)(
      params, "probes")
  np.testing.assert_allclose(probed_mean, jnp.mean(probe_out), rtol=1e-6)
  (_, plain_out), plain_grads = jax.value_and_grad(loss, has_aux=True)(params, "plain")
  np.testing.assert_array_equal(probe_out, fused_out)
  jax.tree.map(np.testing.assert_array_equal, probe_grads, fused_grads)
  np.testing.assert_allclose(fused_out, plain_out, rtol=1e-5, atol=1e-5)
  for n in plain_grads:
    scale = float(jnp.max(jnp.abs(plain_grads[n])))
    np.testing.assert_allclose(fused_grads[n], plain_grads[n], rtol=1e-4, atol=1e-5 * scale,
                               err_msg=n)


@pytest.mark.parametrize("size", [1, 2, 4])
def test_small_maps_on_cpu_convolve_as_patches_matmul(size):
  """On CPU, ``conv`` computes a 3x3 convolution on a map of <= 16 positions as patches @ kernel
  (XLA:CPU differentiates the convolution ~36x slower at 2x2): the same values and gradients as
  ``lax.conv_general_dilated`` to float32 rounding, bfloat16 operands accumulated in float32."""
  rng = np.random.default_rng(size)
  x = jnp.asarray(rng.random((3, size, size, 6)), jnp.float32)
  w = jnp.asarray(rng.random((3, 3, 6, 5)), jnp.float32)
  same = ((1, 1), (1, 1))
  assert circuit._small_map_on_cpu(x, w, (1, 1), same) == (jax.default_backend() == "cpu")
  assert not circuit._small_map_on_cpu(jnp.zeros((3, 5, 5, 6)), w, (1, 1), same)
  assert not circuit._small_map_on_cpu(x, w, (2, 2), same)

  def reference(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), same,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  g_out = jnp.asarray(rng.normal(size=(3, size, size, 5)), jnp.float32)
  got, got_grads = jax.value_and_grad(lambda a, b: jnp.sum(circuit.conv(a, b) * g_out),
                                      (0, 1))(x, w)
  want, want_grads = jax.value_and_grad(lambda a, b: jnp.sum(reference(a, b) * g_out),
                                        (0, 1))(x, w)
  np.testing.assert_allclose(circuit.conv(x, w), reference(x, w), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  for g, r in zip(got_grads, want_grads):
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)
  low = circuit.conv(x, w, dtype=jnp.bfloat16)
  assert low.dtype == jnp.float32
  np.testing.assert_allclose(low, reference(x, w), rtol=2e-2, atol=2e-2)


# ----------------------- one E-I path for every E-I Prop variant (issue 21) -------------------

VARIANTS = [("adaptive", True), ("adaptive", False), ("epsilon", True), ("none", True)]


@pytest.mark.parametrize("path", ["folded_kernel", "mixed_currents"])
@pytest.mark.parametrize("stabilization,ste", VARIANTS)
def test_every_e_i_prop_variant_takes_the_one_path_float64(stabilization, ste, path):
  """Each ablation switch (spec §3: no STE, a fixed epsilon, no stabilisation) changes only its
  rule, not the layer's path: the layer ([I_bal | I_IE], then ``fused_integrated_current``)
  gives the plain circuit's I_int and gradients (input and every parameter) to float64
  rounding, with the folded kernel (4 samples: M = 144 > fan-in 45) and with mixed currents
  (one sample, M = 36); exact-zero shunting currents included where the variant is finite
  there. For the paper's rule the written-out backward pass (``fused``) and autodiff of the
  same forward computation (``fused=False``) give the same values and gradients."""
  x, p, k, _ = make_case("conv" if stabilization == "none" else "conv_partial_zero")
  if path == "mixed_currents":
    x = x[:1]
  g_out = np.random.default_rng(7).normal(size=x.shape[:3] + (8,))
  opts = dict(stabilization=stabilization, ste=ste, scale_wei_grad=False)

  def plain(q, xj):
    out = circuit.ei_currents(xj, q["w_ee"], q["w_ie"], q["w_ei"], q["g_i"], q["g_e"],
                              q["bias"], stabilization=stabilization, ste=ste)["integrated"]
    return jnp.sum(out * g_out), out

  def layer(q, xj, fused=True):
    out = layers.EIConv(8, options=layers.EIOptions(fused=fused, **opts)).apply({"params": q},
                                                                               xj)
    return jnp.sum(out * g_out), out

  with jax.enable_x64(True):
    params = jax.tree.map(jnp.asarray, p)
    xj = jnp.asarray(x)
    assert (layers.EIConv(8)._output_positions(xj) > 45) == (path == "folded_kernel")
    (_, want), want_grads = jax.value_and_grad(plain, argnums=(0, 1), has_aux=True)(params, xj)
    (_, got), got_grads = jax.value_and_grad(layer, argnums=(0, 1), has_aux=True)(params, xj)
    (_, auto), auto_grads = jax.value_and_grad(layer, argnums=(0, 1), has_aux=True)(
        params, xj, False)
    if stabilization == "adaptive":   # the case exercises exact-zero denominators
      assert np.any(circuit.shunting_current(circuit.feedforward(xj, params["w_ie"]),
                                             params["w_ei"], params["g_i"]) == 0)
  assert np.all(np.isfinite(got))
  np.testing.assert_array_equal(auto, got)       # the same forward computation
  np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
  for g_set in (got_grads, auto_grads):
    for (where, g), w in zip(jax.tree_util.tree_leaves_with_path(g_set),
                             jax.tree.leaves(want_grads)):
      np.testing.assert_allclose(g, w, rtol=1e-9, atol=1e-10 * float(np.max(np.abs(w))),
                                 err_msg=str(where))


def test_smallest_positive_is_one_reduction_with_the_derivative_of_min():
  """``ei_prop.smallest_positive`` (one min-positive reduction, shared by the written-out
  backward pass and ``stabilize``) equals min(where(I == 0, inf, I)) per sample, +inf for an
  all-zero sample, and so does its derivative (what the "no STE" ablation differentiates): the
  tangent at the minimum, averaged over ties, 0 for an all-zero sample."""
  sh = jnp.array([[0.0, 2.0, 0.5, 0.0], [3.0, 1.0, 1.0, 4.0], [0.0, 0.0, 0.0, 0.0]])
  ref = lambda s: jnp.min(jnp.where(s == 0, jnp.inf, s), axis=1, keepdims=True)
  np.testing.assert_array_equal(ei_prop.smallest_positive(sh), ref(sh))
  tangent = jnp.arange(1.0, 13.0).reshape(3, 4)
  _, got = jax.jvp(ei_prop.smallest_positive, (sh,), (tangent,))
  _, want = jax.jvp(ref, (sh,), (tangent,))
  np.testing.assert_array_equal(got, want)
  np.testing.assert_array_equal(got[:, 0], [3.0, 6.5, 0.0])
  w = jnp.arange(1.0, 4.0)[:, None]
  np.testing.assert_array_equal(jax.grad(lambda s: jnp.sum(ei_prop.smallest_positive(s) * w))(sh),
                                jax.grad(lambda s: jnp.sum(ref(s) * w))(sh))
