"""End-to-end training (issue 3): real-data learning, 8 vs 1 devices, resume, evaluate CLI."""

import json

import jax
import numpy as np
import pytest

from ei_snn_jax.training import config as config_lib, metrics, run_config, train
from experiments import evaluate as evaluate_cli

TINY = ["data.source=synthetic", "data.name=synthetic", "data.synthetic_train_size=96",
        "data.synthetic_test_size=32", "model.width_multiplier=0.125", "model.T=2",
        "train.batch_size=16", "train.eval_batch_size=16", "train.epochs=2", "train.max_steps=0",
        "train.progress_bar=False", "train.log_every_steps=1", "train.checkpoint_every_steps=4"]


def tiny_config(*extra):
  return config_lib.load_config("configs/default.py:runlocal", TINY + list(extra))


def load_params(workdir, template_cfg):
  exp = train.build_experiment(template_cfg)
  ckpt = train.checkpointing.Checkpointer(workdir)
  state, meta = ckpt.restore_latest(train.init_state(exp), exp.replicated)
  ckpt.close()
  return jax.device_get(state), meta


def test_eight_devices_equal_one_device(tmp_path):
  runs = {}
  for n in (1, 8):
    cfg = tiny_config(f"parallel.num_devices={n}", "train.epochs=1")
    train.train_and_evaluate(cfg, tmp_path / f"d{n}")
    runs[n] = (metrics.read_metrics(tmp_path / f"d{n}", "train"),
               load_params(tmp_path / f"d{n}", cfg)[0])
  losses1 = [r["loss"] for r in runs[1][0]]
  losses8 = [r["loss"] for r in runs[8][0]]
  assert len(losses1) == 6
  np.testing.assert_allclose(losses8, losses1, rtol=1e-5, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
               runs[8][1].params, runs[1][1].params)


def test_resume_mid_epoch_equals_uninterrupted_run(tmp_path):
  cfg = tiny_config("parallel.num_devices=1")
  full = train.train_and_evaluate(cfg, tmp_path / "full")
  part = train.train_and_evaluate(cfg, tmp_path / "resumed", stop_after_steps=8)  # mid-epoch 2
  assert part["step"] == 8 and not part["finished"]
  resumed = train.train_and_evaluate(cfg, tmp_path / "resumed")
  assert resumed["finished"] and resumed["step"] == full["step"] == 12
  a, meta_a = load_params(tmp_path / "full", cfg)
  b, meta_b = load_params(tmp_path / "resumed", cfg)
  jax.tree.map(np.testing.assert_array_equal, a, b)
  strip = lambda recs: [{k: v for k, v in r.items() if k != "wall_time"} for r in recs]
  assert strip(metrics.read_metrics(tmp_path / "full")) == strip(
      metrics.read_metrics(tmp_path / "resumed"))
  assert resumed["best_test_accuracy"] == full["best_test_accuracy"]
  # Dale's law holds on the restored parameters.
  from ei_snn_jax.core import dale
  for leaf, constrained in zip(jax.tree.leaves(b.params), jax.tree.leaves(
      dale.constrained_mask(b.params))):
    if constrained:
      assert np.min(leaf) >= 0
  # The evaluate CLI restores the best checkpoint and reproduces its recorded accuracy.
  result = evaluate_cli.evaluate_workdir(tmp_path / "full", "latest")
  last = metrics.read_metrics(tmp_path / "full", "epoch")[-1]
  assert result["step"] == 12
  assert result["test_accuracy"] == pytest.approx(last["test_accuracy"])
  assert json.loads((tmp_path / "full" / "summary.json").read_text())["finished"]


def test_default_config_learns_real_cifar10(tmp_path, cifar10_npz):
  """The quick-start config on a CIFAR-10 subset: loss falls and test accuracy is well above
  chance (the bar is set from a measured run; see the closing note of issue 3)."""
  cfg = config_lib.load_config("configs/default.py", [
      "data.source=arrays", f"data.path={cifar10_npz}", "train.progress_bar=False",
      "parallel.num_devices=1", *REAL_DATA_CUT])
  summary = train.train_and_evaluate(cfg, tmp_path / "real")
  epochs = metrics.read_metrics(tmp_path / "real", "epoch")
  assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
  assert summary["best_test_accuracy"] >= REAL_DATA_BAR


# Measured on this 2-core CPU at 62cdcb1: this cut of configs/default.py (5k train / 1k test
# images, 4 epochs) reaches 20.0 / 23.1 / 25.4 / 27.0 % test accuracy after epochs 1-4 (the run
# is deterministic; 127 s while another training shared the CPU). Chance: 10 %. The earlier cut
# (10k / 2k images, bar 30 %) took 143 s of the CI's 20 minutes.
REAL_DATA_CUT = ["data.train_subset=5000", "data.test_subset=1000", "train.epochs=4",
                 "optim.warmup_epochs=1"]
REAL_DATA_BAR = 0.24


def test_metrics_truncation_drops_later_and_torn_records(tmp_path):
  cfg = tiny_config()
  logger = metrics.MetricsLogger(tmp_path, run_config.config_fingerprint(cfg), cfg)
  for step in (1, 2, 3):
    logger.write("train", {"step": step, "loss": 1.0})
  logger.close()
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"kind": "train", "step": 4, "lo')  # a write torn by SIGKILL
  logger = metrics.MetricsLogger(tmp_path, run_config.config_fingerprint(cfg), cfg)
  logger.truncate_after(2)
  logger.close()
  assert [r["step"] for r in metrics.read_metrics(tmp_path)] == [1, 2]


def test_cifar100_path_trains_on_synthetic_100_class_arrays(tmp_path):
  """No CIFAR-100 copy exists offline: its code path runs on synthetic 100-class data."""
  cfg = config_lib.load_config("configs/ei_cifar100_vgg16.py:runlocal", [
      "data.source=synthetic", "data.synthetic_train_size=64", "data.synthetic_test_size=32",
      "model.arch=vgg8", "model.T=2", "train.eval_batch_size=16", "parallel.num_devices=1",
      "train.progress_bar=False"])
  assert cfg.data.name == "cifar100"
  summary = train.train_and_evaluate(cfg, tmp_path / "c100")
  state, _ = load_params(tmp_path / "c100", cfg)
  head = state.params["head"]["ei"]
  assert head["w_ee"].shape[-1] == 100 and head["w_ie"].shape[-1] == 25  # n_I = 100 // 4
  # The final accuracy is a count of correct 100-way predictions on the 32 test images, and the
  # restored checkpoint reproduces it.
  final = summary["final_test_accuracy"]
  assert final * 32 == round(final * 32)
  assert train.evaluate(train.build_experiment(cfg), state)["test_accuracy"] == final
