"""The kill/resume gauntlet (issue 10): one run of the tiny config is interrupted 11 times, each
launch continuing the same workdir, at deterministic points: during the first step's compile,
mid-epoch before and after the first checkpoint, while metrics.jsonl is being rewritten on
resume, while a checkpoint is being written, during evaluation, between the latest and the best
save, and by SIGTERM and SIGINT; every kind in epoch 1, then two more on the many-times-resumed
run in epoch 2. A last clean launch finishes the run. Its latest and best
checkpoints must equal an uninterrupted run's bit for bit, metrics.jsonl record by record (but
wall time) and summary.json field by field (but wall time).

Faults are injected by a small wrapper around ``experiments.train.main`` (written to tmp, never
part of the library) that patches the step, the evaluation, the checkpointer or the atomic
writer of one launch to kill the process at the chosen point.
"""

from __future__ import annotations

import json
import subprocess
import sys

from ei_snn_jax.training import metrics
from test_reliability import (REPO, assert_bitwise_equal, cli_argv, complete_steps, restore,
                              subprocess_env, tiny_config, without_wall_time)


WRAPPER = r'''
import json, os, signal, sys
import jax
from ei_snn_jax.training import checkpointing, evaluation, runfolder, steps
from experiments import train as train_cli

fault = json.loads(os.environ["EI_SNN_FAULT"])
kind, at = fault["kind"], fault.get("step")
die = lambda: os.kill(os.getpid(), signal.SIGKILL)

if kind in ("kill_step", "sigterm", "sigint"):
  real_make = steps.make_train_step
  def make(exp, source):
    step_fn = real_make(exp, source)
    def wrapped(state, batch):
      if int(jax.device_get(state.step)) == at:
        {"kill_step": die, "sigterm": lambda: os.kill(os.getpid(), signal.SIGTERM),
         "sigint": lambda: os.kill(os.getpid(), signal.SIGINT)}[kind]()
      return step_fn(state, batch)
    return wrapped
  steps.make_train_step = make
elif kind == "during_eval":
  real_eval = evaluation.evaluate_replicas
  def evaluate(exp, state, *args, **kwargs):
    if int(state.step) == at:
      die()
    return real_eval(exp, state, *args, **kwargs)
  evaluation.evaluate_replicas = evaluate
elif kind in ("mid_checkpoint", "after_latest"):
  real_save = checkpointing.Checkpointer.save
  def save(self, step, state, meta, best=False):
    if step != at:
      return real_save(self, step, state, meta, best)
    real_save(self, step, state, meta, False)
    if kind == "after_latest":          # latest/N committed, best/N never written
      self.latest.wait_until_finished()
    die()                                # mid_checkpoint: orbax is still writing
  checkpointing.Checkpointer.save = save
elif kind == "rewrite_metrics":
  real_write = runfolder.write_atomic
  def write_atomic(path, text):
    if str(path).endswith("metrics.jsonl"):
      die()
    return real_write(path, text)
  runfolder.write_atomic = write_atomic

sys.exit(train_cli.main(sys.argv[1:]))
'''

# (kind, step, exit status): the launches in order; each resumes where the previous left off.
SCHEDULE = [
    ("kill_step", 0, -9),           # compiling / running the very first step
    ("kill_step", 2, -9),           # records at step 2 written, no checkpoint yet
    ("rewrite_metrics", None, -9),  # the next launch drops those records: killed mid-rewrite
    ("mid_checkpoint", 3, -9),      # the first checkpoint is being written
    ("sigterm", 4, 143),            # pre-emption: checkpoint at 4 with the open logging window
    ("kill_step", 8, -9),           # mid-epoch, records past the step-6 checkpoint
    ("sigint", 10, 130),            # Ctrl-C
    ("during_eval", 12, -9),        # end of epoch 1, evaluating
    ("after_latest", 12, -9),       # latest/12 committed, best/12 not
    ("kill_step", 17, -9),          # epoch 2: the same faults on a run resumed nine times
    ("sigterm", 20, 143),
]


def test_eleven_interruptions_end_bit_exact(tiny_reference_run, tmp_path):
  workdir = tmp_path / "run"
  wrapper = tmp_path / "faulty_train.py"
  wrapper.write_text(WRAPPER)
  command = [sys.executable, str(wrapper), *cli_argv(workdir)]
  history = []
  for kind, step, status in SCHEDULE:
    env = dict(subprocess_env(), EI_SNN_FAULT=json.dumps({"kind": kind, "step": step}))
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    history.append((kind, step, proc.returncode, complete_steps(workdir / "checkpoints")))
    assert proc.returncode == status, (history, proc.stdout[-1500:], proc.stderr[-3000:])
    if status > 0:
      lines = [l for l in proc.stderr.splitlines() if l.strip()]
      assert "Traceback" not in proc.stderr and lines[-1].startswith("error: stopped by")
  final = subprocess.run([sys.executable, "-m", "experiments.train", *cli_argv(workdir)],
                         cwd=REPO, env=subprocess_env(), capture_output=True, text=True,
                         timeout=300)
  assert final.returncode == 0, final.stderr[-3000:]
  print("launch: (fault, step, exit status, complete checkpoints after it)")
  for entry in history:
    print(entry)

  reference = tiny_reference_run      # the same config (24 steps), uninterrupted
  for best in (False, True):
    got, got_meta = restore(workdir, tiny_config(), best=best)
    want, want_meta = restore(reference, tiny_config(), best=best)
    assert_bitwise_equal(got, want)
    drop = lambda m: {k: v for k, v in m.items() if k != "wall_time"}
    assert drop(got_meta) == drop(want_meta)
  assert without_wall_time(metrics.read_metrics(workdir)) == without_wall_time(
      metrics.read_metrics(reference))
  drop = lambda s: {k: v for k, v in s.items() if k != "wall_time"}
  assert drop(json.loads((workdir / "summary.json").read_text())) == drop(
      json.loads((reference / "summary.json").read_text()))
  assert not [p for p in (workdir / "checkpoints").iterdir() if "tmp" in p.name]
