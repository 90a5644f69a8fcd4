"""LIF neuron and surrogate spikes (spec §5) on hand-computed sequences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ei_snn_jax.core import neurons


def test_lif_hand_computed_sequence():
  # H1 = .6; H2 = .3+.6 = .9; H3 = .45+.6 = 1.05 -> spike, V3 = .05; H4 = .025+1 -> spike.
  x = jnp.array([0.6, 0.6, 0.6, 1.0])
  s = neurons.lif_multistep(x)
  np.testing.assert_array_equal(s, [0, 0, 1, 1])


def test_lif_fires_exactly_at_threshold():
  # H1 = 0.5, H2 = 0.25 + 0.75 = 1.0 exactly (binary fractions): fires because S = (H >= theta).
  np.testing.assert_array_equal(neurons.lif_multistep(jnp.array([0.5, 0.75])), [0, 1])
  np.testing.assert_array_equal(neurons.lif_multistep(jnp.array([1.0, 0.0])), [1, 0])
  np.testing.assert_array_equal(neurons.lif_multistep(jnp.array([0.99999, 0.0])), [0, 0])


def test_soft_reset_keeps_the_excess():
  # H1 = 2.5 -> spike, V1 = 1.5; H2 = .75 + 0 -> no spike; H3 = .375 + .7 = 1.075 -> spike.
  np.testing.assert_array_equal(neurons.lif_multistep(jnp.array([2.5, 0.0, 0.7])), [1, 0, 1])


def test_single_step_equals_multistep():
  x = jax.random.normal(jax.random.key(0), (6, 3, 5)) + 0.5
  multi = neurons.lif_multistep(x, unroll=1)
  v = jnp.zeros((3, 5))
  outs = []
  for t in range(6):
    v, s = neurons.lif_step(v, x[t])
    outs.append(s)
  np.testing.assert_array_equal(multi, jnp.stack(outs))
  np.testing.assert_array_equal(multi, neurons.lif_multistep(x, unroll=True))


def test_sigmoid_surrogate_values():
  spike = neurons.make_spike_fn("sigmoid", 4.0)
  g = jax.grad(lambda u: jnp.sum(spike(u)))(jnp.array([0.0, 0.5, -1.0]))
  sig = lambda z: 1 / (1 + np.exp(-z))
  want = [4 * sig(4 * u) * (1 - sig(4 * u)) for u in (0.0, 0.5, -1.0)]
  np.testing.assert_allclose(g, want, rtol=1e-6)
  assert float(g[0]) == pytest.approx(1.0)


@pytest.mark.parametrize("name", sorted(neurons.SURROGATES))
def test_surrogates_peak_at_threshold_and_decay(name):
  spike = neurons.make_spike_fn(name, 2.0)
  u = jnp.array([0.0, 0.3, -0.3, 2.0])
  np.testing.assert_array_equal(spike(u), [1, 1, 0, 1])
  g = jax.grad(lambda v: jnp.sum(spike(v)))(u)
  assert g[0] >= g[1] and g[0] >= g[3] and g[0] > 0
  np.testing.assert_allclose(g[1], g[2], rtol=1e-6)


def test_atan_surrogate_value():
  spike = neurons.make_spike_fn("atan", 2.0)
  g = jax.grad(lambda v: jnp.sum(spike(v)))(jnp.array([0.25]))
  np.testing.assert_allclose(g, [1.0 / (1 + (np.pi / 2 * 2 * 0.25) ** 2)], rtol=1e-6)


def test_unknown_surrogate_is_a_clear_error():
  with pytest.raises(ValueError, match="unknown surrogate"):
    neurons.make_spike_fn("relu")


def test_gradient_through_time_with_detached_reset():
  # x = (1.2, 0.3): S1 = 1, V1 = 0.2 (reset detached), H2 = 0.1 + 0.3 = 0.4.
  # dS2/dx1 = sg'(H2 - 1) * dH2/dV1 * dV1/dH1 = sg'(-0.6) * 0.5 * 1 (no reset term).
  x = jnp.array([1.2, 0.3])
  g = jax.grad(lambda v: neurons.lif_multistep(v)[1])(x)
  sig = lambda z: 1 / (1 + np.exp(-z))
  d = 4 * sig(4 * -0.6) * (1 - sig(4 * -0.6))
  np.testing.assert_allclose(g, [0.5 * d, d], rtol=1e-5)


def test_split_and_merge_time_are_sample_major():
  """Row b*T + t of the merged axis is sample b at step t (a device's block of samples keeps its
  own rows, issue 21)."""
  x = jnp.arange(12.0).reshape(6, 2)                  # B = 2 samples, T = 3 steps
  s = neurons.split_time(x, 3)
  assert s.shape == (3, 2, 2)
  np.testing.assert_array_equal(s[1, 0], x[1])        # t = 1, b = 0: row 0*3 + 1
  np.testing.assert_array_equal(s[2, 1], x[5])        # t = 2, b = 1: row 1*3 + 2
  np.testing.assert_array_equal(neurons.merge_time(s), x)
  np.testing.assert_array_equal(neurons.tile_time(x[:2], 3),
                                neurons.merge_time(jnp.broadcast_to(x[:2], (3, 2, 2))))
  np.testing.assert_array_equal(neurons.mean_over_time(x, 3), jnp.mean(s, axis=0))
  with pytest.raises(ValueError, match="not divisible"):
    neurons.split_time(x, 4)


def test_scan_returns_the_final_state_and_streams_exactly():
  """Chunks of a stream continued from the returned state equal one scan over the whole."""
  x = jax.random.normal(jax.random.key(3), (6, 5)) * 1.5
  v_end, whole = neurons.lif_scan(neurons.lif_initial_state(x[0]), x)
  v, first = neurons.lif_scan(neurons.lif_initial_state(x[0]), x[:2])
  v, second = neurons.lif_scan(v, x[2:])
  np.testing.assert_array_equal(np.concatenate([first, second]), whole)
  np.testing.assert_array_equal(v, v_end)
  v, steps = neurons.lif_initial_state(x[0]), []
  for t in range(6):
    v, s = neurons.lif_step(v, x[t])
    steps.append(s)
  np.testing.assert_array_equal(np.stack(steps), whole)


def test_any_callable_surrogate_and_learnable_tau_and_threshold():
  laplace = lambda u, a: a / 2 * jnp.exp(-a * jnp.abs(u))
  spike = neurons.make_spike_fn(laplace, 2.0)
  u = jnp.array([-1.0, 0.0, 0.5])
  np.testing.assert_array_equal(spike(u), [0.0, 1.0, 1.0])
  np.testing.assert_allclose(jax.grad(lambda u: spike(u).sum())(u), laplace(u, 2.0), rtol=1e-6)
  with pytest.raises(ValueError, match="or pass a function"):
    neurons.make_spike_fn("laplace")
  x = jnp.full((4, 3), 0.6)

  def loss(tau, threshold):
    return neurons.lif_multistep(x, tau=tau, threshold=threshold, spike_fn=spike).sum()

  g_tau, g_theta = jax.grad(loss, argnums=(0, 1))(jnp.float32(2.0), jnp.float32(1.0))
  assert np.isfinite(g_tau) and g_tau != 0 and np.isfinite(g_theta) and g_theta < 0


@pytest.mark.parametrize("surrogate", sorted(neurons.SURROGATES))
@pytest.mark.parametrize("T", [1, 2, 4])
def test_written_out_backward_equals_autodiff_of_the_scan(surrogate, T):
  # Currents on the threshold, above and below; tau 2 and 3 (lambda 1/2 and 2/3).
  for tau in (2.0, 3.0):
    with jax.enable_x64(True):
      x = jax.random.normal(jax.random.key(T), (T, 5, 7), jnp.float64) * 1.5
      x = x.at[0, 0, :3].set(1.0)
      w = jax.random.normal(jax.random.key(9), x.shape, jnp.float64)
      spike = neurons.make_spike_fn(surrogate, 3.0)
      written = neurons.make_lif_multistep(tau, 1.0, surrogate, 3.0)
      np.testing.assert_array_equal(written(x),
                                    neurons.lif_multistep(x, tau=tau, spike_fn=spike))

      def loss(lif, x):
        return jnp.sum(lif(x) * w)

      g_auto = jax.grad(lambda x: loss(lambda x: neurons.lif_multistep(x, tau=tau,
                                                                         spike_fn=spike), x))(x)
      g_written = jax.grad(lambda x: loss(written, x))(x)
      assert np.any(g_auto != 0)
      np.testing.assert_allclose(g_written, g_auto, rtol=1e-12, atol=1e-12)


def test_written_out_backward_in_float32_and_bfloat16_keeps_the_dtype():
  x = jax.random.normal(jax.random.key(0), (4, 3, 8)) * 2
  written = neurons.make_lif_multistep()
  g32 = jax.grad(lambda x: jnp.sum(written(x) * jnp.arange(8.0)))(x)
  auto = jax.grad(lambda x: jnp.sum(neurons.lif_multistep(x) * jnp.arange(8.0)))(x)
  np.testing.assert_allclose(g32, auto, rtol=1e-6, atol=1e-6)
  xb = x.astype(jnp.bfloat16)
  gb = jax.grad(lambda x: jnp.sum(written(x).astype(jnp.float32)))(xb)
  assert written(xb).dtype == jnp.bfloat16 and gb.dtype == jnp.bfloat16


def test_written_out_lif_on_the_merged_axis_view_equals_the_leading_time_axis():
  """``make_lif_multistep(time_axis=1)`` on x (B, T, ...), the merged B*T axis as it lies in
  memory, gives the spikes and gradient of the (T, B, ...) form, in forward and reverse mode."""
  x = jax.random.normal(jax.random.key(7), (3, 4, 5)) * 1.5 + 0.8      # (B, T, C)
  w = jax.random.normal(jax.random.key(8), x.shape)
  lead, view = neurons.make_lif_multistep(), neurons.make_lif_multistep(time_axis=1)
  as_lead = lambda v: jnp.swapaxes(lead(jnp.swapaxes(v, 0, 1)), 0, 1)
  np.testing.assert_array_equal(view(x), as_lead(x))
  assert 0 < float(jnp.mean(view(x))) < 1
  g_view = jax.grad(lambda v: jnp.sum(view(v) * w))(x)
  g_lead = jax.grad(lambda v: jnp.sum(as_lead(v) * w))(x)
  np.testing.assert_allclose(g_view, g_lead, rtol=1e-6, atol=1e-6)
  _, t_view = jax.jvp(view, (x,), (w,))
  _, t_lead = jax.jvp(as_lead, (x,), (w,))
  np.testing.assert_allclose(t_view, t_lead, rtol=1e-6, atol=1e-6)
  with pytest.raises(ValueError, match="time_axis"):
    neurons.make_lif_multistep(time_axis=2)


@pytest.mark.parametrize("time_axis", [0, 1])
@pytest.mark.parametrize("steps", [1, 2, 4, 6])
def test_discounted_sums_written_out_equals_the_matmul(time_axis, steps):
  """The LIF's discounted sums over time, sum_{j <= t} lambda^(t - j) dx_j, computed both ways
  ``neurons.discounted_sums`` chooses between (written out over the time slices for a GPU or
  TPU, a T x T matmul for the CPU), forward and transposed (the backward pass's reverse sums),
  against the definition in float64."""
  rng = np.random.default_rng(steps)
  shape = (steps, 3, 5) if time_axis == 0 else (3, steps, 5)
  decay = 0.6
  with jax.enable_x64(True):
    dx = jnp.asarray(rng.normal(size=shape))
    ct = jnp.asarray(rng.normal(size=shape))
    moved = np.moveaxis(np.asarray(dx), time_axis, 0)
    want = np.moveaxis(np.stack([sum(decay ** (t - j) * moved[j] for j in range(t + 1))
                                 for t in range(steps)]), 0, time_axis)
    for fn in (neurons._discounted_sums_written_out, neurons._discounted_sums_matmul,
               neurons.discounted_sums):
      got, transpose = jax.vjp(lambda d: fn(d, decay, time_axis), dx)
      np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
      ct_moved = np.moveaxis(np.asarray(ct), time_axis, 0)
      want_t = np.moveaxis(np.stack([sum(decay ** (k - t) * ct_moved[k]
                                         for k in range(t, steps)) for t in range(steps)]),
                           0, time_axis)
      np.testing.assert_allclose(transpose(ct)[0], want_t, rtol=1e-12, atol=1e-12)
