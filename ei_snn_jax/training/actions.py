"""The periodic actions of the training loop, called in one place: before and after each step.

Before a step that closes a logging window, the probes record the layer statistics of its
forward pass (the step then donates the state). After every step, in this order:

1. the NaN guard reads the previous step's ``finite`` flag (one step behind: no per-step sync);
2. the step's metrics join the logging window; the progress bar moves;
3. a window closes every ``train.log_every_steps``, at the end of each epoch, at every
   checkpoint and at the last step: one host read, one record per replica (means over the
   window and the probes), the dead-layer stop and the divergence guard;
4. at the end of an epoch: the epoch's training sums and the test evaluation, the best
   checkpoint (best mean test accuracy over replicas), the sums reset, a checkpoint;
   otherwise a checkpoint every ``train.checkpoint_every_steps`` and at the last step;
5. on SIGTERM/SIGINT (``runfolder.StopSignals``): a checkpoint (carrying the unfinished
   window) and ``runfolder.TrainingInterrupted``.

Checkpoint steps close the logging window too, so that a run resumed from any checkpoint writes
exactly the records of an uninterrupted one (and no save follows a bad step).
"""

from __future__ import annotations

import dataclasses
import pathlib
import signal
import time
from typing import Any

import jax
import numpy as np

from ei_snn_jax.analysis import health
from ei_snn_jax.training import (checkpointing, evaluation, guards, metrics as metrics_lib,
                                 replicas, runfolder)
from ei_snn_jax.training.experiment import Experiment, host_to_global


@dataclasses.dataclass
class Run:
  """What a run writes: its records (one logger per replica and, with replicas, the mean
  stream), checkpoints, their metadata, the progress bar and the wall clock. ``close`` (also
  leaving ``with run:``) is the one shutdown: after a finished or interrupted run everything is
  flushed and released; after an error only the progress bar and the metric streams are closed
  (the error's own path waits for pending checkpoint saves)."""
  workdir: pathlib.Path
  logger: metrics_lib.MetricsLogger
  loggers: list[metrics_lib.MetricsLogger]
  ckpt: checkpointing.Checkpointer
  meta: dict[str, Any]
  progress: metrics_lib.Progress
  t_start: float
  saved_step: int

  @property
  def num_replicas(self) -> int:
    """The length of the state's replica axis (one metrics stream per replica)."""
    return len(self.loggers)

  @property
  def all_loggers(self) -> list[metrics_lib.MetricsLogger]:
    """Every metrics stream: the replicas' and, with several replicas, the mean's."""
    return self.loggers if self.num_replicas == 1 else [self.logger, *self.loggers]

  def save(self, step: int, state: Any, best: bool = False, **extra: Any) -> None:
    """Checkpoint ``state`` (the loop's layout) at ``step`` with the metadata (and ``extra``)."""
    self.meta["wall_time"] = time.time() - self.t_start
    self.ckpt.save(step, replicas.to_saved_layout(state, self.num_replicas),
                   {**self.meta, **extra}, best=best)
    self.saved_step = step

  def close(self, finished: bool = True) -> None:
    """The shutdown (see the class)."""
    if finished:
      self.ckpt.wait()
    self.progress.close()
    for log in self.all_loggers:
      log.close()
    if finished:
      self.ckpt.close()

  def __enter__(self) -> Run:
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    self.close(finished=exc_type is None or issubclass(exc_type, runfolder.TrainingInterrupted))


def window_to_json(window: list[dict[str, Any]], n: int) -> list[Any]:
  """Host step metrics of an unfinished logging window as JSON (saved with a checkpoint). With
  one replica the values lose the replica axis and ``bad_replica`` is left out: the layout of
  checkpoints written before the axis existed."""
  if n == 1:
    window = [{k: v if k in metrics_lib.WHOLE_RUN else v[0] for k, v in m.items()
               if k != "bad_replica"} for m in window]
  return [jax.tree.map(lambda a: {"dtype": np.asarray(a).dtype.name,
                                  "value": np.asarray(a).tolist()}, m) for m in window]


