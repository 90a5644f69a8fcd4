"""Structural masks (spec §4, §1.3, §7.3): which parameters are sign-constrained, decayed or unused
comes from the layers (``roles.parameter_masks``), so a user's model whose E-I output layer has
any name gets the library's treatment, and a new layer that declares roles is projected and
grouped with no edit to roles.py, dale.py or optim.py; for the library's models the masks equal
those the declarations give a parameter tree alone (``optim.library_masks``)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ei_snn_jax import layers, models, roles
from ei_snn_jax.core import dale
from ei_snn_jax.training import config as config_lib
from ei_snn_jax.training import optim


@pytest.mark.parametrize("arch", ["vgg11", "resnet18", "mlp4"])
@pytest.mark.parametrize("variant", ["ei", "bn", "dann"])
def test_library_models_masks_equal_the_model_free_ones(arch, variant):
  if arch.startswith("mlp") and variant == "dann":
    pytest.skip("the MLP has no DANN variant")
  cfg = config_lib.load_config("configs/default.py", [
      f"model.arch={arch}", f"model.variant={variant}", "model.T=2",
      "model.width_multiplier=0.0625"])
  model = models.create_model(cfg.model, 10)
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  masks = roles.parameter_masks(model, x, train=False)
  params = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)["params"]
  assert masks.sign_constrained == dale.constrained_mask(params)
  assert masks.weight_decay == optim.weight_decay_mask(params)
  assert masks.unused == optim.unused_parameter_mask(params)
  assert masks == optim.library_masks(params)
  n_unused = sum(jax.tree.leaves(masks.unused))
  assert n_unused == (0 if variant == "bn" else 3)


class Scale(nn.Module):
  """A user's own layer with a parameter that happens to be called like an E-I one."""

  @nn.compact
  def __call__(self, x):
    return x * self.param("w_ei", nn.initializers.constant(-0.5), (x.shape[-1],))


class UserNet(nn.Module):
  """A user's model: E-I dense -> LIF (learnable tau and threshold) -> own layer -> E-I head
  named "readout" (not "head")."""
  T: int = 2

  @nn.compact
  def __call__(self, x):                                # (T*B, d)
    neuron = layers.NeuronOptions(learnable_tau=True, learnable_threshold=True)
    h = layers.LIF(self.T, neuron, name="lif")(layers.EIDense(16, name="hidden")(x))
    h = Scale(name="scale")(h)
    return layers.EIHead(4, name="readout")(h)


def test_user_model_masks_come_from_the_layers():
  model = UserNet()
  x = jax.random.uniform(jax.random.key(0), (8, 12))
  masks = roles.parameter_masks(model, x)
  c, d, u = masks
  assert c["hidden"] == {"w_ee": True, "w_ie": True, "w_ei": True, "g_i": True, "g_e": True,
                         "bias": False}
  assert u["readout"] == {"w_ee": False, "w_ie": False, "w_ei": False, "g_i": True, "g_e": True,
                          "bias": True}
  assert d["readout"] == {k: not v for k, v in u["readout"].items()}
  assert not any(jax.tree.leaves(u["hidden"])) and all(jax.tree.leaves(d["hidden"]))
  assert d["lif"] == {"w": False, "threshold": False} and not any(jax.tree.leaves(c["lif"]))
  assert c["scale"] == {"w_ei": False} and d["scale"] == {"w_ei": True}
  # The parameter tree alone (optim.library_masks) gets the user's model wrong: it decays the
  # head's g_E (not named "head") and constrains the user's own "w_ei".
  params = jax.jit(lambda x: model.init(jax.random.key(1), x))(x)["params"]
  assert optim.weight_decay_mask(params)["readout"]["g_e"]
  assert dale.constrained_mask(params)["scale"]["w_ei"]


