"""Training and evaluation, readable top to bottom: ``train_and_evaluate(config, workdir)``.

1. ``experiment.build_experiment``: validate the config; build the device mesh (batch sharded
   over every device, params replicated; multi-host through ``distributed.py``); load the
   dataset as uint8 and place it (``data.placement``) on the devices or on the host.
2. ``open_run``: E-I Init (``steps.init_state``: the ``init`` stream, the first augmented
   batch, Dale's projection), or the latest complete checkpoint in the workdir; the records of
   steps after it are dropped (a resumed run writes exactly an uninterrupted one's).
3. ``train_loop``: a batch source (``batches.py``: the epoch's index table on the devices, or
   batches streamed from the host) hands the one jitted train step (``steps.py``) its batch;
   the periodic actions (``actions.py``: probes, NaN guard, logs, evaluation, checkpoints,
   stop signals) run after it, in one place.
4. ``summarize``: ``summary.json``.

The data order comes from (seed, epoch) and the augmentation and dropout keys from (seed, step)
through named PRNG streams (``rng.py``), so a resumed run sees exactly the same batches.
``train.num_replicas = N`` trains N independent seeds (seed, seed+1, ...) in one run: the state
always has the replica axis (N = 1 by default; ``replicas.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import time
from typing import Any

import jax
import ml_collections

from ei_snn_jax.core import dale
from ei_snn_jax.training import actions as actions_lib, batches, checkpointing
from ei_snn_jax.training import config as config_lib, metrics as metrics_lib, replicas
from ei_snn_jax.training import run_config, runfolder, steps
# The names other modules and scripts use from here.
from ei_snn_jax.training.evaluation import evaluate  # noqa: F401
from ei_snn_jax.training.experiment import (Experiment, build_experiment,  # noqa: F401
                                            host_to_global, make_mesh)
from ei_snn_jax.training.guards import NonFiniteError  # noqa: F401
from ei_snn_jax.training.steps import TrainState, init_state  # noqa: F401

# The config options this module owns: dotted field -> (default, allowed values or range,
# meaning); ``training.config.base_config`` is assembled from these (docs/options.md).
CONFIG_OPTIONS = {
    "train.epochs": (300, ">= 1", "epochs of the schedule"),
    "train.batch_size": (128, ">= 1", "training batch (per replica)"),
    "train.eval_batch_size": (400, ">= 1", "divides 10000 test images and 1/2/4/8/16 devices"),
    "train.log_every_steps": (50, ">= 1", "metrics cadence"),
    "train.checkpoint_every_steps": (1000, ">= 1", "checkpoint cadence"),
    "train.keep_checkpoints": (2, ">= 1", "latest checkpoints kept"),
    "train.max_steps": (0, ">= 0", "stop early after this many steps (0 = full schedule)"),
    "train.progress_bar": (True, None, "progress bar on the console"),
    "train.stop_on_dead_layer": (True, None, "stop (exit 2) when an E-I layer dies"),
    "train.transfer_guard": ("disallow", ("disallow", "log", "allow"),
                             "jax.transfer_guard level of ordinary steps"),
    "train.num_replicas": (1, ">= 1", "vmapped independent seeds (seed, seed+1, ...)"),
}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike,
                       *, stop_after_steps: int | None = None) -> dict[str, Any]:
  """Train ``config`` in ``workdir`` (resuming automatically), evaluate every epoch.

  Args:
    stop_after_steps: stop (after a checkpoint) once this global step is reached, as a
      pre-empted job would; rerunning continues. ``config.train.max_steps`` does the same.

  Returns:
    The run summary (also written to ``workdir/summary.json``).
  """
  workdir = pathlib.Path(workdir).expanduser()
  exp = build_experiment(config)
  primary = jax.process_index() == 0   # on several hosts only process 0 writes records
  limit = exp.total_steps
  for cap in (stop_after_steps, config.train.max_steps or None):
    if cap:
      limit = min(limit, cap)
  lock = runfolder.WorkdirLock(workdir) if primary else contextlib.nullcontext()
  with lock, runfolder.StopSignals() as stop, checkpointing.disk_errors(workdir):
    try:
      run, state = open_run(exp, workdir, primary, limit)
      with run:                 # the one shutdown, whichever way the run ends
        state, step = train_loop(exp, run, state, stop, limit)
        return summarize(exp, run, step, primary)
    finally:
      metrics_lib.close_all()   # also on errors: no writer flushes at exit into a full disk


def open_run(exp: Experiment, workdir: pathlib.Path, primary: bool,
             limit: int) -> tuple[actions_lib.Run, steps.TrainState]:
  """The run's records and its state in the loop's layout: fresh (E-I Init), or restored from
  the newest readable checkpoint (then projected onto Dale's constraints, spec §4), with the
  records and best checkpoint made to agree with it."""
  c = exp.config
  fingerprint = run_config.config_fingerprint(c)
  logger = metrics_lib.MetricsLogger(workdir, fingerprint, c, enabled=primary)
  ckpt = checkpointing.Checkpointer(workdir, keep=c.train.keep_checkpoints,
                                    cleanup_unfinished=True)
  loggers = replicas.loggers(workdir, c, logger)   # one per replica (N > 1: replica_<r>/)
  state = steps.init_state(exp)
  meta = {"best_test_accuracy": -1.0, "best_epoch": -1, "best_step": -1, "wall_time": 0.0,
          "fingerprint": fingerprint}
  restored = ckpt.resume(state, steps.state_sharding(exp))
  if restored is not None:
    state, meta = restored
    if meta.setdefault("fingerprint", fingerprint) not in (fingerprint, logger.run_fingerprint):
      raise config_lib.ConfigError(
          f"the checkpoints in {workdir} were written by another config (its config.json is "
          f"gone): rerun with the original config, or use a new --workdir")
    state = state.replace(params=dale.project_nonnegative(state.params))
    print(f"resumed from step {int(state.step)} in {workdir}")
  step = int(state.step)
  progress = metrics_lib.Progress(limit, step, enabled=c.train.progress_bar and primary)
  run = actions_lib.Run(workdir, logger, loggers, ckpt, meta, progress,
                        t_start=time.time() - meta["wall_time"], saved_step=step)
  if primary:   # records after the restored step (or all, with no checkpoint) are redone
    ckpt.reconcile(step, state, meta)
    for log in run.all_loggers:
      log.truncate_after(step)
  if primary and step < limit:
    runfolder.set_aside_summary(workdir)
    print(f"compiling the training step ({c.model.arch}, T={c.model.T}, batch "
          f"{c.train.batch_size}); the first step waits for it", flush=True)
  return run, replicas.to_run_layout(state, exp.num_replicas)


def train_loop(exp: Experiment, run: actions_lib.Run, state: steps.TrainState,
               stop: runfolder.StopSignals, limit: int) -> tuple[steps.TrainState, int]:
  """Train from ``state`` up to global step ``limit``; returns the last state and step.

  The batch source hands the step its batch (explicit uploads: the device path's index table
  once per epoch, the host path's batches from the feed's thread), so that an ordinary step
  moves no data between host and device: it runs under ``jax.transfer_guard``. Everything
  periodic is an action (``actions.PeriodicActions``), called before and after the step.
  """
  step = int(state.step)
  with batches.batch_source(exp, step, limit) as source:   # stops a feed thread on any exit
    train_step = steps.make_train_step(exp, source)
    probe_step = steps.make_probe_step(exp, source)
    eval_step = steps.make_eval_step(exp, batches.eval_source(exp))
    actions = actions_lib.PeriodicActions(exp, run, stop, limit, step, probe_step, eval_step)
    while step < limit:
      batch = source(step)
      actions.before_step(step, state, batch)      # the probes, on steps that close a window
      with jax.transfer_guard(exp.config.train.transfer_guard):
        state, step_metrics = train_step(state, batch)
      step += 1
      state = actions.after_step(step, state, step_metrics, batch)   # guard, logs, eval, ...
    actions.finish(step, state)
  run.ckpt.wait()
  return state, step


def summarize(exp: Experiment, run: actions_lib.Run, step: int, primary: bool) -> dict[str, Any]:
  """The run's summary at ``step``, written to ``workdir/summary.json`` by the primary."""
  c, meta = exp.config, run.meta
  summary = {"step": step, "total_steps": exp.total_steps, "finished": step >= exp.total_steps,
             "best_test_accuracy": meta["best_test_accuracy"], "best_epoch": meta["best_epoch"],
             "wall_time": time.time() - run.t_start, "devices": exp.mesh.devices.size,
             "device_kind": jax.devices()[0].device_kind, "config": c.to_dict()}
  evals = [r for r in (run.logger.last("eval"), run.logger.last("epoch")) if r is not None]
  last_eval = max(evals, key=lambda r: r["step"]) if evals else None
  if last_eval is not None and last_eval["step"] == step:
    summary["final_test_accuracy"] = last_eval["test_accuracy"]
    if summary["best_test_accuracy"] < 0:
      summary["best_test_accuracy"] = last_eval["test_accuracy"]
  if exp.num_replicas > 1:  # per-replica best/final accuracy, mean and std over replicas
    summary.update(replicas.summary(c, meta, run.loggers, step))
  if primary:
    runfolder.write_atomic(run.workdir / "summary.json",
                           json.dumps(summary, indent=2, default=str))
  return summary
