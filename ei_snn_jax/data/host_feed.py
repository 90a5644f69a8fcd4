"""Training batches read on the host and streamed to the devices, for datasets too large for them.

The host path of ``data.placement`` (``placement.py``): instead of gathering ``train_x[idx]``
inside the jitted step from arrays replicated on every device, the host gathers each batch from
its (possibly memory-mapped) arrays and uploads it, laid out with the batch sharding, while the
devices compute the previous steps. The order is unchanged: global step s holds the rows of
``data.batch_indices(seed, epoch, n, batch, in_epoch)`` with ``epoch, in_epoch =
divmod(s, steps_per_epoch)`` (with N replicas, ``training.replicas.batch_indices``: a leading
replica axis, replica r on seed + r), the same padding and mask, so a feed started at any step
resumes a run exactly and the batches equal the device path's.

* ``training_batch_indices``: (idx, mask) of global steps start..end, the order above.
* ``gather_global_batch``: one step's ``TrainBatch`` of global ``jax.Array``s; through
  ``jax.make_array_from_callback``, each process reads only the rows of its own devices' shards.
* ``HostBatchFeed``: a background thread running ``gather_global_batch`` ``prefetch`` steps
  ahead; an iterator and a context manager (``close`` joins the thread); a worker exception is
  raised by ``next`` with its original traceback.
* ``training_feed``: the feed of a training run from its seed, batch size and start step.
* ``memory_map_npz`` (from ``data.memmap``, re-exported): the arrays of an ``np.savez`` file
  (the converted-dataset caches) as read-only memory maps.

Why a thread of our own and not grain: the work per step is one gather from a uint8 array and
one host-to-device copy (augmentation stays on the device, spec §7.4), and both spend their time
in numpy and XLA code outside the Python interpreter lock, so one thread keeps ahead of the
step; grain's strength, per-example Python transforms in worker processes, has nothing to do
here. Grain would also need a custom sampler to reproduce ``data.order`` exactly, its worker
processes need parsed absl flags and a ``__main__`` guard (several seconds to start), and it
would add grain, array-record, protobuf, cloudpickle and etils to the package's dependencies.
"""

from __future__ import annotations

import functools
import queue
import threading
import weakref
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import jax
import numpy as np

from ei_snn_jax.data import order
from ei_snn_jax.data.memmap import memory_map_npz  # noqa: F401 - re-exported


class TrainBatch(NamedTuple):
  """One step's batch as global arrays: images[idx], labels[idx] (int32) and the mask."""
  images: jax.Array    # (batch, ...) or, with replicas, (N, batch, ...); the dataset's dtype
  labels: jax.Array    # (batch,) or (N, batch) int32
  mask: jax.Array      # (batch,) or (N, batch) bool: False on the padding of an epoch's last batch


# ---------------------------------------------------------------------------------------------
# The order of a training run.
# ---------------------------------------------------------------------------------------------

