"""Dale's law projection (spec §4) and the optimizer masks (spec §7.3)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ei_snn_jax.core import dale
from ei_snn_jax.training import optim


def _tree():
  rng = np.random.default_rng(0)
  return {"conv0": {"ei": {n: jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
                           for n in ("w_ee", "w_ie", "w_ei", "g_i", "g_e", "bias")}},
          "bnconv": {"kernel": jnp.asarray(rng.normal(size=(3,)), jnp.float32)},
          "dann": {"alpha": -jnp.ones(3), "g": -jnp.ones(3), "w_ex": -jnp.ones(2)}}


def test_projection_clamps_constrained_and_never_touches_bias_or_others():
  t = _tree()
  out = dale.project_nonnegative(t)
  for n in ("w_ee", "w_ie", "w_ei", "g_i", "g_e"):
    assert float(out["conv0"]["ei"][n].min()) >= 0
    np.testing.assert_array_equal(out["conv0"]["ei"][n], jnp.maximum(t["conv0"]["ei"][n], 0))
  np.testing.assert_array_equal(out["conv0"]["ei"]["bias"], t["conv0"]["ei"]["bias"])
  assert float(out["conv0"]["ei"]["bias"].min()) < 0
  np.testing.assert_array_equal(out["bnconv"]["kernel"], t["bnconv"]["kernel"])
  np.testing.assert_array_equal(out["dann"]["alpha"], -1.0)
  np.testing.assert_array_equal(out["dann"]["g"], 0.0)
  mask = dale.constrained_mask(t)
  assert mask["conv0"]["ei"]["w_ei"] and not mask["conv0"]["ei"]["bias"]


def test_dale_projection_optax_piece():
  t = _tree()
  params = dale.project_nonnegative(t)
  tx = optax.chain(optax.sgd(1.0), dale.dale_projection())
  state = tx.init(params)
  grads = jax.tree.map(lambda p: jnp.ones_like(p) * 5.0, params)
  updates, _ = tx.update(grads, state, params)
  new = optax.apply_updates(params, updates)
  for n in ("w_ee", "w_ie", "w_ei", "g_i", "g_e"):
    assert float(new["conv0"]["ei"][n].min()) >= 0
    np.testing.assert_allclose(new["conv0"]["ei"][n],
                               jnp.maximum(params["conv0"]["ei"][n] - 5.0, 0), atol=1e-6)
  np.testing.assert_allclose(new["conv0"]["ei"]["bias"], params["conv0"]["ei"]["bias"] - 5.0)


def test_projection_outside_grad_keeps_full_gradient_at_zero():
  # The reason for projecting outside the loss: a weight at exactly 0 must get its full gradient.
  w = jnp.zeros(3)
  g = jax.grad(lambda v: jnp.sum(v * jnp.array([1.0, -2.0, 3.0])))(w)
  np.testing.assert_array_equal(g, [1.0, -2.0, 3.0])


def test_weight_decay_mask_excludes_unused_head_params():
  params = {"head": {"ei": {n: jnp.ones(2) for n in ("w_ee", "w_ie", "w_ei", "g_i", "g_e", "bias")}},
            "conv0": {"ei": {"g_i": jnp.ones(2), "bias": jnp.ones(2)}}}
  mask = optim.weight_decay_mask(params)
  assert mask["head"]["ei"]["w_ee"] and mask["head"]["ei"]["w_ei"]
  assert not mask["head"]["ei"]["g_i"] and not mask["head"]["ei"]["g_e"]
  assert not mask["head"]["ei"]["bias"]
  assert mask["conv0"]["ei"]["g_i"] and mask["conv0"]["ei"]["bias"]


def test_optimizer_matches_reference_semantics():
  """g + wd*p, buf = 0.9 buf + g (buf_0 = 1.9 g_0, EiSGD's first step), p -= lr(k) buf, for two
  steps; warmup then cosine lr."""
  tx, sched = optim.make_optimizer(0.1, 0.01, warmup_steps=2, total_steps=10, weight_decay=0.5)
  np.testing.assert_allclose([sched(0), sched(1), sched(2)], [0.01, 0.055, 0.1], rtol=1e-6)
  np.testing.assert_allclose(sched(6), 0.1 * (1 + np.cos(np.pi * 4 / 8)) / 2, rtol=1e-6)
  p = {"w": jnp.array([1.0, -2.0])}
  s = tx.init(p)
  g = {"w": jnp.array([0.5, 0.25])}
  buf = np.zeros(2)
  ref = np.array([1.0, -2.0])
  for k in range(2):
    u, s = tx.update(g, s, p)
    p = optax.apply_updates(p, u)
    grad = np.array([0.5, 0.25]) + 0.5 * ref
    buf = 1.9 * grad if k == 0 else 0.9 * buf + grad
    ref = ref - float(sched(k)) * buf
  np.testing.assert_allclose(p["w"], ref, rtol=1e-6)
  tx_bn, sched_bn = optim.make_optimizer(0.1, 0.0, 0, 10, 1e-4)
  np.testing.assert_allclose(sched_bn(0), 0.1)
