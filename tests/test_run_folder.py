"""Crash-consistent run folders (issue 10): latest and best agree after a kill at any point,
records are never duplicated, one trainer per workdir, atomic files, damaged checkpoints fall
back to readable ones, SIGTERM/SIGINT save and stop cleanly, offline CIFAR-10 start.

Every run is test_reliability's tiny one (12 steps per epoch, 2 epochs, checkpoints every 3
steps), so the persistent compile cache serves every run after the first.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import shutil
import signal
import struct
import subprocess
import sys
import time

import pytest

from ei_snn_jax import data, errors
from ei_snn_jax.data import cifar
from ei_snn_jax.training import checkpointing, metrics, run_config, runfolder, train
from experiments import evaluate as evaluate_cli
from test_reliability import (REPO, TOTAL_STEPS, assert_bitwise_equal, cli_argv,
                              complete_steps, restore, subprocess_env, tiny_config,
                              without_wall_time)


def copy_run(src: pathlib.Path, dst: pathlib.Path) -> pathlib.Path:
  shutil.copytree(src, dst)
  return dst


def best_accuracy_by_evaluate(workdir: pathlib.Path) -> float:
  return evaluate_cli.evaluate_workdir(workdir, "best")["test_accuracy"]


# ---------------------------------------------------------------------------------------------
# Latest and best.
# ---------------------------------------------------------------------------------------------

def test_kill_between_latest_and_best_save_keeps_the_best(tiny_reference_run, tmp_path):
  """latest/N committed, best/N not (the kill window between the two saves): the rerun writes
  best/N from the restored state, and evaluate gives the best accuracy summary.json states."""
  run = copy_run(tiny_reference_run, tmp_path / "run")
  _, meta = restore(run, best=True)
  best_step = meta["best_step"]
  assert best_step in complete_steps(run / "best")
  summary = json.loads((run / "summary.json").read_text())
  # Roll the run back to the moment after latest/best_step was committed: later checkpoints,
  # records and the best checkpoint itself were never written.
  for step in complete_steps(run / "checkpoints"):
    if step > best_step:
      shutil.rmtree(run / "checkpoints" / str(step))
  # latest/best_step as it was committed (the best folder holds the same checkpoint; the run
  # itself may have rotated it out of checkpoints/ since).
  shutil.copytree(tiny_reference_run / "best" / str(best_step),
                  run / "checkpoints" / str(best_step), dirs_exist_ok=True)
  shutil.rmtree(run / "best" / str(best_step))
  (run / "summary.json").unlink()
  train.train_and_evaluate(tiny_config(), run)
  assert complete_steps(run / "best") == [best_step]
  assert best_accuracy_by_evaluate(run) == pytest.approx(summary["best_test_accuracy"])
  assert_bitwise_equal(restore(run, best=True)[0], restore(tiny_reference_run, best=True)[0])


@pytest.mark.parametrize("keep_best", [True, False])
def test_best_newer_than_latest_never_wedges_the_run(tiny_reference_run, tmp_path, keep_best):
  """best/N saved but latest/N lost (or deleted by hand): the rerun retrains from the previous
  checkpoint through step N and finishes, equal to the uninterrupted run (no StepAlreadyExists
  traceback on every rerun)."""
  run = copy_run(tiny_reference_run, tmp_path / "run")
  last = complete_steps(run / "checkpoints")[-1]
  shutil.rmtree(run / "checkpoints" / str(last))
  (run / "summary.json").unlink()
  if not keep_best:
    shutil.rmtree(run / "best")
  summary = train.train_and_evaluate(tiny_config(), run)
  assert summary["finished"] and summary["step"] == TOTAL_STEPS
  # Without best/ (deleted by hand) a best epoch whose checkpoint has rotated out of
  # checkpoints/ cannot come back; the run still finishes equal.
  for best in (False, True) if keep_best else (False,):
    assert_bitwise_equal(restore(run, best=best)[0], restore(tiny_reference_run, best=best)[0])
  assert without_wall_time(metrics.read_metrics(run)) == without_wall_time(
      metrics.read_metrics(tiny_reference_run))


def test_kill_before_the_first_checkpoint_leaves_no_duplicate_records(tiny_reference_run, tmp_path):
  """Records of a run killed before any checkpoint are dropped, not kept beside the rerun's."""
  run = tmp_path / "run"
  run.mkdir()
  shutil.copy(tiny_reference_run / "config.json", run / "config.json")
  early = [r for r in metrics.read_metrics(tiny_reference_run) if r["step"] <= 2]
  (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in early)
                                     + '{"kind": "train", "st')   # torn by the kill
  train.train_and_evaluate(tiny_config(), run)
  assert without_wall_time(metrics.read_metrics(run)) == without_wall_time(
      metrics.read_metrics(tiny_reference_run))


