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
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from ei_snn_jax import errors
from ei_snn_jax.analysis import probes

SILENT = "silent_shunting_fraction"
ZERO_G_I = "zero_g_i_fraction"
ZERO_GAIN = "zero_shunting_gain_fraction"


class DeadLayerError(errors.UserError):
  """Training stopped because an E-I layer died (see the module docstring)."""


@dataclasses.dataclass(frozen=True)
class DeadLayer:
  """One dead E-I layer and why."""
  layer: str
  silent_shunting_fraction: float
  zero_g_i_fraction: float

  @property
  def cause(self) -> str:
    """The cause in words."""
    if self.zero_g_i_fraction >= 1.0:
      return ("every inhibitory gain g_I is 0, so its shunting current is 0 and the stabilised "
              "denominator is +inf for every sample (I_int = b_E)")
    return ("W_EI g_I is 0 for every excitatory unit, so its shunting current is 0 and the "
            "stabilised denominator is +inf for every sample (I_int = b_E)")


def dead_layers(stats: Mapping[str, Any]) -> list[DeadLayer]:
  """The dead E-I layers of a probe or metrics record ({"<stat>/<layer>": value}): those whose
  shunting current is 0 for every unit whatever the input (a silent layer whose inputs merely
  went quiet is not dead: it can wake up)."""
  out = []
  for layer in probes.layer_names(stats, ZERO_GAIN):
    if float(stats[f"{ZERO_GAIN}/{layer}"]) >= 1.0:
      out.append(DeadLayer(layer, float(stats.get(f"{SILENT}/{layer}", 1.0)),
                           float(stats.get(f"{ZERO_G_I}/{layer}", 0.0))))
  return out


def find_dead_layers(model, variables: Mapping[str, Any], x, **probe_kwargs) -> list[DeadLayer]:
  """The dead E-I layers of any model whose E-I layers are the library's, on the batch ``x``
  (one ``probes.probe`` pass; ``probe_kwargs`` as for it)."""
  return dead_layers(probes.probe(model, variables, x, **probe_kwargs))


def describe(dead: DeadLayer, step: int) -> str:
  """One line naming the layer, the step and the cause, with what to change."""
  return (f"E-I layer {dead.layer} died at step {step}: {dead.cause}; no information passes it "
          f"and no gradient reaches the layers below. Lower optim.lr or optim.weight_decay (or "
          f"restart from an earlier checkpoint); train.stop_on_dead_layer=False trains on anyway")
