"""Several independent seeds in one run (``config.train.num_replicas = N``), vmapped on device.

Replica r is the run of seed ``config.seed + r``: its own E-I Init (on its own first augmented
batch), data order, PRNG streams (``rng.rng_streams(seed + r)``: init, augmentation and dropout
keys), parameters and optimizer state. The dataset (synthetic data included) is shared and
built from ``config.seed``. The training state carries a leading replica axis on every leaf
except the shared ``step``; the jitted step vmaps the single-run step over it, so N small models
fill one large accelerator.

Records: ``workdir/replica_<r>/`` holds replica r's ``config.json`` and ``metrics.jsonl`` (what a
separate run with seed ``config.seed + r`` would write); ``workdir/metrics.jsonl`` holds the mean
over replicas of every number (with ``*_std``, ddof=1, for losses and accuracies). Checkpoints
hold the stacked state (``unstack`` gives one replica's); the best checkpoint is the epoch with the
best mean test accuracy. ``summary.json``: ``replicas`` lists each replica's seed, best (epoch)
and final test accuracy; ``best_test_accuracy_mean``/``_std`` and ``final_test_accuracy_mean``/
``_std`` summarise them (sample std, ddof=1); ``best_test_accuracy``/``best_epoch`` keep their
single-run meaning for the mean curve (the best checkpoint's epoch).

The replica axis is always there while training, N = 1 included: the loop, the batch sources
and the records have one code path. With N = 1 ``over_replicas`` runs the single-run function on
the axis' one slice (no vmap), so the compiled program and its numbers are the single run's bit
for bit; checkpoints of N = 1 keep the single-run layout, without the axis (``to_saved_layout``,
``to_run_layout``), so that a run resumes from checkpoints written before the axis existed.
"""

from __future__ import annotations

import functools
import pathlib
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P

from ei_snn_jax.training import metrics as metrics_lib, run_config
from ei_snn_jax import data as data_lib


def num_replicas(config: ml_collections.ConfigDict) -> int:
  """``config.train.num_replicas`` (1 = an ordinary single run)."""
  return int(config.train.num_replicas)


def over_devices(n: int, num_devices: int, num_processes: int = 1) -> bool:
  """Whether ``n`` replicas on ``num_devices`` devices are split over them, whole replicas on
  each device (``Experiment.replicas_over_devices``): n > 1 on several devices, n a multiple of
  their number, in one process."""
  return n > 1 and num_devices > 1 and n % num_devices == 0 and num_processes == 1


def seeds(config: ml_collections.ConfigDict) -> list[int]:
  """The seed of each replica: ``config.seed + r``."""
  return [int(config.seed) + r for r in range(num_replicas(config))]


def replica_config(config: ml_collections.ConfigDict, r: int) -> ml_collections.ConfigDict:
  """The single-run config replica ``r`` equals (seed + r, one replica)."""
  rc = ml_collections.ConfigDict(config.to_dict())
  rc.seed = int(config.seed) + r
  rc.train.num_replicas = 1
  return rc


def replica_dir(workdir: str | pathlib.Path, r: int) -> pathlib.Path:
  """Where replica ``r`` writes its records."""
  return pathlib.Path(workdir) / f"replica_{r}"


def loggers(workdir: str | pathlib.Path, config: ml_collections.ConfigDict,
            main_logger: Any) -> list[Any]:
  """One metrics stream per replica: ``[main_logger]`` when N = 1, else ``workdir/replica_<r>``
  (its config.json holds ``replica_config(config, r)``)."""
  if num_replicas(config) == 1:
    return [main_logger]
  out = []
  for r in range(num_replicas(config)):
    rc = replica_config(config, r)
    out.append(metrics_lib.MetricsLogger(replica_dir(workdir, r),
                                         run_config.config_fingerprint(rc), rc))
  return out


def stack(states: Sequence[Any]) -> Any:
  """Stack N single-run TrainStates along a new leading axis; ``step`` stays shared."""
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
  return stacked.replace(step=states[0].step)


def unstack(state: Any, r: int) -> Any:
  """Replica ``r``'s single-run TrainState out of a stacked one."""
  return jax.tree.map(lambda x: x[r], state.replace(step=None)).replace(step=state.step)


def state_axes(state: Any) -> Any:
  """vmap axes of a stacked TrainState: 0 everywhere except the shared ``step``."""
  return jax.tree.map(lambda _: 0, state.replace(step=None)).replace(step=None)