def _tensorboard_pairs(folder: pathlib.Path) -> list[tuple[str, int]]:
  """(tag, step) of every scalar in the TFRecord event files under ``folder``."""
  from tensorboardX.proto import event_pb2
  pairs = []
  for path in sorted(folder.rglob("events.out.tfevents.*")):
    raw = path.read_bytes()
    i = 0
    while i + 12 <= len(raw):
      (length,) = struct.unpack("<Q", raw[i:i + 8])
      event = event_pb2.Event.FromString(raw[i + 12:i + 12 + length])
      i += 12 + length + 4
      pairs += [(v.tag, event.step) for v in event.summary.value]
  return pairs


def test_resume_rewrites_tensorboard_without_duplicates(tmp_path):
  pytest.importorskip("tensorboardX")
  run = tmp_path / "run"
  train.train_and_evaluate(tiny_config(), run, stop_after_steps=8)
  # Records logged after the step-6 checkpoint, as a run killed at step 8 leaves them.
  with open(run / "metrics.jsonl", "a") as f:
    f.write(json.dumps({"kind": "train", "step": 10, "loss": 1.0}) + "\n")
  summary = train.train_and_evaluate(tiny_config(), run)
  assert summary["finished"]
  pairs = _tensorboard_pairs(run / "tensorboard")
  assert pairs and len(pairs) == len(set(pairs)), "a (tag, step) was written twice"
  logged = {(f"{r['kind']}/loss", r["step"]) for r in metrics.read_metrics(run) if "loss" in r}
  assert logged <= set(pairs)


# ---------------------------------------------------------------------------------------------
# Workdir, files, corruption.
# ---------------------------------------------------------------------------------------------

def test_second_trainer_on_a_workdir_is_refused(tmp_path):
  with runfolder.WorkdirLock(tmp_path / "run"):
    with pytest.raises(runfolder.WorkdirError, match=r"is in use by another trainer \(pid "
                       rf"{os.getpid()}\).*use another --workdir"):
      train.train_and_evaluate(tiny_config("train.max_steps=1"), tmp_path / "run")
  assert not (tmp_path / "run" / "checkpoints").exists()
  # Released: the same workdir trains now.
  assert train.train_and_evaluate(tiny_config("train.max_steps=1"), tmp_path / "run")["step"] == 1


def test_atomic_write_leaves_the_old_file_when_the_disk_is_full(tmp_path, monkeypatch):
  path = tmp_path / "config.json"
  runfolder.write_atomic(path, "old")

  def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(os, "replace", full)
  with pytest.raises(runfolder.WorkdirError, match="no space left on the device of .*free disk"):
    runfolder.write_atomic(path, "new")
  assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_unreadable_config_json_without_checkpoints_is_rewritten(tmp_path):
  run = tmp_path / "run"
  run.mkdir()
  (run / "config.json").write_text("")            # what a full disk used to leave
  assert train.train_and_evaluate(tiny_config("train.max_steps=1"), run)["step"] == 1
  assert json.loads((run / "config.json").read_text())["fingerprint"]


