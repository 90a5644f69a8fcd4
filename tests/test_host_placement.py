"""The host path of ``data.placement`` wired into the training loop (issue 13 item 5).

A run with ``data.placement='host'`` keeps the dataset off the devices and streams each step's
batch through ``data.host_feed`` (test batches too). It must equal the device path: the same
batches in the same order, fed to the same step body (``make_train_step``'s ``batch_step``), so
per-step metrics, final parameters and optimizer state, and test accuracy are compared **bit for
bit**. Both paths run the same XLA operations on the same uint8 rows; only where the gather
happens differs (a host copy vs a gather inside the jitted step), and a gather is exact. Also:
exact resume from a stop and from SIGTERM, 'auto' choosing by size, the feed thread never
outliving a run (finished, NaN guard, SIGTERM), the transfer guard, data-parallel over 8
devices, replicas, and a memory-mapped arrays file (the loaders' ``memory_map``: test_data.py).

The tiny run: VGG-8 at 1/8 width, T=2, 36 synthetic training images in batches of 8 (5 steps per
epoch, the last padded), 20 test images in batches of 8 (the last padded), 2 epochs.
"""

from __future__ import annotations

import os
import signal
import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ei_snn_jax import data as data_lib
from ei_snn_jax.data import host_feed
from ei_snn_jax.training import (batches, checkpointing, config as config_lib, metrics, runfolder,
                                 steps, train)

TINY = ["data.source=synthetic", "data.name=synthetic", "data.synthetic_train_size=36",
        "data.synthetic_test_size=20", "data.train_subset=0", "data.test_subset=0",
        "model.width_multiplier=0.125", "model.T=2", "train.batch_size=8",
        "train.eval_batch_size=8", "train.epochs=2", "train.max_steps=0",
        "train.progress_bar=False", "train.log_every_steps=1", "train.checkpoint_every_steps=100",
        "parallel.num_devices=1", "seed=7"]
TOTAL_STEPS = 10


def tiny_config(*extra):
  return config_lib.load_config("configs/default.py:runlocal", TINY + list(extra))


def feed_threads() -> list[str]:
  return [t.name for t in threading.enumerate() if t.name.startswith("HostBatchFeed")]


def final_state(workdir, cfg):
  """(host TrainState, meta) of the latest checkpoint of ``workdir``."""
  exp = train.build_experiment(cfg)
  ckpt = checkpointing.Checkpointer(workdir)
  try:
    state, meta = ckpt.restore_latest(train.init_state(exp), exp.replicated)
  finally:
    ckpt.close()
  return jax.device_get(state), meta


def without_wall_time(records):
  return [{k: v for k, v in r.items() if k != "wall_time"} for r in records]


def assert_bitwise_equal(a, b):
  leaves_a, tree_a = jax.tree_util.tree_flatten_with_path(a)
  leaves_b, tree_b = jax.tree_util.tree_flatten_with_path(b)
  assert tree_a == tree_b
  for (path, x), (_, y) in zip(leaves_a, leaves_b):
    assert np.asarray(x).tobytes() == np.asarray(y).tobytes(), jax.tree_util.keystr(path)


