"""Speed paths (issue 6): each fast path against the plain path, tolerance stated per test.

* time folded into the batch: every stateless op runs on the merged B*T axis; only the
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
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ei_snn_jax.training import (actions, batches, config as config_lib, metrics, replicas,
                                 steps as steps_lib, train)
from ei_snn_jax import data, layers
from ei_snn_jax.core import neurons
from test_reliability import subprocess_env

REPO = pathlib.Path(__file__).resolve().parents[1]

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
  """``steps`` train steps from a copy of ``state`` (the step donates its input), in the loop's
  layout (the replica axis first)."""
  state = replicas.to_run_layout(jax.tree.map(jnp.copy, state), exp.num_replicas)
  source = batches.DeviceBatches(exp)
  step_fn = steps_lib.make_train_step(exp, source)
  losses = []
  for s in range(steps):
    state, m = step_fn(state, source(s))
    losses.append(float(m["loss"][0]))
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
  x = jax.random.normal(jax.random.key(0), (B * T, 5, 5, 6)) * 1.5 + 0.8   # row b*T + t
  lif = layers.LIF(T)

  @jax.jit
  def merged(x):
    return lif.apply({}, x)

  @jax.jit
  def per_step(x):
    v, out = jnp.zeros_like(x[:B]), []
    for t in range(T):
      v, s = neurons.lif_step(v, x[t::T])             # the rows of step t
      out.append(s)
    return jnp.stack(out, axis=1).reshape(x.shape)

  np.testing.assert_array_equal(merged(x), per_step(x))          # exact
  assert 0 < float(jnp.mean(merged(x))) < 1
  weights = jnp.arange(x.size, dtype=jnp.float32).reshape(x.shape)
  g_merged = jax.jit(jax.grad(lambda x: jnp.sum(merged(x) * weights)))(x)
  g_step = jax.jit(jax.grad(lambda x: jnp.sum(per_step(x) * weights)))(x)
  np.testing.assert_allclose(g_merged, g_step, rtol=1e-6, atol=1e-6)


def test_lif_layer_takes_the_written_out_backward_only_where_it_applies():
  T, B = 4, 3
  x = jax.random.normal(jax.random.key(3), (T * B, 4, 4, 5)) * 1.5 + 0.8
  weights = jax.random.normal(jax.random.key(4), x.shape)

  def grad_and_jaxpr(neuron, T=T):
    loss = lambda x: jnp.sum(layers.LIF(T, neuron).apply({}, x) * weights)
    return jax.grad(loss)(x), str(jax.make_jaxpr(jax.grad(loss))(x))

  written, jaxpr = grad_and_jaxpr(layers.NeuronOptions())
  assert "scan" not in jaxpr                                         # make_lif_multistep
  rolled, jaxpr = grad_and_jaxpr(layers.NeuronOptions(unroll=1))     # lax.scan, autodiff
  assert "scan" in jaxpr
  np.testing.assert_allclose(written, rolled, rtol=1e-6, atol=1e-6)
  assert np.any(np.asarray(written) != 0)
  # Longer windows than neurons.WRITTEN_OUT_BACKWARD_MAX_T keep autodiff of the scan.
  long_window = neurons.WRITTEN_OUT_BACKWARD_MAX_T + 2
  x = jnp.tile(x[:B], (long_window, 1, 1, 1))
  weights = jnp.tile(weights[:B], (long_window, 1, 1, 1))
  assert "scan" in grad_and_jaxpr(layers.NeuronOptions(), long_window)[1]


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
  state = replicas.to_run_layout(jax.tree.map(jnp.copy, state), exp.num_replicas)
  source = batches.DeviceBatches(exp)
  new_state, step_metrics = steps_lib.make_train_step(exp, source)(state, source(0))
  assert all(isinstance(x, jax.Array) for x in jax.tree.leaves((new_state, step_metrics)))
  # Donation: every input state buffer was handed to the step (deleted), none copied.
  assert all(x.is_deleted() for x in jax.tree.leaves(state))
  assert not any(x.is_deleted() for x in jax.tree.leaves(new_state))


def test_training_loop_reads_the_host_once_per_window_not_per_step(tmp_path, monkeypatch):
  """``jax.device_get`` of metrics from the loop (train.py and its actions) runs per logging
  window and per epoch, never per step; the only per-step host read is the NaN guard's one
  flag (a scalar, one step behind)."""
  calls, flags = [], []
  real = jax.device_get

  def counting(x):
    if sys._getframe(1).f_globals.get("__name__") in (train.__name__, actions.__name__):
      is_flag = isinstance(x, jax.Array) and x.ndim == 0 and x.dtype == jnp.bool_
      (flags if is_flag else calls).append(1)
    return real(x)

  monkeypatch.setattr(jax, "device_get", counting)
  summary = train.train_and_evaluate(tiny_config("train.log_every_steps=100"), tmp_path)
  assert summary["step"] == 8                      # 2 epochs of 4 steps
  assert len(metrics.read_metrics(tmp_path, "train")) == 2
  assert len(calls) == 4                           # per epoch: the metric window + the sums
  assert len(flags) == 8                           # the guard's flag, once per step


def test_steady_state_loop_runs_under_transfer_guard_disallow(tmp_path, monkeypatch):
  """Issue 11: an ordinary step moves no data between host and device. The loop dispatches it
  under ``jax.transfer_guard(train.transfer_guard)`` ("disallow" by default): the epoch's index
  table is uploaded once, the step slices its row on the device, and the NaN guard reads its
  flag explicitly. A run finishes under it, and an implicit transfer inside a step is refused."""
  summary = train.train_and_evaluate(tiny_config("train.log_every_steps=100"), tmp_path / "ok")
  assert summary["finished"] and summary["step"] == 8

  real = steps_lib.make_train_step

  def make(exp, source):
    step = real(exp, source)

    def wrapped(state, batch):
      # Per-step host indices, as the loop fed them before issue 11: an implicit upload. (On
      # XLA:CPU the guard catches host -> device transfers; device -> host reads are free there.)
      jax.jit(lambda a: a)(np.arange(4, dtype=np.int32))
      return step(state, batch)

    return wrapped

  monkeypatch.setattr(steps_lib, "make_train_step", make)
  with pytest.raises(Exception, match="(?i)disallowed"):
    train.train_and_evaluate(tiny_config(), tmp_path / "guarded")
  # The same run with the guard at "allow" goes through.
  summary = train.train_and_evaluate(tiny_config("train.transfer_guard=allow"), tmp_path / "free")
  assert summary["finished"]


def test_epoch_table_step_equals_per_step_indices(plain):
  """The loop's step (its epoch's index table, row = step mod steps per epoch) gives the same
  state and metrics as the step fed that row's (idx, mask)."""
  exp, state = plain
  table = batches.epoch_table(exp, 0)
  assert table[0].shape == (exp.steps_per_epoch, 1, exp.config.train.batch_size)
  for row in range(exp.steps_per_epoch):
    want = data.batch_indices(exp.config.seed, 0, len(exp.dataset.x_train),
                              exp.config.train.batch_size, row)
    np.testing.assert_array_equal(table[0][row, 0], want[0])
    np.testing.assert_array_equal(table[1][row, 0], want[1])
  s1 = replicas.to_run_layout(jax.tree.map(jnp.copy, state), 1).replace(
      step=jnp.asarray(1, jnp.int32))
  s2 = jax.tree.map(jnp.copy, s1)

  class RowFed:
    """A source handing the step row 1's gathered batch itself."""
    shardings = (exp.replica_batch_sharded,) * 3
    select = staticmethod(lambda batch, step: batch)

  idx, mask = table[0][1], table[1][1]                       # (1, batch): replica 0
  row = (exp.train_x[idx], exp.train_y[idx], jnp.asarray(mask))
  source = batches.DeviceBatches(exp)
  a, ma = steps_lib.make_train_step(exp, RowFed())(s1, row)
  b, mb = steps_lib.make_train_step(exp, source)(s2, source(1))
  for x, y in zip(jax.tree.leaves((a, ma)), jax.tree.leaves((b, mb))):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


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