def _damage(checkpoint: pathlib.Path, how: str) -> None:
  """Damage one orbax checkpoint folder the ways the fault injection found."""
  state = checkpoint / "state"
  if how == "truncated arrays":
    for f in state.rglob("*"):
      if f.is_file() and f.stat().st_size > 1000:
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
  elif how == "missing metadata":
    (state / "_METADATA").unlink()
  elif how == "garbage metadata":
    (state / "_METADATA").write_bytes(os.urandom(300))
  elif how == "broken meta json":
    for f in (checkpoint / "meta").rglob("*"):
      if f.is_file():
        f.write_text("{not json")


@pytest.mark.parametrize("how", ["truncated arrays", "missing metadata", "garbage metadata",
                                 "broken meta json"])
def test_damaged_latest_checkpoint_falls_back_to_the_previous(tiny_reference_run, tmp_path, how,
                                                              capfd):
  run = copy_run(tiny_reference_run, tmp_path / "run")
  steps = complete_steps(run / "checkpoints")
  _damage(run / "checkpoints" / str(steps[-1]), how)
  state, _ = restore(run)
  assert int(state.step) == steps[-2]
  err = capfd.readouterr().err
  assert f"checkpoint {run / 'checkpoints'}/{steps[-1]} is damaged" in err
  assert f"restoring step {steps[-2]} instead" in err and "another architecture" not in err


def test_every_checkpoint_damaged_is_one_clear_error(tiny_reference_run, tmp_path):
  run = copy_run(tiny_reference_run, tmp_path / "run")
  for step in complete_steps(run / "checkpoints"):
    _damage(run / "checkpoints" / str(step), "missing metadata")
  with pytest.raises(checkpointing.CheckpointCorruptError,
                     match="no readable checkpoint in .*move the folder away"):
    restore(run)


# ---------------------------------------------------------------------------------------------
# Signals.
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGTERM])
def test_signal_saves_a_checkpoint_and_the_rerun_is_bit_exact(tiny_reference_run, tmp_path, signum):
  """SIGTERM (pre-emption) sent from outside mid-run: the step finishes, a checkpoint is saved,
  one line, exit 128 + signal; the rerun continues to the uninterrupted run's exact state and
  records. (SIGINT takes the same handler; tests/test_fault_injection.py sends both.)"""
  run = tmp_path / "run"
  command = [sys.executable, "-m", "experiments.train", *cli_argv(run)]
  with open(tmp_path / "log", "w") as out:
    proc = subprocess.Popen(command, cwd=REPO, env=subprocess_env(), stdout=out,
                            stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.monotonic() + 240
    while not metrics.read_metrics(run, "train"):
      assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "log").read_text()
      time.sleep(0.005)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 128 + signum, err[-2000:]
  lines = [l for l in err.splitlines() if l.strip()]
  assert "Traceback" not in err and len([l for l in lines if l.startswith("error:")]) == 1
  assert lines[-1].startswith(f"error: stopped by {signal.Signals(signum).name} at step ")
  assert lines[-1].endswith("rerun the same command to continue")
  stopped = complete_steps(run / "checkpoints")[-1]
  assert 0 < stopped < TOTAL_STEPS
  rerun = subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True,
                         text=True, timeout=400)
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  for best in (False, True):
    assert_bitwise_equal(restore(run, best=best)[0], restore(tiny_reference_run, best=best)[0])
  assert without_wall_time(metrics.read_metrics(run)) == without_wall_time(
      metrics.read_metrics(tiny_reference_run))


def test_user_error_exit_code():
  assert errors.UserError("x").exit_code == 2
  assert runfolder.TrainingInterrupted("x", signal.SIGTERM).exit_code == 143


# ---------------------------------------------------------------------------------------------
# Offline start.
# ---------------------------------------------------------------------------------------------

