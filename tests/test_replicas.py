"""Several seeds in one run (issue 6): ``train.num_replicas = N`` vmaps N independent runs.

The claim under test: replica r of an N = 2 run *is* the run of seed ``seed + r`` (same E-I Init
on its own first batch, data order, augmentation), so its losses, metrics and parameters equal a
separate run's within 1e-5 (vmapped convolutions become grouped convolutions, which may sum in
another order).

The separate runs must see the same images as the replicas. Synthetic data is drawn from
``config.seed`` (which differs between the separate runs), so the tiny synthetic set is written
once to an .npz and every run reads it with ``data.source=arrays``.
"""

import json

import jax
import numpy as np
import pytest

from ei_snn_jax.training import checkpointing, config as config_lib, guards, metrics, replicas, train
from ei_snn_jax import data

SEED = 7
TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def synthetic_npz(tmp_path_factory):
  x_train, y_train, x_test, y_test = data.synthetic_arrays(10, 32, 16, seed=0)
  path = tmp_path_factory.mktemp("data") / "synthetic.npz"
  np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
  return path


def tiny_config(npz, *extra):
  """VGG-8 at 1/8 width, T=2, batch 8 on 32 images: 4 steps per epoch, 2 epochs."""
  return config_lib.load_config("configs/default.py:runlocal", [
      "data.source=arrays", f"data.path={npz}", "data.train_subset=0", "data.test_subset=0",
      "model.width_multiplier=0.125", "model.T=2", "train.batch_size=8",
      "train.eval_batch_size=8", "train.epochs=2", "train.max_steps=0",
      "train.progress_bar=False", "train.log_every_steps=2", "train.checkpoint_every_steps=100",
      # vmapped and separate programs round differently; under the reference's 1.9 g_0 first
      # momentum step (spec §7.3) a few near-threshold spikes then flip between the two (measured:
      # 8.5e-5 on conv3's mean balanced current), so vmap equivalence is pinned with the optax
      # first step; the reference first step is pinned by tests/test_optim.py.
      "optim.momentum_first_step=optax",
      "parallel.num_devices=1", f"seed={SEED}", *extra])


def restore(workdir, cfg):
  exp = train.build_experiment(cfg)
  ckpt = checkpointing.Checkpointer(workdir)
  state, meta = ckpt.restore_latest(train.init_state(exp), exp.replicated)
  ckpt.close()
  return jax.device_get(state), meta


def assert_records_close(got, want):
  assert [r["kind"] for r in got] == [r["kind"] for r in want]
  for a, b in zip(got, want):
    assert set(a) == set(b)
    for k in a:
      if k == "wall_time":
        continue
      if isinstance(b[k], float):
        np.testing.assert_allclose(a[k], b[k], err_msg=k, **TOL)
      else:
        assert a[k] == b[k], k


def _interrupted_and_resumed(cfg, workdir):
  """A run stopped mid-epoch 2 and resumed: the stacked state and per-replica records resume
  too. Returns the final summary."""
  part = train.train_and_evaluate(cfg, workdir, stop_after_steps=6)
  assert part["step"] == 6 and not part["finished"]
  done = train.train_and_evaluate(cfg, workdir)
  assert done["finished"] and done["step"] == 8
  return done


@pytest.fixture(scope="module")
def two_replicas(tmp_path_factory, synthetic_npz):
  """(workdir, summary) of the N = 2 run on one device."""
  workdir = tmp_path_factory.mktemp("replicas") / "both"
  return workdir, _interrupted_and_resumed(
      tiny_config(synthetic_npz, "train.num_replicas=2"), workdir)


def test_two_vmapped_replicas_equal_two_separate_runs(tmp_path, synthetic_npz, two_replicas):
  both_cfg = tiny_config(synthetic_npz, "train.num_replicas=2")
  both_dir, both = two_replicas
  stacked, meta = restore(both_dir, both_cfg)
  assert jax.tree.leaves(stacked.params)[0].shape[0] == 2 and stacked.step.shape == ()

  singles = []
  for r in range(2):
    cfg = tiny_config(synthetic_npz, f"seed={SEED + r}")
    singles.append(train.train_and_evaluate(cfg, tmp_path / f"seed{r}"))
    # Same records (losses, accuracies, lr, grad norms, probes, test metrics) ...
    got = metrics.read_metrics(replicas.replica_dir(both_dir, r))
    want = metrics.read_metrics(tmp_path / f"seed{r}")
    assert len([x for x in want if x["kind"] == "train"]) == 4
    assert_records_close(got, want)
    # ... the same config as the separate run, and the same final parameters/optimizer state.
    saved = json.loads((replicas.replica_dir(both_dir, r) / "config.json").read_text())
    assert saved["config"] == json.loads((tmp_path / f"seed{r}" / "config.json").read_text())[
        "config"]
    single_state, _ = restore(tmp_path / f"seed{r}", cfg)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL),
                 replicas.unstack(stacked, r), single_state)

  # The two seeds really differ (otherwise the test above proves nothing), by far more than TOL:
  # their E-I Init draws (W_EE of conv0) and their training (the biases, zero at init).
  a, b = (replicas.unstack(stacked, r).params["conv0"]["ei"] for r in range(2))
  assert np.max(np.abs(a["w_ee"] - b["w_ee"])) > 1e-3
  assert np.max(np.abs(a["bias"] - b["bias"])) > 10 * TOL["atol"]

  # summary.json: each replica's best/final accuracy, and mean +- std over replicas.
  rows = both["replicas"]
  assert [row["seed"] for row in rows] == [SEED, SEED + 1]
  for row, single in zip(rows, singles):
    assert row["best_test_accuracy"] == pytest.approx(single["best_test_accuracy"], abs=1e-6)
    assert row["final_test_accuracy"] == pytest.approx(single["final_test_accuracy"], abs=1e-6)
  finals = [s["final_test_accuracy"] for s in singles]
  assert both["final_test_accuracy_mean"] == pytest.approx(np.mean(finals))
  assert both["final_test_accuracy_std"] == pytest.approx(np.std(finals, ddof=1))
  assert both["final_test_accuracy"] == pytest.approx(np.mean(finals))  # the mean stream's
  assert json.loads((both_dir / "summary.json").read_text())["num_replicas"] == 2
  assert len(meta["replicas"]) == 2

  # The main metrics stream holds the replica means.
  last = metrics.read_metrics(both_dir, "epoch")[-1]
  assert last["replicas"] == 2 and last["test_accuracy"] == pytest.approx(np.mean(finals))