def test_benchmark_records_xla_cost_and_memory_analysis(tmp_path, capsys):
  """--cost_only compiles the train and eval steps of the SNN and its ANN ceiling and records
  XLA's FLOPs, bytes accessed and memory analysis, their SNN/ANN ratios and the cost table."""
  from experiments import benchmark

  out = tmp_path / "cost.jsonl"
  argv = ["--model", "vgg8", "--variant", "ei", "--width", "0.125", "--batch", "4", "--T", "2",
          "--devices", "1", "--in_process", "--cost_only", "--note", "unit test",
          "--nosmall_map_matmul", "--out", str(out)]
  from ei_snn_jax.core import circuit
  before = circuit.SMALL_MAP_POSITIONS
  assert benchmark.main(argv) == 0
  assert circuit.SMALL_MAP_POSITIONS == before              # the switch is not left off
  record = json.loads(out.read_text())
  assert record["small_map_positions"] == 0                  # convolutions, as on a GPU
  for part in ("snn", "ann"):
    for kind in ("train", "eval"):
      assert record[part][f"{kind}_flops"] > 0 and record[part][f"{kind}_bytes_accessed"] > 0
      assert record[part][f"{kind}_temp_bytes"] >= 0 and record[part][f"{kind}_argument_bytes"] > 0
    assert "train_img_s" not in record[part]                      # compile only, no timing
  # The E-I circuit adds the I convolutions and the circuit: more FLOPs and bytes than the ANN.
  assert record["train_flops_ratio_snn_to_ann"] == pytest.approx(
      record["snn"]["train_flops"] / record["ann"]["train_flops"])
  assert record["train_flops_ratio_snn_to_ann"] > 1
  assert record["train_bytes_accessed_ratio_snn_to_ann"] > 1
  table = benchmark.cost_table([record])
  assert "ei-vgg8" in table and "unit test" in table
  assert f"{record['train_bytes_accessed_ratio_snn_to_ann']:.2f}" in table
  assert "train GB/step" in capsys.readouterr().out


