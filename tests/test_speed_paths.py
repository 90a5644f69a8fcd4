"""Speed paths (issue 6): each fast path against the plain path, tolerance stated per test.

* time folded into the batch: every stateless op runs on the merged t-major T*B axis; only the
  LIF scans over T. Checked: LIF on the merged input == a per-step loop (exact), and an E-I conv
  on the merged input == per-step convs (1e-6).
* the first layer once for static images (``model.static_input_once``): one full train step
  equals the tiled-input path (loss, params, optimizer state within 1e-5).
* scan unroll (``model.scan_unroll``): rolled (1) and fully unrolled (0) give the same step
  (1e-6; the LIF is elementwise, so only XLA's fusion could change rounding).
* bf16 convolutions (``model.conv_dtype``): the losses of two steps within 1 % of float32.
* no host sync per step: the step's outputs stay device arrays, and the loop's only per-step
  host read is the NaN-guard flag (``device_get`` runs per logging window/epoch, not per step).
* buffer donation: the jitted step deletes the input state's buffers.

Every test uses one tiny config (kept identical to tests/test_replicas.py's, so the compiled
programs are shared through the persistent compilation cache).
"""

import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ei_snn_jax.training import config as config_lib, metrics, train
from ei_snn_jax import data, layers
from ei_snn_jax.core import neurons

TINY = ["data.source=synthetic", "data.name=synthetic", "data.synthetic_train_size=32",
        "data.synthetic_test_size=16", "data.train_subset=0", "data.test_subset=0",
        "model.width_multiplier=0.125", "model.T=2", "train.batch_size=8",
        "train.eval_batch_size=8", "train.epochs=2", "train.max_steps=0",
        "train.progress_bar=False", "train.log_every_steps=2", "train.checkpoint_every_steps=100",
        "parallel.num_devices=1", "seed=7"]


def tiny_config(*extra):
  return config_lib.load_config("configs/default.py:runlocal", TINY + list(extra))


def experiment(*extra):
  return train.build_experiment(tiny_config(*extra))


def run_steps(exp, state, steps=1):
  """``steps`` train steps from a copy of ``state`` (the step donates its input)."""
  state = jax.tree.map(jnp.copy, state)
  step_fn = train.make_train_step(exp)
  c, n = exp.config, len(exp.dataset.x_train)
  losses = []
  for s in range(steps):
    idx, mask = data.batch_indices(c.seed, 0, n, c.train.batch_size, s)
    state, m = step_fn(state, exp.train_x, exp.train_y, idx, mask)
    losses.append(float(m["loss"]))
  return jax.device_get(state), np.array(losses)


def assert_trees_close(a, b, rtol, atol):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol), a, b)


@pytest.fixture(scope="module")
def plain():
  """The default config (static_input_once=True, full unroll, float32): experiment, state."""
  exp = experiment()
  return exp, train.init_state(exp)


# --- time folded into the batch ------------------------------------------------------------


def test_lif_on_merged_time_batch_equals_per_step_loop():
  T, B = 4, 3
  x = jax.random.normal(jax.random.key(0), (T * B, 5, 5, 6)) * 1.5 + 0.8   # t-major merge
  lif = layers.LIF(T)

  @jax.jit
  def merged(x):
    return lif.apply({}, x)

  @jax.jit
  def per_step(x):
    v, out = jnp.zeros_like(x[:B]), []
    for t in range(T):
      v, s = neurons.lif_step(v, x[t * B:(t + 1) * B])
      out.append(s)
    return jnp.concatenate(out)

  np.testing.assert_array_equal(merged(x), per_step(x))          # exact
  assert 0 < float(jnp.mean(merged(x))) < 1
  weights = jnp.arange(x.size, dtype=jnp.float32).reshape(x.shape)
  g_merged = jax.jit(jax.grad(lambda x: jnp.sum(merged(x) * weights)))(x)
  g_step = jax.jit(jax.grad(lambda x: jnp.sum(per_step(x) * weights)))(x)
  np.testing.assert_allclose(g_merged, g_step, rtol=1e-6, atol=1e-6)


def test_ei_conv_on_merged_time_batch_equals_per_step():
  T, B = 3, 2
  x = jax.random.uniform(jax.random.key(1), (T * B, 8, 8, 4))
  conv = layers.EIConv(8)
  variables = jax.jit(conv.init)(jax.random.key(2), x)
  apply = jax.jit(conv.apply)
  merged = apply(variables, x)
  per_step = jnp.concatenate([apply(variables, x[t * B:(t + 1) * B]) for t in range(T)])
  np.testing.assert_allclose(merged, per_step, rtol=1e-6, atol=1e-6)


# --- first layer once for static inputs ----------------------------------------------------