def window_from_json(window: list[Any], n: int) -> list[dict[str, Any]]:
  """Inverse of ``window_to_json``."""
  is_leaf = lambda x: isinstance(x, dict) and set(x) == {"dtype", "value"}
  out = [jax.tree.map(lambda a: np.asarray(a["value"], a["dtype"]), m, is_leaf=is_leaf)
         for m in window]
  if n == 1:
    out = [{k: v if k in metrics_lib.WHOLE_RUN else v[None] for k, v in m.items()} for m in out]
  return out


class NonFiniteGuard:
  """The NaN guard: stops the run within one step of a non-finite loss or gradient, naming the
  step, the gradient leaf and the first layer whose currents went non-finite (the probes
  recomputed on the failing step's batch)."""

  def __init__(self, exp: Experiment, run: Run, probe_step):
    self.exp, self.run, self.probe_step = exp, run, probe_step
    self.pending = None

  def push(self, step: int, step_metrics: dict, batch: Any, state: Any) -> None:
    """Start reading step ``step``'s flag and check the previous step's."""
    step_metrics["finite"].copy_to_host_async()
    self.flush(state)
    self.pending = (step, step_metrics, batch)

  def flush(self, state: Any) -> None:
    """Check the pending step now (blocks until its flag is on the host)."""
    if self.pending is None:
      return
    step, step_metrics, batch = self.pending
    self.pending = None
    if not bool(jax.device_get(step_metrics["finite"])):   # explicit: allowed by the guard
      self.run.ckpt.wait()
      with jax.transfer_guard("allow"):    # not an ordinary step: its reads are allowed
        layer_stats = self.probe_step(state, batch)
        guards.raise_nonfinite(self.exp, state, {**jax.device_get(layer_stats),
                                                 **jax.device_get(step_metrics)}, step)


