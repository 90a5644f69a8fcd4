"""Multi-host training proven on this machine (issue 10): two processes (2 CPU devices each,
gloo collectives over loopback) train the tiny run, are SIGKILLed mid-run by PID, resume and
finish equal (float tolerance) to one process with the same global batch; the run then
evaluates and analyses on one host."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from ei_snn_jax.training import metrics, train
from experiments import analyze, evaluate as evaluate_cli
from test_reliability import (REPO, TOTAL_STEPS, cli_argv, complete_steps, restore,
                              subprocess_env, tiny_config)

TIMEOUT_S = 420


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def launch(workdir, port: int, log_dir) -> list[subprocess.Popen]:
  """Both processes of the 2-host run (each sees 2 CPU devices)."""
  procs = []
  for rank in (0, 1):
    env = subprocess_env()
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    argv = cli_argv(workdir, "parallel.distributed=True",
                    f"parallel.coordinator_address=127.0.0.1:{port}",
                    "parallel.num_processes=2", f"parallel.process_id={rank}")
    out = open(log_dir / f"rank{rank}.log", "w")
    procs.append(subprocess.Popen([sys.executable, "-m", "experiments.train", *argv], cwd=REPO,
                                  env=env, stdout=out, stderr=subprocess.STDOUT))
  return procs


def kill_all(procs) -> None:
  for p in procs:
    if p.poll() is None:
      os.kill(p.pid, signal.SIGKILL)
  for p in procs:
    p.wait(timeout=60)


def logs(log_dir) -> str:
  return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(log_dir.iterdir()))


def test_two_processes_killed_and_resumed_equal_one_process(tmp_path):
  workdir, log_dir = tmp_path / "run", tmp_path / "logs"
  log_dir.mkdir()
  procs = launch(workdir, free_port(), log_dir)
  try:
    deadline = time.monotonic() + TIMEOUT_S
    while not (complete_steps(workdir / "checkpoints") and len(
        metrics.read_metrics(workdir, "train")) >= 3):
      assert all(p.poll() is None for p in procs), logs(log_dir)
      assert time.monotonic() < deadline, "no checkpoint in time\n" + logs(log_dir)
      time.sleep(0.02)
  finally:
    kill_all(procs)
  assert not (workdir / "summary.json").exists()
  killed_at = complete_steps(workdir / "checkpoints")[-1]
  assert killed_at < TOTAL_STEPS

  procs = launch(workdir, free_port(), log_dir)
  try:
    for p in procs:
      p.wait(timeout=TIMEOUT_S)
  finally:
    kill_all(procs)
  assert [p.returncode for p in procs] == [0, 0], logs(log_dir)
  assert f"resumed from step {killed_at}" in (log_dir / "rank0.log").read_text()

  # The reference: one process over as many devices (4), so each device holds the same samples
  # and the gradient is summed over the same shards (the step is data parallel: with another
  # device count the partial sums, and with them the float rounding, would differ).
  reference = tmp_path / "reference"
  train.train_and_evaluate(tiny_config("parallel.num_devices=4"), reference)
  got, want = restore(workdir)[0], restore(reference)[0]
  assert int(got.step) == TOTAL_STEPS
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5),
               got.params, want.params)
  got_loss = [r["loss"] for r in metrics.read_metrics(workdir, "train")]
  want_loss = [r["loss"] for r in metrics.read_metrics(reference, "train")]
  np.testing.assert_allclose(got_loss, want_loss, rtol=1e-4, atol=1e-5)

  # One host evaluates and analyses the 2-host run (no distributed setup is re-run).
  result = evaluate_cli.evaluate_workdir(workdir, "latest")
  last = metrics.read_metrics(workdir, "epoch")[-1]
  assert result["step"] == TOTAL_STEPS
  assert result["test_accuracy"] == pytest.approx(last["test_accuracy"])
  assert analyze.main([f"--workdir={workdir}", f"--out={tmp_path / 'analysis'}",
                       "--batch_size=16"]) == 0