def wrap_steps(monkeypatch, before_step):
  """``before_step(state)`` runs before every training step of the loop (a pass-through)."""
  real = steps.make_train_step

  def make(exp, source):
    step = real(exp, source)

    def wrapped(state, batch):
      with jax.transfer_guard("allow"):
        state = before_step(state, batch)
      return step(state, batch)

    return wrapped

  monkeypatch.setattr(steps, "make_train_step", make)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The same run on the device path and on the host path: {placement: (workdir, summary)}."""
  out = {}
  for where in ("device", "host"):
    workdir = tmp_path_factory.mktemp(where)
    out[where] = workdir, train.train_and_evaluate(tiny_config(f"data.placement={where}"),
                                                   workdir)
  return out


# ---------------------------------------------------------------------------------------------
# Host path == device path.
# ---------------------------------------------------------------------------------------------

def test_host_path_equals_device_path_bit_for_bit(runs):
  (dev_dir, dev), (host_dir, host) = runs["device"], runs["host"]
  assert dev["finished"] and host["finished"] and host["step"] == TOTAL_STEPS
  dev_records, host_records = metrics.read_metrics(dev_dir), metrics.read_metrics(host_dir)
  assert len([r for r in host_records if r["kind"] == "train"]) == TOTAL_STEPS   # every step
  assert len([r for r in host_records if r["kind"] == "epoch"]) == 2
  assert without_wall_time(host_records) == without_wall_time(dev_records)
  dev_state, _ = final_state(dev_dir, tiny_config("data.placement=device"))
  host_state, _ = final_state(host_dir, tiny_config("data.placement=host"))
  assert int(host_state.step) == TOTAL_STEPS
  assert_bitwise_equal(host_state, dev_state)     # params, batch_stats, opt_state, epoch sums
  assert host["final_test_accuracy"] == dev["final_test_accuracy"]
  assert host["best_test_accuracy"] == dev["best_test_accuracy"]


def test_host_experiment_puts_no_data_on_the_devices_and_says_why(capsys):
  exp = train.build_experiment(tiny_config("data.placement=host"))
  assert exp.from_host and exp.placement.where == "host"
  assert (exp.train_x, exp.train_y, exp.test_x, exp.test_y) == (None,) * 4
  out = capsys.readouterr().out
  assert exp.placement.describe() in out and "data.placement='host'" in out
  exp = train.build_experiment(tiny_config("data.placement=device"))
  assert not exp.from_host and exp.train_x.shape == (36, 32, 32, 3)


def test_evaluate_streams_the_padded_test_set_like_the_device_path():
  host = train.build_experiment(tiny_config("data.placement=host", "train.eval_batch_size=16"))
  device = train.build_experiment(tiny_config("data.placement=device",
                                              "train.eval_batch_size=16"))
  state = train.init_state(device)
  got, want = train.evaluate(host, state), train.evaluate(device, state)
  assert got == want                      # 20 images: batches of 16 and 4 (+ 12 padded rows)
  assert not feed_threads()


def test_both_batch_sources_hand_the_one_step_the_same_batches():
  """The device path's epoch table (row gathered in the step) and the host path's streamed
  batch select the same (replicas, batch, ...) images, labels and mask, across an epoch's end
  and its padded last batch."""
  host = train.build_experiment(tiny_config("data.placement=host"))
  device = train.build_experiment(tiny_config("data.placement=device"))
  table = batches.DeviceBatches(device)
  select = jax.jit(table.select)
  with batches.HostBatches(host, 2, 7) as feed:
    for step in range(2, 7):
      want = feed(step)
      got = select(table(step), jnp.asarray(step, jnp.int32))
      assert want[0].shape[:2] == (1, host.config.train.batch_size)
      for a, b in zip(got, want):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not feed_threads()


# ---------------------------------------------------------------------------------------------
# Resume, stop, failure: exact, and the feed thread never outlives the run.
# ---------------------------------------------------------------------------------------------

def test_host_run_stopped_and_resumed_equals_uninterrupted(runs, tmp_path, monkeypatch, capsys):
  full_dir, full = runs["host"]
  cfg = tiny_config("data.placement=host")
  seen = []
  wrap_steps(monkeypatch, lambda state, args: (seen.append(feed_threads()), state)[1])
  part = train.train_and_evaluate(cfg, tmp_path, stop_after_steps=3)          # mid-epoch 1
  assert part["step"] == 3 and not part["finished"]
  # The feed runs during the loop (at step 0 it still has steps 1, 2 and its end to hand over;
  # a feed that read its last step may end before the loop does).
  assert len(seen) == 3 and seen[0] == ["HostBatchFeed(first_step=0)"]
  assert not feed_threads(), "and is gone after it"
  resumed = train.train_and_evaluate(cfg, tmp_path)
  assert "resumed from step 3" in capsys.readouterr().out
  assert resumed["finished"] and not feed_threads()
  assert without_wall_time(metrics.read_metrics(tmp_path)) == without_wall_time(
      metrics.read_metrics(full_dir))
  assert_bitwise_equal(final_state(tmp_path, cfg)[0], final_state(full_dir, cfg)[0])
  assert resumed["final_test_accuracy"] == full["final_test_accuracy"]


def test_sigterm_stop_closes_the_feed_and_the_rerun_finishes_exactly(runs, tmp_path,
                                                                     monkeypatch):
  full_dir, _ = runs["host"]
  cfg = tiny_config("data.placement=host")

  alive = []

  def sigterm_at_7(state, args):
    if int(jax.device_get(state.step)) == 7:        # mid-epoch 2
      alive.extend(feed_threads())                  # still handing over steps 8, 9
      os.kill(os.getpid(), signal.SIGTERM)
    return state

  wrap_steps(monkeypatch, sigterm_at_7)
  with pytest.raises(runfolder.TrainingInterrupted, match="stopped by SIGTERM at step 8/10"):
    train.train_and_evaluate(cfg, tmp_path)
  assert alive == ["HostBatchFeed(first_step=0)"] and not feed_threads()
  monkeypatch.undo()
  train.train_and_evaluate(cfg, tmp_path)
  assert without_wall_time(metrics.read_metrics(tmp_path)) == without_wall_time(
      metrics.read_metrics(full_dir))
  assert_bitwise_equal(final_state(tmp_path, cfg)[0], final_state(full_dir, cfg)[0])


def test_nan_guard_on_the_host_path_names_the_layer_and_closes_the_feed(tmp_path, monkeypatch,
                                                                        nan_in_layer):
  def poison_at_2(state, args):
    return nan_in_layer(state) if int(jax.device_get(state.step)) == 2 else state

  wrap_steps(monkeypatch, poison_at_2)
  with pytest.raises(train.NonFiniteError, match=r"at step 2 .*first went non-finite in layer "
                                                 r"conv2"):
    train.train_and_evaluate(tiny_config("data.placement=host"), tmp_path)
  assert not feed_threads()


# ---------------------------------------------------------------------------------------------
# The transfer guard: the explicit upload passes, an implicit transfer does not.
# ---------------------------------------------------------------------------------------------

def test_the_guard_is_per_thread_so_the_feeds_uploads_pass_and_implicit_ones_do_not():
  """What lets the host path run under "disallow" (measured on jax 0.10.2): the guard is
  thread-local, and the feed uploads in its own thread. In the guarded thread itself
  ``jax.device_put`` passes (explicit) but ``jax.make_array_from_callback``, which the feed
  uses, counts as implicit and is refused, like any implicit upload."""
  mesh = train.make_mesh(1)
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  x = np.arange(6 * 3, dtype=np.uint8).reshape(6, 3)
  with jax.transfer_guard("disallow"):
    jax.device_put(x, sharding)
    with pytest.raises(Exception, match="(?i)disallowed"):
      jax.make_array_from_callback(x.shape, sharding, lambda i: x[i])
    with pytest.raises(Exception, match="(?i)disallowed"):
      jax.jit(lambda a: a + 1)(np.arange(4))
    with host_feed.training_feed(x, np.arange(6), seed=1, batch_size=4, sharding=sharding,
                                 end_step=3) as feed:
      batches = list(feed)
  assert len(batches) == 3
  idx, _ = data_lib.batch_indices(1, 0, 6, 4, 0)
  np.testing.assert_array_equal(np.asarray(batches[0].images), x[idx])


def test_host_loop_runs_under_disallow_and_catches_implicit_transfers(tmp_path, monkeypatch):
  # The fixture's host run already finished under the default "disallow"; here a step that
  # makes an implicit upload is refused on the host path too.
  real = steps.make_train_step

  def make(exp, source):
    step = real(exp, source)

    def wrapped(state, batch):
      jax.jit(lambda a: a)(np.arange(4, dtype=np.int32))     # implicit, inside the guard
      return step(state, batch)

    return wrapped

  monkeypatch.setattr(steps, "make_train_step", make)
  assert tiny_config().train.transfer_guard == "disallow"
  with pytest.raises(Exception, match="(?i)disallowed"):
    train.train_and_evaluate(tiny_config("data.placement=host"), tmp_path)
  assert not feed_threads()


# ---------------------------------------------------------------------------------------------
# 'auto' and the devices.
# ---------------------------------------------------------------------------------------------

def test_auto_streams_only_what_does_not_fit(capsys):
  nbytes = 36 * 32 * 32 * 3 + 20 * 32 * 32 * 3 + 56 * 4            # uint8 images, int32 labels
  exp = train.build_experiment(tiny_config("data.placement=auto"))    # 16 GB assumed on CPU
  assert exp.placement.dataset_bytes == nbytes
  assert not exp.from_host and exp.train_x is not None
  small = nbytes / 0.25 / 1e9 * 0.99                                 # just too small
  exp = train.build_experiment(tiny_config("data.placement=auto",
                                           f"data.assumed_device_memory_gb={small}"))
  assert exp.from_host and exp.train_x is None
  assert "auto: exceeds 0.25 of the device memory" in capsys.readouterr().out
  exp = train.build_experiment(tiny_config("data.placement=auto",
                                           f"data.assumed_device_memory_gb={small}",
                                           "data.device_memory_fraction=0.5"))
  assert not exp.from_host                                            # fits in half
  exp = train.build_experiment(tiny_config("data.placement=device",
                                           f"data.assumed_device_memory_gb={small}"))
  assert not exp.from_host                                            # forced


def test_host_path_data_parallel_over_8_devices(runs, tmp_path, monkeypatch):
  """8 devices, host path: each step's batch arrives sharded over the 8 devices; the run equals
  the 1-device run within float32 tolerance (the cross-device reductions of the gradients sum
  in another order, as for the device path in test_train)."""
  assert len(jax.devices()) == 8
  shardings = []
  wrap_steps(monkeypatch, lambda state, args: (shardings.append(
      {len(a.sharding.device_set) for a in args}), state)[1])
  cfg = tiny_config("data.placement=host", "parallel.num_devices=8", "train.max_steps=4")
  train.train_and_evaluate(cfg, tmp_path)
  assert shardings and all(s == {8} for s in shardings)
  one = [r for r in metrics.read_metrics(runs["device"][0], "train") if r["step"] <= 4]
  eight = metrics.read_metrics(tmp_path, "train")
  assert [r["step"] for r in eight] == [1, 2, 3, 4]
  for key in ("loss", "accuracy", "grad_norm"):
    np.testing.assert_allclose([r[key] for r in eight], [r[key] for r in one], rtol=1e-5,
                               atol=1e-5, err_msg=key)


def test_replicas_on_the_host_path_equal_the_device_path(tmp_path):
  """Two vmapped seeds: the (2, batch) streamed batches give the device path's records."""
  records = {}
  for where in ("device", "host"):
    cfg = tiny_config(f"data.placement={where}", "train.num_replicas=2", "train.max_steps=2")
    train.train_and_evaluate(cfg, tmp_path / where)
    records[where] = [metrics.read_metrics(tmp_path / where / f"replica_{r}")
                      for r in range(2)]
  assert all(records["host"]) and records["host"][0] != records["host"][1]
  assert [without_wall_time(r) for r in records["host"]] == [
      without_wall_time(r) for r in records["device"]]


