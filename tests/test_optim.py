"""The optimizer's first step as the reference's EiSGD takes it (spec §7.3): the momentum buffer
starts at (1 + momentum) g_0; "optax" keeps torch.optim.SGD's buf_0 = g_0."""

import jax.numpy as jnp
import numpy as np
import pytest

from ei_snn_jax.training import optim


def updates(first_step, grads, params, lr=0.1, wd=0.0):
  """The updates of successive steps at a constant lr (warmup from lr to lr, long cosine)."""
  tx, _ = optim.make_optimizer(lr, lr, 1, 10**9, wd, 0.9, momentum_first_step=first_step)
  state, out = tx.init(params), []
  for g in grads:
    u, state = tx.update(g, state, params)
    out.append(np.asarray(u["w"]))
  return out


def test_reference_first_step_is_one_plus_momentum():
  p = {"w": jnp.ones(3)}
  g = [{"w": jnp.full(3, 2.0)}, {"w": jnp.full(3, 2.0)}, {"w": jnp.full(3, -1.0)}]
  u = updates("reference", g, p)
  # buf_0 = 1.9 * 2 = 3.8; buf_1 = 0.9 * 3.8 + 2 = 5.42; buf_2 = 0.9 * 5.42 - 1 = 3.878.
  np.testing.assert_allclose(u[0], -0.1 * 3.8, rtol=1e-6)
  np.testing.assert_allclose(u[1], -0.1 * 5.42, rtol=1e-6)
  np.testing.assert_allclose(u[2], -0.1 * 3.878, rtol=1e-6)


def test_optax_first_step_is_the_plain_gradient():
  u = updates("optax", [{"w": jnp.full(3, 2.0)}] * 2, {"w": jnp.ones(3)})
  np.testing.assert_allclose(u[0], -0.1 * 2.0, rtol=1e-6)
  np.testing.assert_allclose(u[1], -0.1 * (0.9 * 2.0 + 2.0), rtol=1e-6)


def test_reference_first_step_includes_the_coupled_weight_decay():
  u = updates("reference", [{"w": jnp.ones(3)}], {"w": jnp.full(3, 2.0)}, wd=0.5)
  np.testing.assert_allclose(u[0], -0.1 * 1.9 * (1.0 + 0.5 * 2.0), rtol=1e-6)


def test_unknown_first_step_is_refused():
  with pytest.raises(ValueError, match="momentum_first_step must be one of"):
    optim.make_optimizer(0.1, 0.1, 1, 10, 0.0, 0.9, momentum_first_step="torch")
