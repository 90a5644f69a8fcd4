"""Batch sources: what the loop hands the one train step (``steps.py``) for each step.

A source is called with a global step number and returns that step's ``batch``, a tuple of
device arrays uploaded explicitly (never by an ordinary step, which runs under
``jax.transfer_guard``); inside the jitted step, ``source.select(batch, step)`` gives the
(replicas, batch, ...) images, labels and mask. ``shardings`` lays ``batch`` out. Both sources
give every step the rows of its (seed, epoch) order (``data.order``; replica r on seed + r), so
a resumed run, on either, sees exactly the batches of an uninterrupted one.

* ``DeviceBatches``: the dataset replicated on every device and the epoch's index table,
  (steps, replicas, batch), uploaded once per epoch; the step gathers its row there.
* ``HostBatches``: each step's gathered batch, read from the host (possibly memory-mapped)
  arrays and uploaded ``data.host_prefetch`` steps ahead by a ``data.host_feed`` thread; for
  datasets the devices cannot hold.

Images and event-count sequences (DVS) travel the same way; a sequence's time axis is laid out
by the step's input transform (``Experiment.input_sharded``).

The test set has two sources of the same shape (``eval_source``), fed to ``steps.make_eval_step``.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from ei_snn_jax import data as data_lib
from ei_snn_jax.data import host_feed
from ei_snn_jax.training import replicas
from ei_snn_jax.training.experiment import Experiment, host_to_global


def epoch_table(exp: Experiment, epoch: int) -> tuple[np.ndarray, np.ndarray]:
  """The (idx, mask) of every step of ``epoch``, (steps, replicas, batch) host arrays: row
  [i, r] is ``data.batch_indices(seed + r, epoch, n, batch, i)`` (``data.epoch_table``)."""
  return data_lib.epoch_table(tuple(replicas.seeds(exp.config)), epoch,
                              len(exp.dataset.x_train), exp.config.train.batch_size)


def _gather(x, y, idx, mask):
  """(x[idx], y[idx], mask): a batch gathered on the devices."""
  return x[idx], y[idx], mask


class DeviceBatches:
  """The device path: ``(train_x, train_y, epoch_idx, epoch_mask)``, the index table of the
  step's epoch uploaded once per epoch; the step slices its row ``step % steps_per_epoch``."""

  def __init__(self, exp: Experiment):
    self.exp = exp
    rep = exp.replicated
    # (steps, replicas, batch): each step's row laid out as the step's batch
    self.table_sharded = NamedSharding(exp.mesh, P(None, *exp.replica_batch_sharded.spec))
    self.shardings = (rep, rep, self.table_sharded, self.table_sharded)
    self._epoch, self._table = None, None

  def __call__(self, step: int) -> tuple:
    """The batch of global step ``step``."""
    epoch = step // self.exp.steps_per_epoch
    if self._epoch != epoch:       # the epoch's order, uploaded once (explicitly)
      self._table = tuple(host_to_global(a, self.table_sharded)
                          for a in epoch_table(self.exp, epoch))
      self._epoch = epoch
    return (self.exp.train_x, self.exp.train_y, *self._table)

  def select(self, batch: tuple, step) -> tuple:
    """Inside the step: its (replicas, batch, ...) images, labels and mask."""
    train_x, train_y, epoch_idx, epoch_mask = batch
    row = step % self.exp.steps_per_epoch
    idx, mask = (jax.lax.with_sharding_constraint(
        jax.lax.dynamic_index_in_dim(a, row, keepdims=False), self.exp.replica_batch_sharded)
        for a in (epoch_idx, epoch_mask))
    return _gather(train_x, train_y, idx, mask)

  def close(self) -> None:
    """Nothing to release."""

  def __enter__(self) -> DeviceBatches:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def _training_indices(exp: Experiment, start_step: int,
                      end_step: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """(idx, mask), (replicas, batch), of global steps start_step .. end_step - 1."""
  epoch, table = None, None
  for step in range(start_step, end_step):
    e, row = divmod(step, exp.steps_per_epoch)
    if e != epoch:
      epoch, table = e, epoch_table(exp, e)
    yield table[0][row], table[1][row]


class HostBatches:
  """The host path: ``(images, labels, mask)`` of the step, gathered on the host and uploaded
  ahead by a ``data.host_feed`` thread that starts at ``start_step`` (the restored step) and
  ends at ``end_step``. ``close`` (also leaving the context, normally or by an exception) stops
  and joins the thread."""

  def __init__(self, exp: Experiment, start_step: int, end_step: int):
    sharding = exp.replica_batch_sharded
    lead = (exp.num_replicas, exp.config.train.batch_size)
    shape = lead + tuple(exp.dataset.x_train.shape[1:])
    try:
      sharding.shard_shape(shape)
    except (ValueError, IndexError) as e:
      raise ValueError(f"a training batch of shape {shape} cannot be laid out as {sharding}: "
                       f"{e}") from None
    self.shardings = (sharding,) * 3
    self._feed = host_feed.HostBatchFeed(
        exp.dataset.x_train, exp.dataset.y_train, _training_indices(exp, start_step, end_step),
        sharding, prefetch=int(exp.config.data.host_prefetch), first_step=start_step)

  def __call__(self, step: int) -> tuple:
    """The batch of global step ``step`` (steps come in order)."""
    if self._feed.next_step != step:
      raise RuntimeError(f"the host feed is at step {self._feed.next_step}, not {step}")
    return tuple(next(self._feed))

  def select(self, batch: tuple, step) -> tuple:
    """Inside the step: the batch as it came."""
    del step
    return batch

  def close(self) -> None:
    """Stop and join the feed's thread."""
    self._feed.close()

  def __enter__(self) -> HostBatches:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def batch_source(exp: Experiment, start_step: int, end_step: int) -> DeviceBatches | HostBatches:
  """The training batches of steps ``start_step`` .. ``end_step`` - 1 for the run's placement
  (a context manager)."""
  return HostBatches(exp, start_step, end_step) if exp.from_host else DeviceBatches(exp)


class EvalBatches:
  """The test split in ``data.eval_batches`` order (the last batch padded and masked), as
  ``(test_x, test_y, idx, mask)`` on the device path or the gathered ``(images, labels, mask)``
  streamed by a ``data.host_feed`` thread on the host path."""

  def __init__(self, exp: Experiment):
    self.exp = exp
    dat = exp.test_batch_sharded
    self.shardings = (dat,) * 3 if exp.from_host else (exp.replicated,) * 2 + (dat,) * 2

  def select(self, batch: tuple, step) -> tuple:
    """Inside the eval step: the batch's images, labels and mask."""
    del step
    return batch if self.exp.from_host else _gather(*batch)

  @contextlib.contextmanager
  def batches(self) -> Iterator[Iterator[tuple]]:
    """The test batches, in order; leaving the context stops a feed thread."""
    exp = self.exp
    order = data_lib.eval_batches(len(exp.dataset.x_test), exp.config.train.eval_batch_size)
    if not exp.from_host:
      yield ((exp.test_x, exp.test_y, *(host_to_global(a, exp.test_batch_sharded) for a in b))
             for b in order)
      return
    with host_feed.HostBatchFeed(exp.dataset.x_test, exp.dataset.y_test, order,
                                 exp.test_batch_sharded,
                                 prefetch=int(exp.config.data.host_prefetch)) as feed:
      yield (tuple(b) for b in feed)


def eval_source(exp: Experiment) -> EvalBatches:
  """The test-set batch source of ``exp``'s placement."""
  return EvalBatches(exp)
