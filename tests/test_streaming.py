"""The host-side data path: the placement rule (ei_snn_jax/data/placement.py) decides by size
whether a dataset stays on the devices, and logs the decision with the sizes."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from ei_snn_jax import data
from ei_snn_jax.data import placement
from ei_snn_jax.training import config as config_lib

N = 100


def dataset(n: int = N) -> tuple[np.ndarray, np.ndarray]:
  """Images whose pixels spell their row (row i is filled with i), labels i % 10."""
  x = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 4, 4, 3)).copy()
  return x, (np.arange(n) % 10).astype(np.int64)


# ------------------------------------------------------------------------------------------------
# The placement rule.

GB = 10**9
TINY_IMAGENET = 110_000 * 64 * 64 * 3 + 110_000 * 4     # train + val images, int32 labels
CIFAR10 = 60_000 * 32 * 32 * 3 + 60_000 * 4


def test_placement_rule_on_given_sizes():
  rule = placement.choose_placement
  assert rule(TINY_IMAGENET, 4 * GB).where == "host"           # 1.35 GB > 0.25 * 4 GB
  assert rule(TINY_IMAGENET, 80 * GB).where == "device"
  assert rule(CIFAR10, 4 * GB).where == "device"
  assert rule(CIFAR10, 4 * GB, max_fraction=0.01).where == "host"
  assert rule(250, 1000).where == "device" and rule(251, 1000).where == "host"  # budget inclusive
  forced = rule(10, 1000, mode="host")
  assert forced.where == "host" and "data.placement='host'" in forced.reason
  assert rule(10**12, 1000, mode="device").where == "device"
  line = rule(TINY_IMAGENET, 4 * GB).describe()
  assert line == ("data placement: host (dataset 1.352 GB, budget 1.000 GB of 4.000 GB device "
                  "memory; auto: exceeds 0.25 of the device memory)")
  for kwargs in ({"mode": "gpu"}, {"max_fraction": 0}, {"max_fraction": 1.5}):
    with pytest.raises(ValueError):
      rule(10, 1000, **kwargs)


class FakeDevice:
  def __init__(self, limit):
    self.limit = limit

  def memory_stats(self):
    return None if self.limit is None else {"bytes_limit": self.limit, "bytes_in_use": 0}


def test_device_memory_is_the_smallest_reported_limit_else_the_default():
  assert placement.device_memory_bytes([FakeDevice(8 * GB), FakeDevice(6 * GB)], 1) == (6 * GB,
                                                                                       True)
  assert placement.device_memory_bytes([FakeDevice(None)], 16 * GB) == (16 * GB, False)
  assert placement.device_memory_bytes(jax.local_devices(), 3) == (3, False)   # XLA:CPU


def test_resolve_placement_reads_the_config_and_logs_the_sizes():
  cfg = config_lib.base_config()
  assert config_lib.PLACEMENTS == placement.PLACEMENTS
  lines = []
  x, y = dataset()
  ds = data.Dataset(x, y, x[:10], y[:10], 10, "synthetic")
  assert placement.dataset_nbytes(ds) == x.nbytes + y.nbytes + x[:10].nbytes + y[:10].nbytes
  decision = placement.resolve_placement(cfg.data, TINY_IMAGENET, [FakeDevice(4 * GB)],
                                         log=lines.append)
  assert decision.where == "host" and lines == [decision.describe()]
  cfg.data.placement = "device"
  assert placement.resolve_placement(cfg.data, TINY_IMAGENET, [FakeDevice(4 * GB)],
                                     log=None).where == "device"
  cfg.data.placement, cfg.data.assumed_device_memory_gb = "auto", 2.0
  decision = placement.resolve_placement(cfg.data, CIFAR10, [FakeDevice(None)], log=None)
  assert decision.where == "device" and decision.device_bytes == 2 * GB
  assert "data.assumed_device_memory_gb" in decision.reason
  cfg.data.device_memory_fraction = 0.05
  assert placement.resolve_placement(cfg.data, CIFAR10, [FakeDevice(None)],
                                     log=None).where == "host"
  config_lib.validate_config(cfg)