def test_replicas_over_two_devices_equal_the_run_on_one(tmp_path, synthetic_npz, two_replicas):
  """N = 2 on two devices puts one whole replica on each (``replicas_over_devices``, each
  device's step under ``shard_map``, the state split over the devices, also when restored):
  the same records and final state as the N = 2 run on one device."""
  both_dir, _ = two_replicas
  cfg = tiny_config(synthetic_npz, "train.num_replicas=2", "parallel.num_devices=2")
  exp = train.build_experiment(cfg)
  assert exp.replicas_over_devices and exp.mesh.devices.size == 2
  _interrupted_and_resumed(cfg, tmp_path / "split")
  for r in range(2):
    assert_records_close(metrics.read_metrics(replicas.replica_dir(tmp_path / "split", r)),
                         metrics.read_metrics(replicas.replica_dir(both_dir, r)))
  split_state, _ = restore(tmp_path / "split", cfg)
  one_state, _ = restore(both_dir, tiny_config(synthetic_npz, "train.num_replicas=2"))
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), split_state, one_state)


def test_replica_batches_are_each_seeds_own_order():
  cfg = config_lib.load_config("configs/default.py", ["train.num_replicas=3", "seed=11",
                                                      "train.batch_size=7"])
  idx, mask = replicas.batch_indices(cfg, 2, 50, 7)   # the last, padded batch of epoch 2
  assert idx.shape == mask.shape == (3, 7)
  for r in range(3):
    want_idx, want_mask = data.batch_indices(11 + r, 2, 50, 7, 7)
    np.testing.assert_array_equal(idx[r], want_idx)
    np.testing.assert_array_equal(mask[r], want_mask)


def test_a_nonfinite_replica_leaves_every_replica_unchanged_and_is_named():
  """The vmapped NaN guard: replica 1 diverges, so no replica's state moves (the run stops)."""
  import jax.numpy as jnp
  from types import SimpleNamespace

  def step_fn(state, train_x, train_y, idx, mask, seed):
    w = state.params["w"] * jnp.where(seed == 8, jnp.nan, 2.0)       # seed 8 = replica 1
    finite = jnp.all(jnp.isfinite(w))
    new = state.replace(step=state.step + 1, params={"w": w})
    new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, state)
    return new, {"loss": jnp.sum(w), "finite": finite, "bad_leaves": jnp.stack([~finite])}

  state = replicas.stack([train.TrainState(step=jnp.zeros((), jnp.int32),
                                           params={"w": jnp.full(3, float(r + 1))},
                                           batch_stats={}, opt_state=(), sums={})
                          for r in range(2)])
  step = jax.jit(replicas.vmap_train_step(step_fn, [7, 8]))
  idx = mask = jnp.zeros((2, 4), jnp.int32)
  new, m = step(state, None, None, idx, mask)
  assert not bool(m["finite"]) and int(m["bad_replica"]) == 1
  assert m["bad_leaves"].tolist() == [True]
  np.testing.assert_array_equal(new.params["w"], state.params["w"])
  assert int(new.step) == 0
  exp = SimpleNamespace(config=SimpleNamespace(seed=7))
  with pytest.raises(train.NonFiniteError, match=r"in replica 1 \(seed 8\).*params\['w'\]"):
    guards.raise_nonfinite(exp, new, jax.device_get(m), 5)
  # Without the NaN, both replicas advance with their own seed.
  ok, m = jax.jit(replicas.vmap_train_step(step_fn, [7, 9]))(state, None, None, idx, mask)
  assert bool(m["finite"]) and int(m["bad_replica"]) == -1 and int(ok.step) == 1
  np.testing.assert_array_equal(ok.params["w"][:, 0], [2.0, 4.0])