@functools.lru_cache(maxsize=1)
def _epoch_indices(seed_list: tuple[int, ...], epoch: int, n: int,
                   batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """``data.epoch_table`` of one epoch for every replica, (steps, N, batch), cached: the steps
  of an epoch ask for their rows one at a time."""
  return data_lib.epoch_table(seed_list, epoch, n, batch_size)


def batch_indices(config: ml_collections.ConfigDict, epoch: int, n: int,
                  step_in_epoch: int) -> tuple[np.ndarray, np.ndarray]:
  """Training batch ``step_in_epoch`` of ``epoch``: (batch,) for one replica, else (N, batch).

  Replica r's rows are ``data.batch_indices(seed + r, ...)`` exactly.
  """
  if num_replicas(config) == 1:
    return data_lib.batch_indices(config.seed, epoch, n, config.train.batch_size, step_in_epoch)
  idx, mask = _epoch_indices(tuple(seeds(config)), epoch, n, config.train.batch_size)
  return idx[step_in_epoch], mask[step_in_epoch]


def per_replica(values: dict[str, Any]) -> list[dict[str, Any]]:
  """{name: value with a leading replica axis} -> one {name: value} per replica; the whole-run
  values (``metrics.WHOLE_RUN``) are dropped."""
  values = {k: v for k, v in values.items() if k not in metrics_lib.WHOLE_RUN and np.ndim(v)}
  n = max((np.shape(v)[0] for v in values.values()), default=1)
  return [{k: v[r] for k, v in values.items()} for r in range(n)]


def mean_metrics(window: list[dict[str, Any]], mean_fn) -> list[dict[str, float]]:
  """Per-replica ``mean_fn`` (``metrics.mean_metrics``) over a window of host step metrics."""
  split = [per_replica(m) for m in window]
  return [mean_fn([s[r] for s in split]) for r in range(len(split[0]))]


def aggregate(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
  """Mean over replicas of every number; ``<name>_std`` (ddof=1) for losses and accuracies."""
  out: dict[str, Any] = {"replicas": len(records)}
  for k, v in records[0].items():
    if not isinstance(v, (int, float)) or isinstance(v, bool):
      continue
    values = [float(rec[k]) for rec in records]
    out[k] = v if k in ("step", "epoch") else float(np.mean(values))
    if ("loss" in k or "accuracy" in k) and len(values) > 1:
      out[f"{k}_std"] = float(np.std(values, ddof=1))
  return out


def write_records(loggers: Sequence[Any], main_logger: Any, kind: str,
                  records: list[dict[str, Any]]) -> dict[str, Any]:
  """Each replica's record to its own stream and (N > 1) their mean to the main stream.

  Returns the record of the main stream (the single record when N = 1).
  """
  for logger, record in zip(loggers, records):
    logger.write(kind, record)
  if len(records) == 1:
    return records[0]
  mean = aggregate(records)
  main_logger.write(kind, mean)
  return mean


def update_bests(meta: dict[str, Any], accuracies: Sequence[float], epoch: int) -> list[float]:
  """Per-replica best test accuracy so far, kept in ``meta["replicas"]`` when N > 1."""
  if len(accuracies) == 1:
    return [meta["best_test_accuracy"]]
  reps = meta.setdefault("replicas", [{"best_test_accuracy": -1.0, "best_epoch": -1}
                                      for _ in accuracies])
  for rec, acc in zip(reps, accuracies):
    if acc > rec["best_test_accuracy"]:
      rec.update(best_test_accuracy=float(acc), best_epoch=int(epoch))
  return [rec["best_test_accuracy"] for rec in reps]


def _mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
  if not values or any(v is None for v in values):
    return None, None
  std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
  return float(np.mean(values)), std


def summary(config: ml_collections.ConfigDict, meta: dict[str, Any], loggers: Sequence[Any],
            step: int) -> dict[str, Any]:
  """summary.json fields of an N > 1 run: each replica's best/final accuracy, mean ± std."""
  reps = meta.get("replicas") or [{"best_test_accuracy": -1.0, "best_epoch": -1}
                                  for _ in loggers]
  rows = []
  for r, (logger, rec) in enumerate(zip(loggers, reps)):
    last = logger.last("eval") or logger.last("epoch")
    final = last["test_accuracy"] if last is not None and last["step"] == step else None
    best = rec["best_test_accuracy"]
    if best < 0 and final is not None:
      best = final
    rows.append({"replica": r, "seed": int(config.seed) + r, "best_test_accuracy": best,
                 "best_epoch": rec["best_epoch"], "final_test_accuracy": final})
  out: dict[str, Any] = {"num_replicas": len(rows), "replicas": rows}
  for key in ("best_test_accuracy", "final_test_accuracy"):
    mean, std = _mean_std([row[key] for row in rows])
    out[f"{key}_mean"], out[f"{key}_std"] = mean, std
  return out


def _first(tree: Any) -> Any:
  """Slice 0 of the replica axis of every leaf; a TrainState's shared ``step`` stays."""
  if _is_state(tree):
    return unstack(tree, 0)
  return jax.tree.map(lambda x: x[0], tree)


def over_replicas(fn, n: int, in_axes: tuple[int | None, ...], mesh: Mesh | None = None):
  """``fn(*args)`` over the leading replica axis (length ``n``) of the arguments whose entry in
  ``in_axes`` is 0 (None: shared by every replica; a TrainState's ``step`` is always shared).

  N > 1: ``jax.vmap``. N = 1: ``fn`` on slice 0, so the program is exactly the single run's (a
  vmap of one would reorder no arithmetic either, but this keeps the compiled step unchanged).
  Either way every output gets the replica axis at 0.

  ``mesh`` (``Experiment.replicas_over_devices``): the replica axis is split over the mesh's
  "data" axis, and each device vmaps ``fn`` over its own replicas (``jax.shard_map``; the shared
  arguments whole on every device), with no collective.
  """
  if n > 1:
    def vmapped(*args):
      axes = [state_axes(a) if ax == 0 and _is_state(a) else ax for a, ax in zip(args, in_axes)]
      return jax.vmap(fn, in_axes=tuple(axes))(*args)
    if mesh is None:
      return vmapped

    def on_each_device(*args):
      specs = tuple(P() if ax is None else
                    jax.tree.map(lambda _: P("data"), a.replace(step=None)).replace(step=P())
                    if _is_state(a) else P("data") for a, ax in zip(args, in_axes))
      return jax.shard_map(vmapped, mesh=mesh, in_specs=specs, out_specs=P("data"),
                           check_vma=False)(*args)
    return on_each_device

  def single(*args):
    out = fn(*(a if ax is None else _first(a) for a, ax in zip(args, in_axes)))
    return jax.tree.map(lambda x: x[None], out)

  return single


def _is_state(tree: Any) -> bool:
  """Whether ``tree`` is a TrainState (its ``step`` is shared by the replicas)."""
  return hasattr(tree, "step") and hasattr(tree, "replace")


def with_seeds(fn, seed_list: Sequence[int], mesh: Mesh | None = None):
  """``fn(state, *data, seed)`` -> ``(state, *data) -> fn's outputs`` on a replica-axis state and
  data, replica r with seed ``seed_list[r]`` (N = 1: the seed as the Python int a single run
  passes). ``mesh``: the replicas split over the devices (``over_replicas``)."""
  n = len(seed_list)
  if n == 1:
    seed = int(seed_list[0])
    return lambda state, *data: over_replicas(
        lambda *args: fn(*args, seed), 1, (0,) * (1 + len(data)))(state, *data)
  seed_array = np.asarray(seed_list, np.int32)
  return lambda state, *data: over_replicas(fn, n, (0,) * (2 + len(data)), mesh)(
      state, *data, seed_array)


def vmap_train_step(step_fn, seed_list: Sequence[int], mesh: Mesh | None = None):
  """The single-run step ``(state, images, labels, mask, seed)`` over the replica axis.

  Returns ``(state, images, labels, mask) -> (state, metrics)`` for a replica-axis state and
  (N, batch, ...) data; replica r draws its augmentation and dropout keys from the streams of
  seed ``seed_list[r]``. A non-finite loss or gradient in any replica leaves the whole state
  unchanged (the run then stops); the metrics' ``finite`` and ``bad_leaves`` (per parameter
  leaf) become whole-run values, those of ``bad_replica`` (-1 if none). Every other metric has
  the leading replica axis.
  ``mesh``: the replicas split over the devices (``over_replicas``).
  """
  per_replica_step = with_seeds(step_fn, seed_list, mesh)

  def replicated_step(state, *data):
    new_state, metrics = per_replica_step(state, *data)
    finite = jnp.all(metrics["finite"])
    new_state = new_state.replace(step=state.step + 1)
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    bad_replica = jnp.where(finite, -1, jnp.argmin(metrics["finite"]))
    metrics = {**metrics, "finite": finite, "bad_replica": bad_replica,
               "bad_leaves": metrics["bad_leaves"][jnp.maximum(bad_replica, 0)]}
    return new_state, metrics

  return replicated_step


def vmap_eval_step(eval_fn, n: int, mesh: Mesh | None = None):
  """``eval_fn(params, batch_stats, images, labels, mask)`` for replica-axis params: every
  replica sees the same test batch; the sums come back with the leading replica axis.
  ``mesh``: the replicas split over the devices (``over_replicas``)."""
  return over_replicas(eval_fn, n, (0, 0, None, None, None), mesh)


def _add_axis(state: Any) -> Any:
  return jax.tree.map(lambda x: x[None], state.replace(step=None)).replace(step=state.step)


_add_axis_jit = jax.jit(_add_axis)
_first_jit = jax.jit(lambda state: unstack(state, 0))


def to_run_layout(state: Any, n: int) -> Any:
  """A TrainState as checkpoints hold it -> the training loop's layout, the replica axis first
  on every leaf but ``step``: unchanged for N > 1; N = 1 gets an axis of length 1."""
  return state if n > 1 else _add_axis_jit(state)


def to_saved_layout(state: Any, n: int) -> Any:
  """Inverse of ``to_run_layout``: the layout of checkpoints (N = 1: a single run's state,
  without the replica axis, as every checkpoint before the axis was written)."""
  return state if n > 1 else _first_jit(state)