def training_batch_indices(seed: int, n: int, batch_size: int, start_step: int = 0,
                           end_step: int | None = None,
                           num_replicas: int = 1) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Yield (idx, mask) of global steps ``start_step`` .. ``end_step`` - 1 (None: no end).

  One replica: ``data.batch_indices(seed, epoch, n, batch_size, in_epoch)`` with ``epoch,
  in_epoch = divmod(step, num_batches(n, batch_size))``, shape (batch,). N replicas: row r is
  that of seed + r, shape (N, batch), as ``training.replicas.batch_indices``.
  """
  if start_step < 0 or num_replicas < 1:
    raise ValueError(f"start_step={start_step} must be >= 0 and num_replicas={num_replicas} >= 1")
  steps_per_epoch = order.num_batches(n, batch_size)
  seeds = tuple(int(seed) + r for r in range(num_replicas))
  table_epoch, idx, mask = -1, None, None
  step = start_step
  while end_step is None or step < end_step:
    epoch, in_epoch = divmod(step, steps_per_epoch)
    if epoch != table_epoch:   # one permutation per seed and epoch, however many replicas
      (idx, mask), table_epoch = order.epoch_table(seeds, epoch, n, batch_size), epoch
    if num_replicas == 1:
      yield idx[in_epoch, 0], mask[in_epoch, 0]
    else:
      yield idx[in_epoch], mask[in_epoch]
    step += 1


# ---------------------------------------------------------------------------------------------
# One step's global batch.
# ---------------------------------------------------------------------------------------------

def _read_rows(array: Any, rows: np.ndarray) -> np.ndarray:
  """``array[rows]`` for any integer array ``rows``, reading each distinct row once, in
  ascending order (sequential reads from a memory map)."""
  unique, inverse = np.unique(rows.reshape(-1), return_inverse=True)
  block = np.asarray(array[unique])
  return block[inverse].reshape(rows.shape + block.shape[1:])


def _gather_to_devices(array: Any, idx: np.ndarray, sharding: jax.sharding.Sharding,
                       dtype: Any) -> jax.Array:
  """The global array ``array[idx]`` laid out with ``sharding``: the callback is asked for the
  shards of this process's devices only, and reads each distinct shard's rows once."""
  shape = idx.shape + tuple(array.shape[1:])
  lead = idx.ndim
  read: dict[tuple, np.ndarray] = {}

  def shard(index):
    index = tuple(index) if index is not None else (slice(None),) * len(shape)
    key = tuple((s.start, s.stop, s.step) for s in index[:lead])
    if key not in read:
      read[key] = _read_rows(array, idx[index[:lead]])
    return read[key][(slice(None),) * lead + index[lead:]].astype(dtype, copy=False)

  return jax.make_array_from_callback(shape, sharding, shard, dtype=dtype)


def gather_global_batch(images: Any, labels: Any, idx: np.ndarray, mask: np.ndarray,
                        sharding: jax.sharding.Sharding) -> TrainBatch:
  """``TrainBatch(images[idx], labels[idx], mask)`` as global arrays laid out with ``sharding``.

  ``sharding`` must partition only the leading (index) axes, e.g. ``NamedSharding(mesh,
  P("data"))``, or ``P(None, "data")`` with a replica axis, so that it fits images, labels and
  mask alike. Each process reads only the rows its devices hold.
  """
  idx, mask = np.asarray(idx), np.asarray(mask, bool)
  if idx.shape != mask.shape:
    raise ValueError(f"idx {idx.shape} and mask {mask.shape} differ in shape")
  return TrainBatch(_gather_to_devices(images, idx, sharding, images.dtype),
                    _gather_to_devices(labels, idx, sharding, np.int32),
                    jax.make_array_from_callback(mask.shape, sharding, lambda i: mask[i]))


# ---------------------------------------------------------------------------------------------
# The prefetching feed.
# ---------------------------------------------------------------------------------------------

_END = object()   # the worker read every batch


class _WorkerError(NamedTuple):
  error: BaseException


def _produce(index_batches: Iterable[tuple[np.ndarray, np.ndarray]],
             read: Callable[[np.ndarray, np.ndarray], TrainBatch], first_step: int,
             out: queue.Queue, stop: threading.Event) -> None:
  """The worker: ``read`` each (idx, mask) into ``out`` until done, stopped, or failed."""
  step = first_step
  try:
    for idx, mask in index_batches:
      if stop.is_set():
        return
      out.put(read(idx, mask))
      step += 1
    out.put(_END)
  except BaseException as e:  # noqa: BLE001 - handed to the consumer, which raises it
    if hasattr(e, "add_note"):   # Python >= 3.11
      e.add_note(f"(raised in the HostBatchFeed worker thread while reading step {step})")
    out.put(_WorkerError(e))


def _drain(q: queue.Queue) -> None:
  while True:
    try:
      q.get_nowait()
    except queue.Empty:
      return


def _shutdown(thread: threading.Thread, q: queue.Queue, stop: threading.Event) -> None:
  """Stop the worker, unblock its ``put`` by emptying the queue, join it, drop what it read."""
  stop.set()
  while thread.is_alive():
    _drain(q)
    thread.join(timeout=0.01)
  _drain(q)


class HostBatchFeed:
  """``TrainBatch``es of ``index_batches`` read and uploaded by a thread, ``prefetch`` ahead.

  Iterate it (one consumer thread) in a ``with`` block, or call ``close()``: that stops and
  joins the worker and drops the prefetched batches (also done when the feed is garbage
  collected). An exception in the worker is raised by ``next`` as the original exception, its
  traceback reaching into the worker; the feed is then closed. ``next_step`` is the step number
  (counting from ``first_step``) of the batch ``next`` returns next.
  """

  def __init__(self, images: Any, labels: Any,
               index_batches: Iterable[tuple[np.ndarray, np.ndarray]],
               sharding: jax.sharding.Sharding, *, prefetch: int = 2, first_step: int = 0):
    if prefetch < 1:
      raise ValueError(f"prefetch={prefetch} must be >= 1")
    if len(images) != len(labels):
      raise ValueError(f"{len(images)} images but {len(labels)} labels")
    self.next_step = first_step
    self._closed = self._exhausted = False
    self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()
    read = functools.partial(gather_global_batch, images, labels, sharding=sharding)
    self._thread = threading.Thread(
        target=_produce, args=(index_batches, read, first_step, self._queue, stop),
        name=f"HostBatchFeed(first_step={first_step})", daemon=True)
    self._thread.start()
    # Holds no reference to self, so an unclosed feed stops its worker when collected.
    self._shutdown = weakref.finalize(self, _shutdown, self._thread, self._queue, stop)

  def __iter__(self) -> HostBatchFeed:
    return self

  def __next__(self) -> TrainBatch:
    if self._exhausted:
      raise StopIteration
    if self._closed:
      raise ValueError("next() on a closed HostBatchFeed")
    item = self._queue.get()
    if item is _END:
      self._exhausted = True
      self.close()
      raise StopIteration
    if isinstance(item, _WorkerError):
      self.close()
      raise item.error
    self.next_step += 1
    return item

  def close(self) -> None:
    """Stop and join the worker thread and drop the prefetched batches (idempotent)."""
    self._closed = True
    self._shutdown()

  @property
  def worker_alive(self) -> bool:
    """Whether the worker thread is still running."""
    return self._thread.is_alive()

  def __enter__(self) -> HostBatchFeed:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def training_feed(images: Any, labels: Any, *, seed: int, batch_size: int,
                  sharding: jax.sharding.Sharding, start_step: int = 0,
                  end_step: int | None = None, num_replicas: int = 1,
                  prefetch: int = 2) -> HostBatchFeed:
  """The ``HostBatchFeed`` of a training run's global steps ``start_step`` .. ``end_step`` - 1
  in the order of ``training_batch_indices`` (exact resume: start at the restored step).

  ``batch_size`` is per replica; ``sharding`` lays out a (batch, ...) batch, or (N, batch, ...)
  with ``num_replicas`` = N > 1 (e.g. ``NamedSharding(mesh, P(None, "data"))``).
  """
  lead = (batch_size,) if num_replicas == 1 else (num_replicas, batch_size)
  for what, shape in (("images", lead + tuple(images.shape[1:])), ("labels and mask", lead)):
    try:
      sharding.shard_shape(shape)
    except (ValueError, IndexError) as e:
      raise ValueError(f"a batch's {what} of shape {shape} cannot be laid out as {sharding}: "
                       f"{e}") from None
  indices = training_batch_indices(seed, len(images), batch_size, start_step, end_step,
                                   num_replicas)
  return HostBatchFeed(images, labels, indices, sharding, prefetch=prefetch,
                       first_step=start_step)