def test_user_model_decayed_step_and_projection():
  """After a step with weight decay, the head's unused g_E (and g_I, b_E) keep their values,
  W_EE >= 0 after Dale's projection, and the user's own "w_ei" keeps its sign."""
  model = UserNet()
  x = jax.random.uniform(jax.random.key(0), (8, 12))
  labels = jnp.arange(4) % 4
  masks = roles.parameter_masks(model, x)
  params = jax.jit(lambda x: model.init(jax.random.key(1), x))(x)["params"]
  params = dale.project_nonnegative(params, masks.sign_constrained)
  tx, _ = optim.make_optimizer(0.5, 0.5, 0, 100, weight_decay=0.1,
                               decay_mask=masks.weight_decay)
  state = tx.init(params)

  @jax.jit
  def step(params, state):
    def loss(p):
      logits = model.apply({"params": p}, x).reshape((2, 4, 4)).mean(0)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    grads = jax.grad(loss)(params)
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    return dale.project_nonnegative(params, masks.sign_constrained), state, grads

  before = params
  params, state, grads = step(params, state)
  for name in ("g_e", "g_i", "bias"):
    np.testing.assert_array_equal(params["readout"][name], before["readout"][name])
  np.testing.assert_array_equal(params["readout"]["g_e"], 1.0)
  assert not np.array_equal(params["readout"]["w_ee"], before["readout"]["w_ee"])
  assert float(params["readout"]["w_ee"].min()) >= 0 and float(params["hidden"]["w_ee"].min()) >= 0
  assert np.any(np.asarray(params["hidden"]["w_ee"]) == 0)   # the projection was needed
  np.testing.assert_array_less(params["scale"]["w_ei"], 0.0)  # not clamped to 0
  # The LIF's learnable tau and threshold moved by their gradient only (no decay).
  for name in ("w", "threshold"):
    np.testing.assert_allclose(params["lif"][name] - before["lif"][name],
                               -0.5 * 1.9 * grads["lif"][name], rtol=1e-5, atol=1e-7)
  # The optax piece with the same mask.
  tx2 = optax.chain(optax.sgd(10.0), dale.dale_projection(masks.sign_constrained))
  upd, _ = tx2.update(grads, tx2.init(params), params)
  new = optax.apply_updates(params, upd)
  assert float(new["hidden"]["w_ee"].min()) >= 0
  np.testing.assert_allclose(new["scale"]["w_ei"], params["scale"]["w_ei"] -
                             10.0 * grads["scale"]["w_ei"], rtol=1e-6)


class Gate(nn.Module):
  """A layer the library has never seen, declaring its own roles: a sign-constrained "mix", a
  "temperature" that is not decayed and an "unused_offset" that is never used."""

  @nn.nowrap
  def parameter_roles(self):
    return {"mix": roles.ParamRole(sign_constrained=True),
            "temperature": roles.NOT_DECAYED,
            "unused_offset": roles.ParamRole(unused=True)}

  @nn.compact
  def __call__(self, x):
    mix = self.param("mix", nn.initializers.constant(-1.0), (x.shape[-1],))
    temperature = self.param("temperature", nn.initializers.constant(2.0), ())
    self.param("unused_offset", nn.initializers.constant(3.0), (1,))
    scale = self.param("scale", nn.initializers.constant(-0.5), ())   # no role: the default
    return jnp.abs(x * mix / temperature + scale)   # non-negative, as E-I Init needs


class GatedNet(nn.Module):
  """The new layer in a model, before an E-I output layer."""

  @nn.compact
  def __call__(self, x):
    return layers.EIHead(3, name="out")(Gate(name="gate")(x))


def test_a_new_layer_declaring_roles_is_projected_and_grouped_without_editing_the_library():
  """Dale's projection, the optimizer's weight-decay groups and the unused mask follow the new
  layer's declaration: nothing in roles.py, dale.py or optim.py names its parameters."""
  model = GatedNet()
  x = jnp.ones((4, 5))
  masks = roles.parameter_masks(model, x)
  assert masks.sign_constrained["gate"] == {"mix": True, "temperature": False,
                                            "unused_offset": False, "scale": False}
  assert masks.weight_decay["gate"] == {"mix": True, "temperature": False,
                                        "unused_offset": False, "scale": True}
  assert masks.unused["gate"] == {"mix": False, "temperature": False, "unused_offset": True,
                                  "scale": False}
  params = model.init(jax.random.key(0), x)["params"]
  projected = dale.project_nonnegative(params, masks)       # the ParameterMasks as they are
  np.testing.assert_array_equal(projected["gate"]["mix"], 0.0)
  np.testing.assert_array_equal(projected["gate"]["scale"], -0.5)
  tx, _ = optim.make_optimizer(1.0, 1.0, 0, 100, weight_decay=0.5, momentum=0.0,
                               decay_mask=masks)
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  # With a zero gradient the update is the decay alone: -lr * wd * p where decayed, else 0.
  np.testing.assert_allclose(updates["gate"]["mix"], 0.5)
  np.testing.assert_allclose(updates["gate"]["scale"], 0.25)
  for name in ("temperature", "unused_offset"):
    np.testing.assert_array_equal(updates["gate"][name], 0.0)
  piece = dale.dale_projection(masks.sign_constrained)
  upd, _ = piece.update(jax.tree.map(lambda p: -jnp.ones_like(p), params), piece.init(params),
                        params)
  new = optax.apply_updates(params, upd)
  np.testing.assert_array_equal(new["gate"]["mix"], 0.0)
  np.testing.assert_array_equal(new["gate"]["scale"], -1.5)
