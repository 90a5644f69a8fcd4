"""Dead E-I layers: the state the method allows but training must not run on silently.

If every inhibitory gain g_I of an E-I layer reaches 0 (weight decay and Dale's projection can
drive them there), or more generally W_EI g_I = 0 for every excitatory unit, its shunting current
is 0 for every input. The adaptive stabiliser (spec §3.1) then makes the denominator +inf, so
I_int = b_E: the layer passes no information, its LIF fires a constant pattern (usually nothing),
and no gradient reaches g_I, W_IE, W_EI or the layers below, so it never recovers. Loss and
accuracy freeze at chance without any NaN. The E-I layers sow ``silent_shunting_fraction``
(samples with a +inf denominator, which may also be a passing silence of the inputs),
``zero_g_i_fraction`` and ``zero_shunting_gain_fraction`` (the permanent cause) into ``probes``;
the training loop logs them with the firing rates at every logging step and stops on a dead
layer (``train.stop_on_dead_layer``).

A layer dies gradually: weight decay and Dale's projection set one g_I after another to 0, the
units that depended on them lose their divisive normalisation and the integrated current grows.
``find_dead_layers`` (and ``dead_layers(stats, mostly_dead=...)``) also report such a layer as
``MOSTLY_DEAD`` once a fraction of its g_I (default ``MOSTLY_DEAD_FRACTION`` = 0.5, the caller's
choice) is 0, before it is dead for good.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from ei_snn_jax import errors
from ei_snn_jax.analysis import probes

SILENT = "silent_shunting_fraction"
ZERO_G_I = "zero_g_i_fraction"
ZERO_GAIN = "zero_shunting_gain_fraction"


class DeadLayerError(errors.UserError):
  """Training stopped because an E-I layer died (see the module docstring)."""


# Health levels of an E-I layer.
DEAD = "dead"
MOSTLY_DEAD = "mostly_dead"
# Default threshold of the "mostly dead" level: the fraction of zero inhibitory gains (or of
# excitatory units with W_EI g_I = 0) from which a layer is reported as dying.
MOSTLY_DEAD_FRACTION = 0.5


@dataclasses.dataclass(frozen=True)
class DeadLayer:
  """One dead (or mostly dead) E-I layer and why.

  Attributes:
    layer: the layer path ("conv3"; "layer[i]" for copy i of a layer stacked by ``nn.scan``).
    silent_shunting_fraction, zero_g_i_fraction, zero_shunting_gain_fraction: its probe
      statistics (see the module docstring).
    level: ``DEAD`` (no unit has a shunting current: the layer never recovers) or
      ``MOSTLY_DEAD`` (at least the chosen fraction of its g_I, or of its units' W_EI g_I, is 0).
  """
  layer: str
  silent_shunting_fraction: float
  zero_g_i_fraction: float
  zero_shunting_gain_fraction: float = 1.0
  level: str = DEAD

  @property
  def cause(self) -> str:
    """The cause in words."""
    if self.level == MOSTLY_DEAD:
      return (f"{self.zero_g_i_fraction:.0%} of its inhibitory gains g_I are 0 and "
              f"{self.zero_shunting_gain_fraction:.0%} of its excitatory units have W_EI g_I = 0: "
              "their divisive normalisation is gone or rests on a few inhibitory units, so the "
              "integrated current grows and the layer is dying")
    if self.zero_g_i_fraction >= 1.0:
      return ("every inhibitory gain g_I is 0, so its shunting current is 0 and the stabilised "
              "denominator is +inf for every sample (I_int = b_E)")
    return ("W_EI g_I is 0 for every excitatory unit, so its shunting current is 0 and the "
            "stabilised denominator is +inf for every sample (I_int = b_E)")


def _copies(stats: Mapping[str, Any], layer: str):
  """(name, {stat: float}) for each copy of ``layer``: one for a plain layer, one per index
  ("layer[i]") for a layer stacked by ``nn.scan``/``nn.vmap`` (its statistics are arrays)."""
  values = {name: np.asarray(stats[f"{name}/{layer}"], dtype=np.float64)
            for name in (SILENT, ZERO_G_I, ZERO_GAIN) if f"{name}/{layer}" in stats}
  shape = np.broadcast_shapes(*(v.shape for v in values.values()))
  values = {k: np.broadcast_to(v, shape) for k, v in values.items()}
  for index in np.ndindex(shape):
    name = f"{layer}[{', '.join(map(str, index))}]" if index else layer
    yield name, {k: float(v[index]) for k, v in values.items()}


def dead_layers(stats: Mapping[str, Any], mostly_dead: float | None = None) -> list[DeadLayer]:
  """The dead E-I layers of a probe or metrics record ({"<stat>/<layer>": value}): those whose
  shunting current is 0 for every unit whatever the input (a silent layer whose inputs merely
  went quiet is not dead: it can wake up).

  ``mostly_dead``: also report, at level ``MOSTLY_DEAD``, the layers where at least this
  fraction of the inhibitory gains g_I (or of the excitatory units' W_EI g_I) is 0, e.g. 0.5
  (``MOSTLY_DEAD_FRACTION``); None: dead layers only (what stops training).
  """
  if mostly_dead is not None and not 0.0 < mostly_dead <= 1.0:
    raise ValueError(f"mostly_dead={mostly_dead} must be a fraction in (0, 1]")
  out = []
  for layer in probes.layer_names(stats, ZERO_GAIN):
    for name, v in _copies(stats, layer):
      zero_gain, zero_g_i = v[ZERO_GAIN], v.get(ZERO_G_I, 0.0)
      if zero_gain >= 1.0:
        level = DEAD
      elif mostly_dead is not None and max(zero_g_i, zero_gain) >= mostly_dead:
        level = MOSTLY_DEAD
      else:
        continue
      out.append(DeadLayer(name, v.get(SILENT, 1.0 if level == DEAD else 0.0), zero_g_i,
                           zero_gain, level))
  return out


def find_dead_layers(model, variables: Mapping[str, Any], x, *,
                     mostly_dead: float | None = MOSTLY_DEAD_FRACTION,
                     **probe_kwargs) -> list[DeadLayer]:
  """The dead and mostly dead E-I layers of any model whose E-I layers are the library's
  (nested, user-named or stacked by ``nn.scan``), on the batch ``x`` (one ``probes.probe``
  pass; ``probe_kwargs`` as for it). ``mostly_dead``: the fraction of zero g_I (or of units with
  W_EI g_I = 0) from which a layer is reported as ``MOSTLY_DEAD`` (default 0.5; None: only the
  dead ones); each result's ``level`` says which."""
  return dead_layers(probes.probe(model, variables, x, **probe_kwargs), mostly_dead)


def describe(dead: DeadLayer, step: int) -> str:
  """One line naming the layer, the step and the cause, with what to change."""
  if dead.level == MOSTLY_DEAD:
    return (f"E-I layer {dead.layer} is mostly dead at step {step}: {dead.cause}. Lower "
            f"optim.lr or optim.weight_decay (or restart from an earlier checkpoint)")
  return (f"E-I layer {dead.layer} died at step {step}: {dead.cause}; no information passes it "
          f"and no gradient reaches the layers below. Lower optim.lr or optim.weight_decay (or "
          f"restart from an earlier checkpoint); train.stop_on_dead_layer=False trains on anyway")
