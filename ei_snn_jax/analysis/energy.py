"""Synaptic operations and energy of a spiking network from its measured firing rates.

The estimate SNN papers report next to accuracy (the convention of Rathi & Roy and of the
SEW-ResNet / Spikformer line of work): an operation driven by a binary spike is an accumulate
(AC), one driven by an analog value a multiply-accumulate (MAC); energy is
``E = N_AC · e_AC + N_MAC · e_MAC`` with the 45 nm CMOS figures of Horowitz (ISSCC 2014),
e_AC = 0.9 pJ and e_MAC = 4.6 pJ (32-bit float add and multiply-add), as defaults.

Counted per example (all T time steps), layer by layer, from one forward pass:

* feed-forward weights (W_EE and W_IE of an E-I layer, W_EX / W_IX of a DANN layer, a plain
  kernel): ``ops = fan_in · outputs`` per input row; with spike input each op happens once per
  spike, so ``N_AC = spikes per input · ops`` (spikes, their sums in SEW ADD connections and
  2x2 averages of spikes all count spikes, see ``SPIKE_QUANTA``); with analog input (the first
  layer of a static image) all of them are MACs. A first layer computed once for T repeated
  images counts once.
* the E-I circuit's own arithmetic is analog: the lateral inhibition W_EI·I_IE (n_E·n_I per
  position) and the divisive step (a division and a gain per output) are MACs.
* the ANN reference is the same layer layout without inhibitory units, one time step, all MACs
  (``fan_in · n_E`` per position).

``estimate(model, variables, x)`` intercepts every layer call of any Linen model (the library's
or a user's): a layer counts when it owns feed-forward weights with one of ``FEEDFORWARD``'s
names.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jnp.ndarray

PJ_PER_AC = 0.9    # 45 nm, 32-bit float add (Horowitz, ISSCC 2014)
PJ_PER_MAC = 4.6   # 45 nm, 32-bit float multiply (3.7 pJ) + add (0.9 pJ)

# Parameter names of feed-forward weights (E-I: W_EE, W_IE; DANN: W_EX, W_IX; plain: kernel).
FEEDFORWARD = ("w_ee", "w_ie", "w_ex", "w_ix", "kernel")
EXCITATORY = ("w_ee", "w_ex", "kernel")   # the weights an ANN of the same layout keeps
LATERAL = "w_ei"                          # I -> E mixing, applied to analog currents
# An input x is spike-driven when x * q counts spikes for one of these q: 1 (spikes, and their
# sums in SEW-ResNet's ADD connections) or 4 (a 2x2 average pool of spikes, whose 1/4 folds
# into the next weights). Its spikes per input position are mean(x * q).
SPIKE_QUANTA = (1, 4)


@dataclasses.dataclass(frozen=True)
class LayerEnergy:
  """Operations and energy of one layer per example (all time steps)."""
  name: str
  spiking_input: bool        # binary input: feed-forward ops are accumulates
  input_rate: float          # spikes per input value and time step (1.0 for analog input)
  acs: float
  macs: float
  ann_macs: float            # the same layer in an ANN (no I units, one time step)
  energy_pj: float
  ann_energy_pj: float


def _layer_ops(params: dict, x: Array, y: Array, batch: int) -> tuple[float, float, float, bool,
                                                                       float]:
  """(feed-forward ops, E-I circuit MACs, ANN MACs, spiking input, rate) of one layer call."""
  x = np.asarray(jax.device_get(x), np.float32)
  rows_in = x.shape[0]
  positions = int(np.prod(y.shape[1:-1])) if y.ndim > 2 else 1
  ff = ann = 0.0
  for name in FEEDFORWARD:
    if name in params:
      w = params[name]
      per_position = math.prod(w.shape)       # fan_in * outputs (conv: k*k*C_in*C_out)
      ff += per_position * positions * rows_in / batch
      if name in EXCITATORY:
        ann += per_position * positions          # one time step
  circuit = 0.0
  if LATERAL in params:
    n_e, n_i = params[LATERAL].shape[-2:]
    circuit = (n_e * n_i + 2 * n_e) * positions * rows_in / batch
  for quantum in SPIKE_QUANTA:   # spikes, sums of spikes (SEW ADD), 2x2 averages of spikes
    counts = x * quantum
    if np.all(counts >= 0) and np.all(counts == np.round(counts)):
      return ff, circuit, ann, True, float(np.mean(counts))
  return ff, circuit, ann, False, 1.0


def estimate(model: nn.Module, variables: Any, x: Any, *, batch_size: int | None = None,
             pj_per_ac: float = PJ_PER_AC, pj_per_mac: float = PJ_PER_MAC,
             **apply_kwargs) -> list[LayerEnergy]:
  """Per-layer operations and energy of ``model`` on the input batch ``x`` (per example).

  ``batch_size``: examples in ``x`` (default ``x.shape[0]``; give it when the model takes a
  merged ``(B*T, ...)`` input). ``apply_kwargs`` go to ``model.apply`` (e.g. ``train=False``).
  """
  batch = batch_size or jax.tree.leaves(x)[0].shape[0]
  calls: list[tuple[str, dict, Any, Any]] = []

  def interceptor(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    module = context.module
    if context.method_name != "__call__" or not any(module.has_variable("params", n)
                                                     for n in FEEDFORWARD):
      return out
    params = {k: v for k, v in module.variables.get("params", {}).items()
              if not isinstance(v, dict)}
    if args and hasattr(args[0], "shape") and hasattr(out, "shape"):
      calls.append(("/".join(module.path), params, args[0], out))
    return out

  def forward(variables, x):
    calls.clear()
    with nn.intercept_methods(interceptor):
      model.apply(variables, x, **apply_kwargs)
    return [call[1:] for call in calls]

  # One compiled forward pass that returns each layer's weights, input and output (op by op,
  # the pass was hundreds of small compiles).
  values = jax.jit(forward)(variables, x)
  rows = []
  for (name, *_), (params, inputs, out) in zip(calls, values):
    ff, circuit, ann, binary, rate = _layer_ops(params, inputs, out, batch)
    acs = rate * ff if binary else 0.0
    macs = circuit + (0.0 if binary else ff)
    rows.append(LayerEnergy(name=name, spiking_input=binary, input_rate=rate, acs=acs, macs=macs,
                            ann_macs=ann, energy_pj=acs * pj_per_ac + macs * pj_per_mac,
                            ann_energy_pj=ann * pj_per_mac))
  return rows


def totals(rows: Sequence[LayerEnergy]) -> dict[str, float]:
  """Sums over layers: ACs, MACs, energy (µJ) of the SNN and of its ANN, and their ratio."""
  snn = sum(r.energy_pj for r in rows)
  ann = sum(r.ann_energy_pj for r in rows)
  return {"acs": sum(r.acs for r in rows), "macs": sum(r.macs for r in rows),
          "ann_macs": sum(r.ann_macs for r in rows), "energy_uj": snn * 1e-6,
          "ann_energy_uj": ann * 1e-6, "snn_over_ann": snn / ann if ann else float("nan")}


def markdown_table(rows: Sequence[LayerEnergy]) -> str:
  """The per-layer table and the totals as Markdown (for analyze and report)."""
  lines = ["| layer | input | spikes/input | ACs (M) | MACs (M) | energy (µJ) | ANN MACs (M) | ANN (µJ) |",
           "|---|---|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(f"| {r.name} | {'spikes' if r.spiking_input else 'analog'} | "
                 f"{r.input_rate:.3f} | {r.acs / 1e6:.2f} | {r.macs / 1e6:.2f} | "
                 f"{r.energy_pj * 1e-6:.3f} | {r.ann_macs / 1e6:.2f} | "
                 f"{r.ann_energy_pj * 1e-6:.3f} |")
  t = totals(rows)
  lines.append(f"| **total** | | | {t['acs'] / 1e6:.2f} | {t['macs'] / 1e6:.2f} | "
               f"{t['energy_uj']:.3f} | {t['ann_macs'] / 1e6:.2f} | {t['ann_energy_uj']:.3f} |")
  lines.append("")
  lines.append(f"SNN / ANN energy: {t['snn_over_ann']:.3f} (e_AC = {PJ_PER_AC} pJ, e_MAC = "
               f"{PJ_PER_MAC} pJ, 45 nm; Horowitz, ISSCC 2014).")
  return "\n".join(lines)