def test_benchmark_rounds_give_per_round_ratios_and_their_median():
  """--rounds N: each round's SNN/ANN ratio is taken from its own back-to-back pair, and the
  table shows their median (not the ratio of two medians, nor the first round's)."""
  from experiments import benchmark

  rounds = [{"snn": {"train_img_s": 4.0, "eval_img_s": 10.0},
             "ann": {"train_img_s": 5.0, "eval_img_s": 20.0}},
            {"snn": {"train_img_s": 2.0, "eval_img_s": 9.0},        # a disturbed round
             "ann": {"train_img_s": 4.0, "eval_img_s": 10.0}},
            {"snn": {"train_img_s": 3.0, "eval_img_s": 8.0},
             "ann": {"train_img_s": 3.0, "eval_img_s": 16.0}}]
  summary = benchmark.rounds_summary(rounds)
  assert summary["train_ratio_snn_to_ann_rounds"] == [0.8, 0.5, 1.0]
  assert summary["train_ratio_snn_to_ann_median"] == 0.8
  assert summary["eval_ratio_snn_to_ann_median"] == 0.5
  record = {"name": "ei-vgg16", "device_kind": "cpu", "num_devices": 1, "batch": 8, "T": 4,
            "dtype": "float32", "replicas": 1, "snn": {}, "ann": {},
            "train_ratio_snn_to_ann": 0.8, **summary}
  assert summary["rounds_median"]["snn"]["train_img_s"] == 3.0
  table = benchmark.markdown_table([record])
  assert "0.80 (median of 3)" in table
  assert "| 3.0 | 9.0 |" in table                    # the SNN's median img/s, not round 1's
  # Without an ANN part there is no ratio to summarise.
  assert "train_ratio_snn_to_ann_median" not in benchmark.rounds_summary(
      [{"snn": {"train_img_s": 1.0}}])


