"""Energy estimate (ei_snn_jax.analysis.energy) checked by hand on a small model of the
library's layers, and on the quick-start VGG (static first layer counted once)."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ei_snn_jax import layers, models
from ei_snn_jax.analysis import energy
from ei_snn_jax.training import config as config_lib

T, B = 2, 3


class SpikeNet(nn.Module):
  """EIConv(8) on given spikes -> LIF -> flatten -> EIHead(4)."""

  @nn.compact
  def __call__(self, spikes):                        # (T*B, 4, 4, 2) binary
    s = layers.LIF(T)(layers.EIConv(8)(spikes))
    return layers.EIHead(4)(s.reshape((s.shape[0], -1)))


def test_hand_counted_operations():
  rng = np.random.default_rng(0)
  spikes = jnp.asarray(rng.random((T * B, 4, 4, 2)) < 0.3, jnp.float32)
  model = SpikeNet()
  variables = model.init(jax.random.key(0), spikes)
  rows = energy.estimate(model, variables, spikes, batch_size=B)
  assert [r.name for r in rows] == ["EIConv_0", "EIHead_0"]
  conv, head = rows
  rate = float(np.mean(np.asarray(spikes)))
  # W_EE (3,3,2,8) and W_IE (3,3,2,2) at 16 positions, T rows per example; every op an AC.
  assert conv.spiking_input and conv.input_rate == pytest.approx(rate)
  assert conv.acs == pytest.approx(rate * 3 * 3 * 2 * (8 + 2) * 16 * T)
  # The circuit: W_EI (8 x 2) mixing plus division and gain per output, 16 positions, T rows.
  assert conv.macs == pytest.approx((8 * 2 + 2 * 8) * 16 * T)
  assert conv.ann_macs == 3 * 3 * 2 * 8 * 16           # ANN: W_EE only, one time step
  assert conv.energy_pj == pytest.approx(conv.acs * 0.9 + conv.macs * 4.6)
  # The head: 128 inputs -> 4 E + 1 I units.
  assert head.acs == pytest.approx(head.input_rate * 128 * (4 + 1) * T)
  assert head.ann_macs == 128 * 4
  t = energy.totals(rows)
  assert t["energy_uj"] == pytest.approx(sum(r.energy_pj for r in rows) * 1e-6)
  assert t["snn_over_ann"] == pytest.approx(t["energy_uj"] / t["ann_energy_uj"])
  assert "| **total** |" in energy.markdown_table(rows)


def test_quick_start_vgg_counts_the_static_first_layer_once():
  cfg = config_lib.load_config("configs/default.py", ["model.T=4"])
  model = models.create_model(cfg.model, 10)
  x = jax.random.uniform(jax.random.key(0), (B, 32, 32, 3))
  variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(1), x)
  rows = energy.estimate(model, variables, x, train=False)
  first = rows[0]
  assert not first.spiking_input and first.acs == 0
  n_e = 16                                   # 64 * width 1/4
  ff = 3 * 3 * 3 * (n_e + n_e // 4) * 32 * 32
  assert first.macs == pytest.approx(ff + (n_e * (n_e // 4) + 2 * n_e) * 32 * 32)   # once
  assert all(r.spiking_input for r in rows[1:])   # pooled spikes and spikes count as spikes
  assert energy.totals(rows)["acs"] > 0