def test_auto_source_rebuilds_the_shared_compact_cifar10(tmp_path, monkeypatch, capsys):
  compact = REPO.parent / "shared" / "data" / "cifar10_compact.npz"
  if not compact.exists():
    if os.environ.get("CI") == "true":
      pytest.fail("../shared/data/cifar10_compact.npz is missing in CI")
    pytest.skip("../shared/data/cifar10_compact.npz is not available")
  monkeypatch.chdir(REPO)
  assert cifar.shared_compact_cifar10() == compact.resolve() or (
      cifar.shared_compact_cifar10().samefile(compact))
  cfg = tiny_config().data
  with cfg.unlocked() if hasattr(cfg, "unlocked") else open(os.devnull):
    cfg.source, cfg.name, cfg.cache_dir, cfg.train_subset, cfg.test_subset = (
        "auto", "cifar10", str(tmp_path / "cache"), 64, 32)
  dataset = data.load_dataset(cfg)
  out = capsys.readouterr().out
  assert f"rebuilding CIFAR-10 from {compact.resolve()}" in out or "rebuilding CIFAR-10" in out
  assert f"cifar10 from {tmp_path / 'cache' / 'cifar10.npz'}" in out
  assert dataset.x_train.shape == (64, 32, 32, 3) and dataset.num_classes == 10
  assert (tmp_path / "cache" / "cifar10.npz").is_file()


# ---------------------------------------------------------------------------------------------
# Smaller promises.
# ---------------------------------------------------------------------------------------------

def test_checkpoints_of_another_config_are_refused_without_config_json(tmp_path):
  run = tmp_path / "run"
  train.train_and_evaluate(tiny_config("train.max_steps=3"), run)
  (run / "config.json").unlink()
  with pytest.raises(train.config_lib.ConfigError,
                     match="written by another config .*rerun with the original config"):
    train.train_and_evaluate(tiny_config("optim.lr=0.05"), run)


def test_a_run_saved_before_a_new_option_resumes_while_the_option_keeps_its_default(
    tmp_path, monkeypatch, capsys):
  """Adding an option changes every fingerprint; the runs made before it still resume (the new
  field at its default), and refuse when it is set otherwise or a saved field is unknown."""
  from ei_snn_jax import models
  run = tmp_path / "run"
  train.train_and_evaluate(tiny_config("train.max_steps=3"), run)
  monkeypatch.setitem(models.CONFIG_OPTIONS, "model.new_knob", (1, None, "an option added later"))
  with pytest.raises(train.config_lib.ConfigError, match=r"another config \(.*new_knob"):
    train.train_and_evaluate(tiny_config("train.max_steps=4", "model.new_knob=2"), run)
  capsys.readouterr()
  summary = train.train_and_evaluate(tiny_config("train.max_steps=4"), run)
  assert "resumed from step 3" in capsys.readouterr().out and summary["step"] == 4
  saved = json.loads((run / "config.json").read_text())
  monkeypatch.delitem(models.CONFIG_OPTIONS, "model.new_knob")
  saved["config"]["model"]["old_knob"] = 0           # a field the schema no longer knows
  saved["fingerprint"] = run_config.config_fingerprint(saved["config"])
  (run / "config.json").write_text(json.dumps(saved))
  with pytest.raises(train.config_lib.ConfigError, match="another config"):
    train.train_and_evaluate(tiny_config("train.max_steps=5"), run)


def test_a_continued_max_steps_run_reports_its_final_accuracy(tmp_path):
  run = tmp_path / "run"
  train.train_and_evaluate(tiny_config("train.max_steps=5"), run)
  summary = train.train_and_evaluate(tiny_config(), run)
  last_epoch = metrics.read_metrics(run, "epoch")[-1]
  assert summary["finished"] and summary["final_test_accuracy"] == last_epoch["test_accuracy"]


def test_evaluate_a_multi_host_run_on_one_machine(tiny_reference_run, tmp_path):
  run = copy_run(tiny_reference_run, tmp_path / "run")
  saved = json.loads((run / "config.json").read_text())
  saved["config"]["parallel"].update(distributed=True, coordinator_address="10.0.0.1:1234",
                                     num_processes=2, process_id=1)
  (run / "config.json").write_text(json.dumps(saved))
  result = evaluate_cli.evaluate_workdir(run, "latest")
  assert result["step"] == TOTAL_STEPS
