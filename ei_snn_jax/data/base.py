"""The types every dataset shares: ``Dataset``, ``DataError`` and the subset rules (spec §7.4).

A dataset is four host arrays: NHWC uint8 images (or unsigned event counts) and int32 labels,
split into train and test. Every data problem raises ``DataError`` with one line naming the
problem and the fix. This module imports no dataset module.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping

import numpy as np

from ei_snn_jax import errors

log = logging.getLogger(__name__)

ARRAY_KEYS = ("x_train", "y_train", "x_test", "y_test")
_SUBSET_SEED = 0x5B5E7


class DataError(errors.UserError, ValueError):
  """A data problem; the message is one line naming the problem and the fix (spec §7.4)."""

  def __init__(self, message: str):
    super().__init__(" ".join(str(message).split()))


@dataclasses.dataclass(frozen=True, eq=False)   # arrays: compare fields explicitly
class Dataset:
  """Train/test split as host arrays: NHWC uint8 images, int32 labels (spec §7.4)."""
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  name: str

  @property
  def num_train(self) -> int:
    """Number of training examples."""
    return int(self.x_train.shape[0])

  @property
  def num_test(self) -> int:
    """Number of test examples."""
    return int(self.x_test.shape[0])


def option(data_cfg: Any, key: str, default: Any = None) -> Any:
  """``data_cfg.key`` of a ``config.data`` (ConfigDict, mapping or object); ``default`` when it
  is missing or None."""
  if isinstance(data_cfg, Mapping) or hasattr(data_cfg, "get"):
    try:
      value = data_cfg.get(key, default)
    except (AttributeError, KeyError):
      value = default
  else:
    value = getattr(data_cfg, key, default)
  return default if value is None else value


def _check_count(k: int, field: str) -> None:
  if k < 0:
    raise DataError(f"{field} = {k} is negative: use 0 (all examples) or a positive count")


def first_subset(x: np.ndarray, y: np.ndarray, k: int, field: str) -> tuple[np.ndarray, ...]:
  """The first ``k`` examples (0 = all); more than there are is all, with a warning."""
  _check_count(k, field)
  if k == 0:
    return x, y
  if k > x.shape[0]:
    log.warning("%s = %d exceeds the %d available examples; using all", field, k, x.shape[0])
  return x[:k], y[:k]


def fixed_subset(x: np.ndarray, y: np.ndarray, k: int, field: str) -> tuple[np.ndarray, ...]:
  """A fixed random ``k`` examples in stored order (0 = all), the same in every run: the subset
  of a dataset stored in class order, whose first ``k`` would hold few classes."""
  _check_count(k, field)
  if k == 0 or k >= x.shape[0]:
    return x, y
  keep = np.sort(np.random.default_rng(_SUBSET_SEED).permutation(x.shape[0])[:k])
  return x[keep], y[keep]