# ---------------------------------------------------------------------------------------------
# Memory-mapped caches (the host path reads a dataset larger than RAM batch by batch).
# ---------------------------------------------------------------------------------------------

def is_mapped(a) -> bool:
  while a is not None:
    if isinstance(a, np.memmap):
      return True
    a = a.base
  return False


def test_host_run_keeps_an_arrays_file_mapped(tmp_path):
  x = np.random.default_rng(0).integers(0, 256, (36, 32, 32, 3), dtype=np.uint8)
  y = np.arange(36) % 10
  np.savez(tmp_path / "a.npz", x_train=x, y_train=y, x_test=x[:20], y_test=y[:20])
  cfg = tiny_config("data.placement=host", "data.source=arrays", f"data.path={tmp_path / 'a.npz'}",
                    "data.name=cifar10")
  exp = train.build_experiment(cfg)
  assert exp.from_host and is_mapped(exp.dataset.x_train) and is_mapped(exp.dataset.x_test)
  # The feed reads the mapped rows: the first batch equals the rows of batch_indices.
  idx, mask = data_lib.batch_indices(7, 0, 36, 8, 0)
  with batches.HostBatches(exp, 0, 1) as source:
    got = source(0)                                   # (replicas, batch, ...): replica 0
  np.testing.assert_array_equal(np.asarray(got[0])[0], x[idx])
  np.testing.assert_array_equal(np.asarray(got[2])[0], mask)
  assert not feed_threads()
