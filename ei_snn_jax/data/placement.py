"""Where the dataset lives during training: on the devices, or on the host and streamed.

The device path (``training.train.build_experiment``) replicates the uint8 arrays on *every*
device and gathers each batch inside the jitted step, so what one device must hold is the whole
dataset, whatever the number of devices. It is the fast path and stays the choice wherever the
dataset takes at most ``data.device_memory_fraction`` of the smallest device's memory; larger
datasets (Tiny-ImageNet, DVS frames on small GPUs) are read on the host and streamed batch by
batch (``data.host_feed``). ``data.placement`` "device" / "host" overrides the rule.

* ``choose_placement``: the rule, a pure function of sizes.
* ``device_memory_bytes``: the smallest ``memory_stats()['bytes_limit']`` of the devices, or a
  default where the backend reports none (XLA:CPU).
* ``resolve_placement``: the rule applied to a config's data fields and a dataset, printed.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from ei_snn_jax.data.registry import PLACEMENTS

_GB = 1e9
_GIB = 2**30


class Placement(NamedTuple):
  """A placement decision and the sizes it was made from (bytes)."""
  where: str                 # "device" | "host"
  dataset_bytes: int         # what one device would hold on the device path
  device_bytes: int          # memory of the smallest device
  budget_bytes: int          # the part of it the dataset may take ("auto")
  reason: str                # why, in words

  def describe(self) -> str:
    """One log line: the decision with the sizes."""
    return (f"data placement: {self.where} (dataset {self.dataset_bytes / _GB:.3f} GB, budget "
            f"{self.budget_bytes / _GB:.3f} GB of {self.device_bytes / _GB:.3f} GB device "
            f"memory; {self.reason})")


def choose_placement(dataset_bytes: int, device_bytes: int, *, mode: str = "auto",
                     max_fraction: float = 0.25) -> Placement:
  """"device" if ``mode`` says so, or ("auto") if ``dataset_bytes`` <= ``max_fraction`` *
  ``device_bytes``; else "host". ``dataset_bytes``: the arrays one device would hold (the
  device path replicates them, so the device count does not divide this)."""
  if mode not in PLACEMENTS:
    raise ValueError(f"placement mode {mode!r} is not one of {', '.join(PLACEMENTS)}")
  if not 0 < max_fraction <= 1:
    raise ValueError(f"max_fraction={max_fraction!r} must be in (0, 1]")
  if dataset_bytes < 0 or device_bytes <= 0:
    raise ValueError(f"dataset_bytes={dataset_bytes} must be >= 0 and device_bytes="
                     f"{device_bytes} > 0")
  budget = int(max_fraction * device_bytes)
  if mode != "auto":
    return Placement(mode, int(dataset_bytes), int(device_bytes), budget,
                     f"data.placement={mode!r}")
  fits = dataset_bytes <= budget
  reason = (f"auto: {'fits in' if fits else 'exceeds'} {max_fraction:g} of the device memory")
  return Placement("device" if fits else "host", int(dataset_bytes), int(device_bytes), budget,
                   reason)


def device_memory_bytes(devices: Sequence[Any], default_bytes: int) -> tuple[int, bool]:
  """(smallest ``memory_stats()['bytes_limit']`` of ``devices``, True), or (``default_bytes``,
  False) when no device reports one (XLA:CPU returns no memory stats)."""
  limits = []
  for device in devices:
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and stats.get("bytes_limit"):
      limits.append(int(stats["bytes_limit"]))
  if not limits:
    return int(default_bytes), False
  return min(limits), True


def dataset_nbytes(dataset: Any) -> int:
  """Bytes of a ``Dataset``'s four arrays (what the device path puts on each device)."""
  return int(sum(a.nbytes for a in (dataset.x_train, dataset.y_train, dataset.x_test,
                                    dataset.y_test)))


def resolve_placement(data_cfg: Any, dataset_bytes: int, devices: Sequence[Any] | None = None,
                      log: Callable[[str], None] | None = print) -> Placement:
  """``choose_placement`` for ``config.data`` (placement, device_memory_fraction,
  assumed_device_memory_gb) on ``devices`` (default: this process's), logged on process 0.

  With several processes the smallest device memory of all of them is used, so that every
  process takes the same path (they run one program).
  """
  devices = jax.local_devices() if devices is None else devices
  default = int(float(data_cfg.assumed_device_memory_gb) * _GB)
  device_bytes, reported = device_memory_bytes(devices, default)
  if jax.process_count() > 1:   # as (GiB, rest) int32 pairs: JAX gathers no int64 without x64
    pairs = multihost_utils.process_allgather(np.array(divmod(device_bytes, _GIB), np.int32))
    device_bytes = min(int(gib) * _GIB + int(rest) for gib, rest in np.reshape(pairs, (-1, 2)))
  decision = choose_placement(dataset_bytes, device_bytes, mode=str(data_cfg.placement),
                              max_fraction=float(data_cfg.device_memory_fraction))
  if not reported:
    decision = decision._replace(reason=decision.reason + ", device memory from "
                                 "data.assumed_device_memory_gb (the backend reports none)")
  if log is not None and jax.process_index() == 0:
    log(decision.describe())
  return decision
