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

With N = 1 every helper here reduces to the single-run behaviour (unstacked state, one stream).
"""

from __future__ import annotations

import functools
import pathlib
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ei_snn_jax.training import config as config_lib, metrics as metrics_lib
from ei_snn_jax import data as data_lib


def num_replicas(config: ml_collections.ConfigDict) -> int:
  """``config.train.num_replicas`` (1 = an ordinary single run)."""
  return int(config.train.num_replicas)


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
                                         config_lib.config_fingerprint(rc), rc))
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


def per_replica(values: dict[str, Any], n: int) -> list[dict[str, Any]]:
  """{name: value with a leading replica axis} -> one {name: value} per replica.

  With n == 1 the values are unstacked: ``[values]``. With n > 1, scalar entries (the whole-run
  NaN-guard flags) are dropped.
  """
  if n == 1:
    return [values]
  return [{k: v[r] for k, v in values.items() if np.ndim(v)} for r in range(n)]


def mean_metrics(window: list[dict[str, Any]], n: int, mean_fn) -> list[dict[str, float]]:
  """Per-replica ``mean_fn`` (``metrics.mean_metrics``) over a window of host step metrics."""
  split = [per_replica(m, n) for m in window]
  return [mean_fn([s[r] for s in split]) for r in range(n)]


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


def vmap_with_seeds(fn, seed_list: Sequence[int], data_axes: tuple[int | None, ...]):
  """``fn(state, *data, seed)`` vmapped over a stacked state: replica r runs with seed
  ``seed_list[r]``; ``data_axes``: the replica axis of each data argument (None: shared, e.g. the
  dataset on the device path). Returns ``(state, *data) -> fn's outputs, stacked``."""
  seed_array = np.asarray(seed_list, np.int32)
  return lambda state, *data: jax.vmap(fn, in_axes=(state_axes(state), *data_axes, 0))(
      state, *data, seed_array)


def vmap_train_step(step_fn, seed_list: Sequence[int],
                    data_axes: tuple[int | None, ...] = (None, None, 0, 0)):
  """The single-run step ``(state, train_x, train_y, idx, mask, seed)`` vmapped over replicas.

  Returns ``(state, train_x, train_y, idx, mask) -> (state, metrics)`` for a stacked state and
  (N, batch) idx/mask; replica r draws its augmentation and dropout keys from the streams of
  seed ``seed_list[r]``. ``data_axes``: the replica axis of each argument between the state and
  the seed; ``(0, 0, 0)`` for a step ``(state, images, labels, mask, seed)`` on (N, batch, ...)
  gathered batches (the host path). A non-finite loss or gradient in any replica leaves the
  whole stacked state unchanged (the run then stops); the metrics' ``finite`` and ``bad_leaf``
  become whole-run scalars, with ``bad_replica`` (-1 if none). Every other metric has a leading
  replica axis.
  """
  per_replica = vmap_with_seeds(step_fn, seed_list, data_axes)

  def replicated_step(state, *data):
    new_state, metrics = per_replica(state, *data)
    finite = jnp.all(metrics["finite"])
    new_state = new_state.replace(step=state.step + 1)
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    bad_replica = jnp.where(finite, -1, jnp.argmin(metrics["finite"]))
    metrics = {**metrics, "finite": finite, "bad_replica": bad_replica,
               "bad_leaf": metrics["bad_leaf"][jnp.maximum(bad_replica, 0)]}
    return new_state, metrics

  return replicated_step


def vmap_eval_step(eval_fn):
  """``eval_fn(params, batch_stats, *data)`` (data: test_x, test_y, idx, mask, or the gathered
  images, labels, mask) for stacked params: every replica sees the same test batch; the sums
  come back with a leading replica axis."""

  def replicated_eval(params, batch_stats, *data):
    in_axes = (0, 0) + (None,) * len(data)
    return jax.vmap(eval_fn, in_axes=in_axes)(params, batch_stats, *data)

  return replicated_eval
