"""Training and evaluation order: a function of (seed, epoch) only, so resumption is exact.

The order of an epoch is a permutation drawn from (seed, epoch) (``epoch_permutation``), and
batches are padded to a fixed size with a validity mask (``batch_indices``), reproducing the
reference's ``drop_last=False`` (391 steps per epoch at batch 128 on CIFAR; spec §7.4).
"""

from __future__ import annotations

import functools
from typing import Iterator

import numpy as np

# Third SeedSequence word of the data order, so default_rng([seed, epoch]) used elsewhere (and
# default_rng(seed) == default_rng([seed, 0])) never yields the same stream.
_ORDER_TAG = 0x0DA7A0DE

@functools.lru_cache(maxsize=8)
def _permutation_cached(seed: int, epoch: int, n: int) -> np.ndarray:
  perm = np.random.default_rng([seed, epoch, _ORDER_TAG]).permutation(n)
  perm.setflags(write=False)
  return perm


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  """Training order of one epoch, a function of (seed, epoch) only (spec §7.4, resumption)."""
  if seed < 0 or epoch < 0 or n < 0:
    raise ValueError(f"seed, epoch and n must be >= 0, got {seed}, {epoch}, {n}")
  return _permutation_cached(int(seed), int(epoch), int(n)).copy()


def num_batches(n: int, batch_size: int) -> int:
  """ceil(n / batch_size): the reference's drop_last=False (391 steps at CIFAR batch 128)."""
  if batch_size <= 0:
    raise ValueError(f"batch_size must be positive, got {batch_size}")
  return -(-int(n) // int(batch_size))


def _pad(idx: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  k = idx.shape[0]
  out = np.zeros(batch_size, np.int32)
  out[:k] = idx
  if 0 < k < batch_size:
    out[k:] = idx[0]               # a valid index, so gathers stay in range; masked out
  mask = np.zeros(batch_size, bool)
  mask[:k] = True
  return out, mask


def batch_indices(seed: int, epoch: int, n: int, batch_size: int,
                  step_in_epoch: int) -> tuple[np.ndarray, np.ndarray]:
  """Indices and validity mask of training batch ``step_in_epoch`` (spec §7.4).

  Both have shape (batch_size,); the last batch of an epoch is padded (mask False) so that
  every step has the same shape.
  """
  nb = num_batches(n, batch_size)
  if not 0 <= step_in_epoch < nb:
    raise ValueError(f"step_in_epoch {step_in_epoch} outside [0, {nb})")
  perm = _permutation_cached(int(seed), int(epoch), int(n))
  return _pad(perm[step_in_epoch * batch_size:(step_in_epoch + 1) * batch_size], batch_size)


def epoch_batches(seed: int, epoch: int, n: int, batch_size: int,
                  start_step: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Yield ``batch_indices`` for steps start_step .. end of the epoch (spec §7.4)."""
  for step in range(start_step, num_batches(n, batch_size)):
    yield batch_indices(seed, epoch, n, batch_size, step)


def epoch_table(seeds: tuple[int, ...], epoch: int, n: int,
                batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """(idx, mask) of every step of ``epoch`` for every seed, stacked: shape (steps, len(seeds),
  batch); row [i, r] is ``batch_indices(seeds[r], epoch, n, batch_size, i)``."""
  per_seed = [list(epoch_batches(s, epoch, n, batch_size)) for s in seeds]
  idx = np.stack([np.stack([b[0] for b in batches]) for batches in per_seed], axis=1)
  mask = np.stack([np.stack([b[1] for b in batches]) for batches in per_seed], axis=1)
  return idx, mask


def eval_batches(n: int, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Yield (idx, mask) over 0..n-1 in order, the last batch padded and masked (spec §7.4)."""
  for step in range(num_batches(n, batch_size)):
    lo = step * batch_size
    yield _pad(np.arange(lo, min(lo + batch_size, n), dtype=np.int32), batch_size)