def test_training_step_returns_no_layer_statistics_and_the_probe_step_does(plain):
  """Issue 11: the per-layer probe reductions are off the hot path. The step's metrics are the
  scalars of the loop; ``make_probe_step`` returns the layer statistics of the same forward pass
  (same batch, same augmentation key) as a step that records them in-line."""
  exp, state = plain
  idx, mask = data.batch_indices(exp.config.seed, 0, len(exp.dataset.x_train), 8, 0)
  source = batches.DeviceBatches(exp)
  run_state = replicas.to_run_layout(state, exp.num_replicas)
  stats = {k: v[0] for k, v in
           steps_lib.make_probe_step(exp, source)(run_state, source(0)).items()}
  assert any(k.startswith("firing_rate/") for k in stats) and any(
      k.startswith("integrated_mean/") for k in stats)
  # The same numbers as probing the model on the step's augmented batch directly.
  from ei_snn_jax.analysis import probes
  c = exp.config
  x, _, dropout_key = steps_lib.training_input(exp, state.step, exp.train_x[idx],
                                               exp.train_y[idx], c.seed)
  _, new_vars = jax.jit(lambda p, x, k: exp.model.apply(
      {"params": p}, x, train=True, mutable=["probes"], rngs={"dropout": k}))(
          state.params, x, dropout_key)
  want = probes.probe_summary(new_vars["probes"])
  assert set(want) == set(stats)
  for key in want:
    np.testing.assert_allclose(np.asarray(stats[key]), np.asarray(want[key]), rtol=1e-5,
                               atol=1e-6, err_msg=key)
  _, step_metrics = steps_lib.make_train_step(exp, source)(jax.tree.map(jnp.copy, run_state),
                                                          source(0))
  assert set(step_metrics) == {"loss", "accuracy", "lr", "grad_norm", "finite", "bad_leaves",
                               "bad_replica"}


def test_benchmark_without_cpu_graph_fusion_counts_every_activation(tmp_path):
  """--nocpu_graph_fusion: each part runs in a fresh process with XLA_FLAGS keeping one library
  call per convolution, recorded in the JSONL, and the ANN ceiling's eval step then reports more
  bytes than with XLA's default graph fusion (where its whole forward pass is one call whose
  activations the cost analysis does not count); refused in a process whose backend started."""
  from experiments import benchmark
  from ei_snn_jax.training.config import ConfigError

  common = ["--model", "vgg8", "--variant", "ei", "--width", "0.125", "--batch", "4", "--T", "2",
            "--devices", "1", "--cost_only", "--nosmall_map_matmul"]
  default_out, off_out = tmp_path / "default.jsonl", tmp_path / "off.jsonl"
  assert benchmark.main([*common, "--in_process", "--out", str(default_out)]) == 0
  proc = subprocess.run([sys.executable, "-m", "experiments.benchmark", *common,
                         "--nocpu_graph_fusion", "--out", str(off_out)], cwd=REPO,
                        capture_output=True, text=True, env=subprocess_env())
  assert proc.returncode == 0, proc.stderr[-2000:]
  default, off = json.loads(default_out.read_text()), json.loads(off_out.read_text())
  assert off["compile_cache"] == default["compile_cache"] is not None   # --cost_only reuses it
  assert benchmark.NO_CPU_GRAPH_FUSION in off["xla_flags"]
  assert benchmark.NO_CPU_GRAPH_FUSION not in default["xla_flags"]
  assert off["ann"]["eval_bytes_accessed"] > 1.5 * default["ann"]["eval_bytes_accessed"]
  assert off["ann"]["eval_flops"] == pytest.approx(default["ann"]["eval_flops"],
                                                   rel=0.01)      # the same computation
  with pytest.raises(ConfigError, match="drop --in_process"):
    benchmark.parse_args([*common, "--nocpu_graph_fusion", "--in_process"])
