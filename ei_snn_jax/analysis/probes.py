"""Probes: per-layer statistics of a network's currents and spikes for one batch (spec §1.2, §5).

The layers record what they compute into two Flax collections, and only when the caller makes
them mutable (so the training step's program is unchanged unless it asks for them):

* ``probes``: each E-I (or DANN) layer sows the mean and std over every element of its currents
  (spec §1.2): ``excitatory`` I_EE, ``lateral_inhibition`` I_EI = W_EI I_IE (the subtractive
  current from the inhibitory units; ``inhibitory`` would be I_IE itself, see ``core.circuit``),
  ``balanced`` I_bal = I_EE - I_EI, ``shunting`` I_shunt = W_EI (g_I . I_IE) (before
  stabilization) and ``integrated`` I_int = g_E . I_bal / stabilize(I_shunt) + b_E, the LIF input;
  each LIF layer sows its ``firing_rate``, the mean of its spikes over T, batch, positions and
  channels (spec §5).
* ``probe_values``: each E-I layer sows a raw sample of I_int (its first 65,536 elements in
  (N, H, W, C) order), for histograms (the bimodality of the trained network, spec §8.4).

Flat statistics are named ``"<stat>/<layer>"`` (e.g. ``firing_rate/lif0``,
``integrated_std/conv3``, ``balanced_mean/stage1_block0.conv1``), the layer path joining module
names with "." and leaving out the wrapper names "ei" and "dann" (``tree.layer_path``). The
training step logs exactly these keys to ``metrics.jsonl`` (via ``probe_summary``); ``probe``
computes them for any batch and any parameters (e.g. a restored checkpoint), optionally with
the raw samples (``integrated_values/<layer>``).

  from ei_snn_jax.analysis import probes
  stats = probes.probe(model, {"params": params}, images, values=True)
  stats["firing_rate/lif0"], stats["integrated_std/conv0"], stats["integrated_values/conv0"]
  probes.by_layer(stats)["conv0"]["balanced_mean"]

A Flax NNX model that holds the library's layers or models through ``nnx.bridge.ToNNX`` is
probed the same way, ``probes.probe(nnx_model, images)``: its layer paths are its attribute
names (``conv``, ``lif``; ``backbone.conv0`` for a wrapped library model), and the model itself
is left unchanged (it is run as a copy, inside a Linen frame that makes ``probes`` mutable for
every bridged layer: a plain call of an NNX model never updates them).
"""

from __future__ import annotations

import functools
import inspect
import re
import sys
from typing import Any, Mapping

import flax.linen as nn
import jax
import numpy as np

from ei_snn_jax import tree as tree_lib

# Currents an E-I layer records (spec §1.2), in circuit order.
CURRENTS = ("excitatory", "lateral_inhibition", "balanced", "shunting", "integrated")
# Prefix of the raw integrated-current samples in ``probe``'s result.
VALUES_STAT = "integrated_values"


def probe_summary(probes: Any) -> dict[str, Any]:
  """Flatten a sown collection into {"<stat>/<layer path>": value}.

  For the ``probes`` collection: E-I layers contribute ``<current>_mean``/``_std`` of the
  currents of spec §1.2 (``CURRENTS``: excitatory, lateral_inhibition, balanced, shunting,
  integrated) and LIF layers ``firing_rate`` (spec §5); the layer path joins module names with
  "." (wrappers "ei"/"dann" left out). Works inside ``jax.jit`` (values stay arrays).
  """
  out = {}

  def walk(tree, path):
    for k, v in tree.items():
      if isinstance(v, dict) or hasattr(v, "items"):
        walk(v, path + (k,))
      else:
        value = v[-1] if isinstance(v, tuple) else v
        out[f"{k}/{tree_lib.layer_path(path)}"] = value

  walk(probes, ())
  return out


def split_key(key: str) -> tuple[str, str]:
  """"integrated_std/conv3" -> ("integrated_std", "conv3") (stat, layer path)."""
  stat, _, layer = key.partition("/")
  return stat, layer