def test_static_input_once_train_step_equals_plain_path(plain):
  exp_fast, state_fast = plain
  exp_plain = experiment("model.static_input_once=False")
  state_plain = train.init_state(exp_plain)
  # E-I Init counts the T copies: the same initial parameters (1e-5).
  assert_trees_close(state_fast.params, state_plain.params, rtol=1e-5, atol=1e-5)
  fast, loss_fast = run_steps(exp_fast, state_fast)
  slow, loss_slow = run_steps(exp_plain, state_plain)
  np.testing.assert_allclose(loss_fast, loss_slow, rtol=1e-5, atol=1e-5)
  assert_trees_close(fast.params, slow.params, rtol=1e-5, atol=1e-5)
  assert_trees_close(fast.opt_state, slow.opt_state, rtol=1e-5, atol=1e-5)


# --- scan unroll ---------------------------------------------------------------------------


def test_rolled_scan_train_step_equals_full_unroll(plain):
  exp_full, state = plain
  exp_rolled = experiment("model.scan_unroll=1")
  full, loss_full = run_steps(exp_full, state)
  rolled, loss_rolled = run_steps(exp_rolled, state)
  np.testing.assert_allclose(loss_rolled, loss_full, rtol=1e-6, atol=1e-6)
  assert_trees_close(rolled.params, full.params, rtol=1e-6, atol=1e-6)


# --- bf16 convolutions ---------------------------------------------------------------------


def test_bfloat16_convolutions_train_step_close_to_float32(plain):
  exp_f32, state = plain
  exp_bf16 = experiment("model.conv_dtype=bfloat16")
  f32, loss_f32 = run_steps(exp_f32, state, steps=2)
  bf16, loss_bf16 = run_steps(exp_bf16, state, steps=2)
  # Loss before and after one update within 1 % (measured: 0.3 %). bf16 keeps 8 mantissa bits
  # and spikes near the threshold may flip, so bit-level agreement is not expected.
  np.testing.assert_allclose(loss_bf16, loss_f32, rtol=1e-2)
  assert all(l.dtype == np.float32 for l in jax.tree.leaves(bf16.params))


# --- no host sync per step; buffer donation ------------------------------------------------


def test_train_step_outputs_are_device_arrays_and_state_is_donated(plain):
  exp, state = plain
  state = jax.tree.map(jnp.copy, state)
  idx, mask = data.batch_indices(exp.config.seed, 0, len(exp.dataset.x_train), 8, 0)
  new_state, step_metrics = train.make_train_step(exp)(state, exp.train_x, exp.train_y, idx, mask)
  assert all(isinstance(x, jax.Array) for x in jax.tree.leaves((new_state, step_metrics)))
  # Donation: every input state buffer was handed to the step (deleted), none copied.
  assert all(x.is_deleted() for x in jax.tree.leaves(state))
  assert not any(x.is_deleted() for x in jax.tree.leaves(new_state))


def test_training_loop_reads_the_host_once_per_window_not_per_step(tmp_path, monkeypatch):
  """``jax.device_get`` from train.py runs per logging window and per epoch, never per step; the
  only per-step host read is ``bool(metrics["finite"])``, the NaN guard, one step behind."""
  calls = []
  real = jax.device_get

  def counting(x):
    if sys._getframe(1).f_globals.get("__name__") == train.__name__:
      calls.append(1)
    return real(x)

  monkeypatch.setattr(jax, "device_get", counting)
  summary = train.train_and_evaluate(tiny_config("train.log_every_steps=100"), tmp_path)
  assert summary["step"] == 8                      # 2 epochs of 4 steps
  assert len(metrics.read_metrics(tmp_path, "train")) == 2
  assert len(calls) == 4                           # per epoch: the metric window + the sums


# --- the benchmark script --------------------------------------------------------------------


def test_benchmark_runs_on_cpu_at_small_batch(tmp_path):
  from experiments import benchmark

  tfds_before = "tensorflow_datasets" in sys.modules
  out = tmp_path / "bench.jsonl"
  argv = ["--model", "vgg8", "--variant", "ei", "--width", "0.125", "--batch", "8", "--T", "2",
          "--steps", "2", "--repeats", "1", "--warmup", "1", "--devices", "1", "--in_process",
          "--out", str(out)]
  assert benchmark.main(argv) == 0
  record = json.loads(out.read_text())
  assert record["command"] == "python -m experiments.benchmark " + " ".join(argv)
  assert (record["device_kind"], record["batch"], record["T"], record["dtype"]) == (
      jax.devices()[0].device_kind, 8, 2, "float32")
  for part in ("snn", "ann"):
    assert record[part]["train_img_s"] > 0 and record[part]["eval_img_s"] > 0
    assert record[part]["train_compile_s"] > 0 and record[part]["finite"]
    assert record[part]["host_rss_peak_bytes"] > 0
    if not tfds_before:
      assert not record[part]["tfds_imported"]
  assert record["snn"]["params"] > record["ann"]["params"]         # the E-I circuit's extras
  assert record["train_ratio_snn_to_ann"] == pytest.approx(
      record["snn"]["train_img_s"] / record["ann"]["train_img_s"])
  if jax.devices()[0].platform == "cpu":
    assert record["snn"]["device_peak_bytes"] is None and "host RSS" in benchmark.markdown_table(
        [record])
