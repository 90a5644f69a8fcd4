"""Run a whole spiking model one time step at a time (streaming), equal to the multi-step run.

Every op of these models except the LIF acts on each (time step, sample) row of the merged B*T
axis on its own (spec §1.4: convolutions, the E-I circuit with its per-row stabilisation §3.1,
pooling, the head), and the logits are the mean over T of the head's output (spec §6.1). So a
model built for T = 1 whose LIF layers carry their membrane potential from one call to the next
(``layers.LIF`` with the ``neuron_state`` collection mutable) computes at step t exactly what the
multi-step model computes for the rows of time step t, and the mean of its T outputs is the
multi-step output.

  one = streaming.one_step_model(model)            # the same model with T = 1
  state = streaming.initial_state(one, variables, x[0])
  for t in range(T):
    state, out_t = streaming.step(one, variables, state, x[t])
  # or all at once with lax.scan:  state, outs = streaming.run(one, variables, x)
  # outs.mean(0) equals model.apply(variables, images) (x[t] = the images at every t)

``variables`` are the multi-step model's (the parameters do not depend on T). The state is a
pytree of membrane potentials, one (B, ...) array per LIF layer, V_0 = 0; pass it back in to
continue a stream, start from ``initial_state`` for a new one. Works for the library's models
(``create_model``: VGG, SEW-ResNet, MLP, E-I, DANN and BN variants; BN in inference mode,
``train=False``, where its statistics are per sample) and for any Linen model composed of the
library's layers (build it for T = 1 yourself, or give it a ``T`` field for ``one_step_model``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from ei_snn_jax.layers import NEURON_STATE

__all__ = ["NEURON_STATE", "one_step_model", "initial_state", "step", "run"]


def one_step_model(model: nn.Module) -> nn.Module:
  """``model`` rebuilt to take one time step per call: ``options.T = 1`` for the library's models
  (``ModelOptions``), else a ``T`` field set to 1 (e.g. a user's model with ``T: int``)."""
  options = getattr(model, "options", None)
  if dataclasses.is_dataclass(options) and hasattr(options, "T"):
    return model.clone(options=dataclasses.replace(options, T=1))
  if isinstance(getattr(model, "T", None), int):
    return model.clone(T=1)
  raise TypeError(f"{type(model).__name__} has neither options.T nor a T field: build it for one "
                  "time step (T = 1) yourself and pass that model to streaming.step/run")


def _variables(variables: Mapping[str, Any], state: Any) -> dict[str, Any]:
  out = {k: v for k, v in variables.items() if k != NEURON_STATE}
  if state:
    out[NEURON_STATE] = state
  return out


def step(model: nn.Module, variables: Mapping[str, Any], state: Any, x_t: Any,
         **apply_kwargs) -> tuple[Any, Any]:
  """One time step: (state_{t-1}, x_t) -> (state_t, output_t).

  ``model`` takes one time step (T = 1, see ``one_step_model``); ``state`` is the membrane
  potential of every LIF layer (``initial_state``, or None / {} for V_0 = 0); ``apply_kwargs``
  go to ``model.apply`` (e.g. ``train=False``). The output is the model's output for step t.
  """
  out, updates = model.apply(_variables(variables, state), x_t, mutable=[NEURON_STATE],
                             **apply_kwargs)
  return updates.get(NEURON_STATE, {}), out


def initial_state(model: nn.Module, variables: Mapping[str, Any], x_t: Any,
                  **apply_kwargs) -> Any:
  """V_0 = 0 for every LIF layer of ``model`` (one time step) on inputs shaped like ``x_t``
  (shapes from an abstract call, nothing is computed)."""
  shapes = jax.eval_shape(lambda v, x: step(model, v, None, x, **apply_kwargs)[0],
                          _variables(variables, None), x_t)
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def run(model: nn.Module, variables: Mapping[str, Any], xs: Any, state: Any = None,
        **apply_kwargs) -> tuple[Any, Any]:
  """``step`` over the leading time axis of ``xs`` (T, ...) with ``jax.lax.scan``.

  Returns (final state, outputs stacked over time (T, ...)); ``state`` continues a stream
  (default: V_0 = 0). For a static image batch pass it at every step, e.g.
  ``jnp.broadcast_to(images, (T,) + images.shape)``.
  """
  first = jax.tree.map(lambda a: a[0], xs)
  if not state:
    state = initial_state(model, variables, first, **apply_kwargs)

  def body(carry, x_t):
    return step(model, variables, carry, x_t, **apply_kwargs)

  return jax.lax.scan(body, state, xs)