class PeriodicActions:
  """Logging, probes, the NaN guard, evaluation, checkpoints and the stop signals of the steps
  ``run`` continues, up to ``limit`` (see the module docstring for the order)."""

  def __init__(self, exp: Experiment, run: Run, stop: runfolder.StopSignals, limit: int,
               start_step: int, probe_step, eval_step):
    self.exp, self.run, self.stop, self.limit = exp, run, stop, limit
    self.start_step, self.probe_step, self.eval_step = start_step, probe_step, eval_step
    self.guard = NonFiniteGuard(exp, run, probe_step)
    self.window = window_from_json(run.meta.pop("window", []), exp.num_replicas)
    self.layer_stats = None

  def closes_window(self, step_done: int) -> bool:
    """Whether the step that makes ``step_done`` steps ends a logging window."""
    t = self.exp.config.train
    return (step_done % t.log_every_steps == 0 or step_done % self.exp.steps_per_epoch == 0
            or step_done == self.limit or step_done % t.checkpoint_every_steps == 0)

  def before_step(self, step: int, state: Any, batch: Any) -> None:
    """The probes, on a step that closes a window, before the step donates the state."""
    if self.closes_window(step + 1):
      self.layer_stats = self.probe_step(state, batch)

  def after_step(self, step: int, state: Any, step_metrics: dict, batch: Any) -> Any:
    """Every action due once ``step`` steps are done; returns the (epoch-reset) state."""
    self.stop.idle = False             # a signal now waits for the step's checkpoint
    if step == self.start_step + 1:
      self.run.progress.exclude_pause()   # the compile is no step time
    self.guard.push(step - 1, step_metrics, batch, state)
    # bad_leaves (one flag per parameter) is the guard's alone: saved windows keep their layout.
    self.window.append({k: v for k, v in step_metrics.items() if k != "bad_leaves"})
    self.run.progress.update(step)
    if self.closes_window(step):
      self.log_window(step, state)
    if step % self.exp.steps_per_epoch == 0:
      state = self.end_epoch(step, state)
    elif step % self.exp.config.train.checkpoint_every_steps == 0 or step == self.limit:
      self.run.save(step, state)
    if self.stop.received and step < self.limit:
      self.interrupt(step, state)
    return state

  def log_window(self, step: int, state: Any) -> None:
    """One record per replica: the window's mean metrics and the probes; then the stops."""
    exp, run = self.exp, self.run
    self.guard.flush(state)
    window, layer_stats = jax.device_get((self.window, self.layer_stats))   # one host read
    self.window = []
    records = replicas.mean_metrics(window, metrics_lib.mean_metrics)
    for record, stats in zip(records, replicas.per_replica(layer_stats)):
      record.update({k: float(v) for k, v in stats.items()})  # the window's last step
      record.update(step=step, epoch=step / exp.steps_per_epoch)
    record = replicas.write_records(run.loggers, run.logger, "train", records)
    run.progress.postfix(loss=record["loss"], acc=record["accuracy"], lr=record["lr"])
    dead = [d for r in records for d in health.dead_layers(r)]
    if dead and exp.config.train.stop_on_dead_layer:
      run.ckpt.wait()
      raise health.DeadLayerError(health.describe(dead[0], step))
    guards.check_divergence(records, exp.dataset.num_classes, step, exp.config.optim.lr,
                            run.ckpt.wait)

  def end_epoch(self, step: int, state: Any) -> Any:
    """The epoch's record (training sums, test metrics, best so far) and its checkpoint;
    returns the state with the sums reset."""
    exp, run, meta = self.exp, self.run, self.run.meta
    epoch = step // exp.steps_per_epoch
    sums = replicas.per_replica(jax.device_get(state.sums))
    tests = evaluation.evaluate_replicas(exp, state, self.eval_step)
    records = [{"epoch": epoch, "step": step, "train_loss": float(s["loss"] / s["count"]),
                "train_accuracy": float(s["correct"] / s["count"]),
                "wall_time": time.time() - run.t_start, **test} for s, test in zip(sums, tests)]
    state = state.replace(sums=jax.tree.map(
        lambda a: host_to_global(np.zeros(a.shape, a.dtype), exp.replica_sharded), state.sums))
    accuracies = [test["test_accuracy"] for test in tests]
    accuracy = float(np.mean(accuracies))  # with replicas, the best checkpoint is the best mean
    is_best = accuracy > meta["best_test_accuracy"]
    if is_best:
      meta.update(best_test_accuracy=accuracy, best_epoch=epoch)
    for record, best in zip(records, replicas.update_bests(meta, accuracies, epoch)):
      record["best_test_accuracy"] = best
    record = replicas.write_records(run.loggers, run.logger, "epoch", records)
    run.progress.message(f"epoch {epoch}: test acc {record['test_accuracy']:.4f} "
                         f"(best {meta['best_test_accuracy']:.4f}), train loss "
                         f"{record['train_loss']:.4f}")
    if is_best:
      meta["best_step"] = step
    run.save(step, state, best=is_best)
    run.progress.exclude_pause()       # the evaluation is no step time: the ETA stays
    return state

  def interrupt(self, step: int, state: Any) -> None:
    """Stop on a signal: a checkpoint of this step (the unfinished logging window travels with
    it), then ``TrainingInterrupted``."""
    self.guard.flush(state)
    if self.run.saved_step != step:
      window = window_to_json(jax.device_get(self.window), self.exp.num_replicas)
      self.run.save(step, state, window=window)
    name = signal.Signals(self.stop.received).name
    raise runfolder.TrainingInterrupted(
        f"stopped by {name} at step {step}/{self.limit}: checkpoint saved in "
        f"{self.run.workdir}; rerun the same command to continue", self.stop.received)

  def finish(self, step: int, state: Any) -> None:
    """After the last step: its guard; a run shortened by ``train.max_steps`` that ends
    mid-epoch evaluates what it reached."""
    self.guard.flush(state)
    c, spe = self.exp.config, self.exp.steps_per_epoch
    if c.train.max_steps and step == c.train.max_steps and step % spe:
      tests = evaluation.evaluate_replicas(self.exp, state, self.eval_step)
      record = replicas.write_records(self.run.loggers, self.run.logger, "eval",
                                      [{"step": step, "epoch": step / spe, **t} for t in tests])
      self.run.meta["last_eval_accuracy"] = record["test_accuracy"]