def by_layer(stats: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
  """{"<stat>/<layer>": v} -> {layer: {stat: v}}, layers in first-seen order.

  Keys without a "/" (loss, accuracy, lr, ...) are left out.
  """
  out: dict[str, dict[str, Any]] = {}
  for key, value in stats.items():
    if "/" not in key:
      continue
    stat, layer = split_key(key)
    out.setdefault(layer, {})[stat] = value
  return out


def layer_names(keys, stat: str) -> list[str]:
  """Layer paths that have ``stat`` among flat keys ``"<stat>/<layer>"``, in network order.

  Network order: by the trailing integer of each path component ("conv2" < "conv10"), so the
  result follows depth for the VGG (conv0, conv1, ...) and ResNet names alike.
  """
  layers = {split_key(k)[1] for k in keys if split_key(k)[0] == stat and "/" in k}
  return sorted(layers, key=layer_sort_key)


def layer_sort_key(layer: str) -> tuple:
  """Sort key putting layer paths in network order: stem first, head last, otherwise a natural
  sort (numbers compared as numbers, so "conv2" < "conv10" and "stage1_block1" < "stage2_block0").
  """
  rank = 0 if layer.startswith(("stem", "lif_stem")) else (2 if layer.startswith("head") else 1)
  pieces = tuple((0, int(p), "") if p.isdigit() else (1, 0, p)
                 for p in re.split(r"(\d+)", layer) if p)
  return (rank, pieces)


@functools.lru_cache(maxsize=32)
def _probe_fn(model, values: bool, train: bool, vmapped: bool = False):
  """Jitted (variables, x, rngs) -> (logits, probes, probe_values) for ``model`` (cached);
  ``vmapped``: mapped over the leading axis of the variables (one result per copy)."""
  mutable = ["probes"] + (["probe_values"] if values else [])

  takes_train = "train" in inspect.signature(type(model).__call__).parameters
  if train and not takes_train:
    raise ValueError(f"{type(model).__name__}.__call__ takes no `train` argument: probe it with "
                     f"train=False")
  kwargs = {"train": train} if takes_train else {}

  def run(variables, x, rngs):
    mut = list(mutable)
    if train and "batch_stats" in variables:
      mut.append("batch_stats")   # BatchNorm in training mode updates its statistics
    logits, state = model.apply(variables, x, mutable=mut, rngs=rngs, **kwargs)
    return logits, state.get("probes", {}), state.get("probe_values", {})

  return jax.jit(jax.vmap(run, in_axes=(0, None, None)) if vmapped else run)


class _LinenFrame(nn.Module):
  """Calls ``fn()`` inside a Linen module: ``nnx.bridge.ToNNX`` layers called in it take the
  frame's mutable collections (``apply(..., mutable=...)``) as theirs."""

  @nn.compact
  def __call__(self, fn):
    return fn()


def _is_nnx(model) -> bool:
  """Whether ``model`` is a Flax NNX module (without importing NNX for Linen users)."""
  nnx = sys.modules.get("flax.nnx")
  return nnx is not None and isinstance(model, nnx.Module)


@functools.lru_cache(maxsize=32)
def _probe_nnx_fn(graphdef, values: bool):
  """Jitted (state, x) -> (output, probes, probe_values) of the NNX model ``graphdef``."""
  from flax import nnx
  mutable = ["probes"] + (["probe_values"] if values else [])

  def run(state, x):
    model = nnx.merge(graphdef, state)     # a copy: the caller's model is not updated
    out, _ = _LinenFrame().apply({}, lambda: model(x), mutable=mutable)
    sown = {"probes": {}, "probe_values": {}}
    for path, variable in nnx.to_flat_state(nnx.state(model)):
      collection = nnx.variable_name_from_type(type(variable), allow_register=True)
      if collection in sown:
        node = sown[collection]
        for key in path[:-1]:
          node = node.setdefault(str(key), {})
        node[str(path[-1])] = variable.get_value()
    return out, sown["probes"], sown["probe_values"]

  return jax.jit(run)


def probe(model, variables: Mapping[str, Any] | Any, x=None, *, values: bool = False,
          train: bool = False, rng: jax.Array | None = None,
          with_logits: bool = False, vmapped: bool = False) -> dict[str, Any]:
  """Per-layer statistics of ``model`` on the batch ``x`` (spec §1.2 currents, §5 firing rates).

  Runs ``model.apply(variables, x, mutable=["probes"(, "probe_values")])``: the parameters are
  not changed, and neither is the training step (it only sows into ``probes`` when that
  collection is mutable). Compiled once per (model, values, train) and input shape.

  Args:
    model: a Flax model built by ``models.create_model`` (or any module whose layers sow), or
      a Flax NNX model holding them through ``nnx.bridge.ToNNX``: ``probe(nnx_model, x)``
      (it carries its variables; ``train`` and ``rng`` do not apply, its own mode does).
    variables: {"params": ...} (and "batch_stats" for the BN variant).
    x: the batch the model takes, e.g. float images (B, H, W, C) in [0, 1].
    values: also return the raw integrated-current sample of each E-I layer and the firing
      rate of each LIF layer at each time step.
    train: run in training mode (dropout, BatchNorm batch statistics; the updated batch_stats
      are discarded). Default: inference mode, as in evaluation. Passed to the model only when
      its ``__call__`` takes a ``train`` argument, so any model can be probed.
    rng: dropout key when ``train`` and the model uses dropout.
    with_logits: add the model output under "logits".
    vmapped: ``variables`` stack several models along their leading axis (a vmapped ``init``,
      e.g. seeds): every copy is probed on ``x`` and each statistic is an array, one value per
      copy (``health`` names copy i ``layer[i]``).

  Returns:
    {"<stat>/<layer>": float} (an array for a layer stacked by ``nn.scan``/``nn.vmap``, one value
    per copy) with stats ``<current>_mean``/``<current>_std`` for the currents in
    ``CURRENTS`` and ``firing_rate`` (see the module docstring); with ``values`` also
    {"integrated_values/<layer>": 1-D float32 np.ndarray} (the first <= 65,536 elements of I_int
    of that layer) and {"firing_rate_per_step_values/<layer>": (T,) rates}.
  """
  if _is_nnx(model):
    if x is None:
      variables, x = None, variables
    if variables is not None or train or rng is not None:
      raise ValueError("an NNX model carries its own variables and mode: call "
                       "probe(nnx_model, x) (model.train()/eval() set its mode)")
    from flax import nnx
    graphdef, state = nnx.split(model)
    logits, probes_tree, values_tree = _probe_nnx_fn(graphdef, bool(values))(state, x)
  else:
    if x is None:
      raise TypeError("probe(model, variables, x): the batch x is missing")
    rngs = {"dropout": rng} if rng is not None else {}
    logits, probes_tree, values_tree = _probe_fn(model, bool(values), bool(train),
                                                 bool(vmapped))(dict(variables), x, rngs)
  stats = jax.device_get(probe_summary(probes_tree))
  out: dict[str, Any] = {k: _host_value(v) for k, v in stats.items()}
  if values:
    samples = jax.device_get(probe_summary(values_tree))
    for key, v in samples.items():
      stat, layer = split_key(key)
      name = VALUES_STAT if stat == "integrated" else f"{stat}_values"
      v = np.asarray(v, dtype=np.float32)
      out[f"{name}/{layer}"] = v.reshape(v.shape[0], -1) if vmapped else v.reshape(-1)
  if with_logits:
    out["logits"] = np.asarray(jax.device_get(logits))
  return out


def _host_value(value) -> float | np.ndarray:
  """A sown statistic on the host: a float, or an array for a stacked layer (``nn.scan``,
  ``nn.vmap``: one value per copy along the leading axes)."""
  a = np.asarray(value)
  return float(a) if a.ndim == 0 else a


def current_summary(stats: Mapping[str, Any], layer: str) -> dict[str, tuple[float, float]]:
  """{current: (mean, std)} of one E-I layer from flat probe statistics (spec §1.2 currents);
  floats, or arrays for a stacked layer."""
  out = {}
  for cur in CURRENTS:
    m, s = stats.get(f"{cur}_mean/{layer}"), stats.get(f"{cur}_std/{layer}")
    if m is not None and s is not None:
      out[cur] = (_host_value(m), _host_value(s))
  return out
