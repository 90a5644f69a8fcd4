"""The host-side data path (ei_snn_jax/data/host_feed.py, placement.py): the streamed batches are
those of data.batch_indices / replicas.batch_indices from any start step, memory maps work, the
prefetch thread never outlives its feed and hands its errors to the consumer, the placement rule
decides by size, and batches are sharded per device and read per process (subprocesses with 8
fake devices, and two processes of 4 devices each)."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import threading
import traceback

import jax
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ei_snn_jax import data
from ei_snn_jax.data import host_feed, placement
from ei_snn_jax.training import config as config_lib, replicas

REPO = pathlib.Path(__file__).resolve().parents[1]
N, BATCH = 100, 16                       # 7 steps per epoch; the last holds 4 examples + 12 pad
STEPS_PER_EPOCH = data.num_batches(N, BATCH)


def dataset(n: int = N) -> tuple[np.ndarray, np.ndarray]:
  """Images whose pixels spell their row (row i is filled with i), labels i % 10."""
  x = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 4, 4, 3)).copy()
  return x, (np.arange(n) % 10).astype(np.int64)


def sharding(*spec) -> NamedSharding:
  """``spec`` over a 1-D "data" mesh of every device (8 fake CPU devices under conftest)."""
  return NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P(*spec))


def collect(feed) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """Every batch of ``feed`` as host arrays (images, labels, mask); the feed is closed."""
  with feed:
    return [tuple(np.asarray(a) for a in batch) for batch in feed]


def feed_threads() -> list[threading.Thread]:
  """The live worker threads of every HostBatchFeed."""
  return [t for t in threading.enumerate() if t.name.startswith("HostBatchFeed")]


# ------------------------------------------------------------------------------------------------
# Order and resume.


def test_batches_follow_batch_indices_over_epochs_with_the_padded_last_batch():
  x, y = dataset()
  steps = 3 * STEPS_PER_EPOCH
  got = collect(host_feed.training_feed(x, y, seed=5, batch_size=BATCH, sharding=sharding("data"),
                                        end_step=steps))
  assert len(got) == steps
  for step, (images, labels, mask) in enumerate(got):
    idx, want_mask = data.batch_indices(5, step // STEPS_PER_EPOCH, N, BATCH,
                                        step % STEPS_PER_EPOCH)
    np.testing.assert_array_equal(images, x[idx])
    np.testing.assert_array_equal(labels, y[idx])
    np.testing.assert_array_equal(mask, want_mask)
    assert images.dtype == np.uint8 and labels.dtype == np.int32 and mask.dtype == bool
  last = got[STEPS_PER_EPOCH - 1]
  assert last[2].sum() == N - (STEPS_PER_EPOCH - 1) * BATCH == 4
  # Every epoch visits each example once, in a different order.
  epochs = []
  for e in range(3):
    batches = got[e * STEPS_PER_EPOCH:(e + 1) * STEPS_PER_EPOCH]
    epochs.append(np.concatenate([images[mask, 0, 0, 0] for images, _, mask in batches]))
  for rows in epochs:
    assert sorted(rows.tolist()) == list(range(N))
  assert not np.array_equal(epochs[0], epochs[1])


def test_replicas_follow_replicas_batch_indices():
  x, y = dataset()
  cfg = config_lib.base_config()
  cfg.seed, cfg.train.batch_size, cfg.train.num_replicas = 7, BATCH, 3
  steps = 2 * STEPS_PER_EPOCH
  got = collect(host_feed.training_feed(x, y, seed=7, batch_size=BATCH, num_replicas=3,
                                        sharding=sharding(None, "data"), end_step=steps))
  assert len(got) == steps
  for step, (images, labels, mask) in enumerate(got):
    idx, want_mask = replicas.batch_indices(cfg, step // STEPS_PER_EPOCH, N,
                                            step % STEPS_PER_EPOCH)
    assert images.shape == (3, BATCH, 4, 4, 3) and idx.shape == (3, BATCH)
    np.testing.assert_array_equal(images, x[idx])
    np.testing.assert_array_equal(labels, y[idx])
    np.testing.assert_array_equal(mask, want_mask)
  assert not np.array_equal(got[0][0][0], got[0][0][1])   # the replicas' orders differ


@pytest.mark.parametrize("start", [1, 6, 7, 10, 20])
def test_resume_from_any_step_equals_the_uninterrupted_run(start):
  """Mid-epoch, the padded last batch, an epoch boundary: the tail is identical."""
  x, y = dataset()
  end = 3 * STEPS_PER_EPOCH
  full = collect(host_feed.training_feed(x, y, seed=11, batch_size=BATCH,
                                         sharding=sharding("data"), end_step=end))
  feed = host_feed.training_feed(x, y, seed=11, batch_size=BATCH, sharding=sharding("data"),
                                 start_step=start, end_step=end)
  assert feed.next_step == start
  resumed = collect(feed)
  assert feed.next_step == end
  assert len(resumed) == end - start
  for a, b in zip(full[start:], resumed):
    for u, v in zip(a, b):
      np.testing.assert_array_equal(u, v)


def test_endless_feed_and_training_batch_indices_agree():
  idx = list(host_feed.training_batch_indices(3, N, BATCH, start_step=4, end_step=30))
  assert len(idx) == 26
  for step, (i, m) in enumerate(idx, start=4):
    want_i, want_m = data.batch_indices(3, step // STEPS_PER_EPOCH, N, BATCH,
                                        step % STEPS_PER_EPOCH)
    np.testing.assert_array_equal(i, want_i)
    np.testing.assert_array_equal(m, want_m)
  x, y = dataset()
  with host_feed.training_feed(x, y, seed=3, batch_size=BATCH, sharding=sharding("data"),
                               start_step=4) as feed:   # no end_step: runs until closed
    for _ in range(40):
      batch = next(feed)
    assert feed.next_step == 44
  idx, _ = data.batch_indices(3, 43 // STEPS_PER_EPOCH, N, BATCH, 43 % STEPS_PER_EPOCH)
  np.testing.assert_array_equal(np.asarray(batch.images), x[idx])


# ------------------------------------------------------------------------------------------------
# Memory maps.


def test_memory_mapped_npy_and_npz_stream_like_arrays(tmp_path):
  x, y = dataset()
  np.save(tmp_path / "x.npy", x)
  np.savez(tmp_path / "cache.npz", x_train=x, y_train=y, format=np.asarray("tiny-imagenet-v1"))
  x_npy = np.load(tmp_path / "x.npy", mmap_mode="r")
  arrays = host_feed.memory_map_npz(tmp_path / "cache.npz")
  assert isinstance(x_npy, np.memmap) and isinstance(arrays["x_train"], np.memmap)
  assert str(arrays["format"]) == "tiny-imagenet-v1"          # 0-d: read, not mapped
  np.testing.assert_array_equal(arrays["x_train"], x)
  np.testing.assert_array_equal(arrays["y_train"], y)
  want = collect(host_feed.training_feed(x, y, seed=2, batch_size=BATCH,
                                         sharding=sharding("data"), end_step=9))
  for images in (x_npy, arrays["x_train"]):
    got = collect(host_feed.training_feed(images, arrays["y_train"], seed=2, batch_size=BATCH,
                                          sharding=sharding("data"), end_step=9))
    for a, b in zip(want, got):
      for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)


def test_memory_map_npz_refuses_compressed_files(tmp_path):
  x, _ = dataset()
  np.savez_compressed(tmp_path / "c.npz", x_train=x)
  with pytest.raises(ValueError, match="x_train.npy is compressed"):
    host_feed.memory_map_npz(tmp_path / "c.npz")


# ------------------------------------------------------------------------------------------------
# The prefetch thread.


def test_close_mid_stream_joins_the_worker_and_next_then_fails():
  x, y = dataset()
  feed = host_feed.training_feed(x, y, seed=1, batch_size=BATCH, sharding=sharding("data"),
                                 prefetch=2)          # endless: the worker blocks on a full queue
  next(feed)
  assert feed.worker_alive
  feed.close()
  assert not feed.worker_alive and not feed_threads()
  with pytest.raises(ValueError, match="closed"):
    next(feed)
  feed.close()                                        # idempotent


def test_exhausted_feed_has_no_thread_and_keeps_stopping():
  x, y = dataset()
  feed = host_feed.training_feed(x, y, seed=1, batch_size=BATCH, sharding=sharding("data"),
                                 end_step=3)
  assert len(list(feed)) == 3
  assert not feed.worker_alive
  with pytest.raises(StopIteration):
    next(feed)


def test_consumer_exception_inside_with_stops_the_worker():
  x, y = dataset()
  with pytest.raises(KeyError, match="the training step failed"):
    with host_feed.training_feed(x, y, seed=1, batch_size=BATCH, sharding=sharding("data")) as feed:
      next(feed)
      raise KeyError("the training step failed")
  assert not feed.worker_alive and not feed_threads()


def test_unclosed_feed_stops_its_worker_when_collected():
  x, y = dataset()
  feed = host_feed.training_feed(x, y, seed=1, batch_size=BATCH, sharding=sharding("data"))
  next(feed)
  thread = feed._thread
  del feed
  thread.join(timeout=10)
  assert not thread.is_alive()


class CorruptAfter:
  """An image array whose reads fail from the ``k``-th on, like a truncated file."""

  def __init__(self, array: np.ndarray, k: int):
    self.array, self.k, self.reads = array, k, 0
    self.shape, self.dtype = array.shape, array.dtype

  def __len__(self) -> int:
    return len(self.array)

  def __getitem__(self, rows):
    self.reads += 1
    if self.reads > self.k:
      raise OSError("corrupt block in the image file")
    return self.array[rows]


def test_worker_exception_reaches_the_consumer_with_its_traceback():
  x, y = dataset()
  images = CorruptAfter(x, k=3 * jax.device_count())   # three steps read, the fourth fails
  feed = host_feed.training_feed(images, y, seed=1, batch_size=BATCH, sharding=sharding("data"))
  for _ in range(3):
    next(feed)
  with pytest.raises(OSError, match="corrupt block") as e:
    next(feed)
  frames = [f.name for f in traceback.extract_tb(e.value.__traceback__)]
  assert "__getitem__" in frames and "_produce" in frames      # the worker's own frames
  assert "while reading step 3" in "".join(traceback.format_exception(e.value))
  assert not feed.worker_alive and not feed_threads()
  with pytest.raises(ValueError, match="closed"):
    next(feed)


def test_index_error_in_the_worker_surfaces():
  x, y = dataset()
  bad = [(np.arange(BATCH), np.ones(BATCH, bool)), (np.full(BATCH, N + 5), np.ones(BATCH, bool))]
  with host_feed.HostBatchFeed(x, y, bad, sharding("data")) as feed:
    next(feed)
    with pytest.raises(IndexError):
      next(feed)
  assert not feed_threads()


def test_bad_arguments_fail_at_construction():
  x, y = dataset()
  with pytest.raises(ValueError, match="100 images but 99 labels"):
    host_feed.HostBatchFeed(x, y[:-1], [], sharding("data"))
  with pytest.raises(ValueError, match="prefetch=0"):
    host_feed.HostBatchFeed(x, y, [], sharding("data"), prefetch=0)
  if jax.device_count() > 1:
    with pytest.raises(ValueError, match="cannot be laid out"):
      host_feed.training_feed(x, y, seed=0, batch_size=jax.device_count() + 1,
                              sharding=sharding("data"))
  assert not feed_threads()


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
  """A device whose memory_stats report ``limit`` bytes (None: no stats, like XLA:CPU)."""

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


# ------------------------------------------------------------------------------------------------
# Shards per device and rows per process, in fresh processes.

SHARD_SCRIPT = r"""
import json, sys
import jax, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from ei_snn_jax import data
from ei_snn_jax.data import host_feed, placement
from ei_snn_jax.training import config

rank, port = int(sys.argv[1]), sys.argv[2]
if port != "-":
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(f"127.0.0.1:{port}", 2, rank)

class Counting:
  def __init__(self, a): self.a, self.shape, self.dtype, self.rows = a, a.shape, a.dtype, []
  def __len__(self): return len(self.a)
  def __getitem__(self, rows):
    self.rows += np.asarray(rows).ravel().tolist()
    return self.a[rows]

n, batch, seed = 100, 16, 4
x = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None], (n, 2, 2, 1)).copy()
y = np.arange(n) % 10
report = {"devices": jax.device_count(), "local": jax.local_device_count(), "steps": [],
          "rows_read": []}
for shape, axes in (((jax.device_count(),), ("data",)), ((jax.device_count() // 2, 2), ("data", "model"))):
  mesh = Mesh(np.array(jax.devices()).reshape(shape), axes)
  images = Counting(x)
  with host_feed.training_feed(images, y, seed=seed, batch_size=batch, end_step=8,
                               sharding=NamedSharding(mesh, P("data"))) as feed:
    for step, b in enumerate(feed):
      idx, mask = data.batch_indices(seed, step // 7, n, batch, step % 7)
      shards = []
      for s in b.images.addressable_shards:
        (sl,) = s.index[:1]
        want = x[idx][sl]
        assert np.array_equal(np.asarray(s.data), want), (step, s.device)
        lab = [t for t in b.labels.addressable_shards if t.device == s.device][0]
        msk = [t for t in b.mask.addressable_shards if t.device == s.device][0]
        assert np.array_equal(np.asarray(lab.data), y[idx][sl])
        assert np.array_equal(np.asarray(msk.data), mask[sl])
        shards.append([s.device.id, sl.start, sl.stop, list(s.data.shape)])
      report["steps"].append({"mesh": list(shape), "step": step, "shards": shards})
  report["rows_read"].append(len(images.rows))
decision = placement.resolve_placement(config.base_config().data, 10**9)
report["placement"] = decision.where
print("REPORT " + json.dumps(report), flush=True)
if port != "-":
  jax.distributed.shutdown()   # while both processes are alive, not at interpreter exit
"""


def run_shard_script(xla_devices: int, ranks: list[int], port: str) -> list[dict]:
  """SHARD_SCRIPT's reports from one process per rank (port "-": no jax.distributed)."""
  env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={xla_devices}")
  procs = [subprocess.Popen([sys.executable, "-c", SHARD_SCRIPT, str(r), port], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for r in ranks]
  outputs, finished = [], True
  try:
    for p in procs:
      outputs.append(p.communicate(timeout=120)[0])
  except subprocess.TimeoutExpired:
    finished = False
    for p in procs:
      p.kill()
    outputs = [p.communicate()[0] for p in procs]
  finally:
    for p in procs:          # one failed process would leave its peer waiting for it
      if p.poll() is None:
        p.kill()
        p.wait()
  reported = [any(l.startswith("REPORT ") for l in out.splitlines()) for out in outputs]
  if not finished and not all(reported):   # say where each process was
    tails = [f"rank {r}: ...{out[-1500:]}" for r, out in zip(ranks, outputs)]
    pytest.fail("a process did not finish in 120 s:\n" + "\n".join(tails))
  # Twice in CI under load, both processes printed their reports and then did not exit within
  # the time (JAX's distributed teardown): what this checks, the rows and shards, is in them.
  reports = []
  for p, out in zip(procs, outputs):
    assert not finished or p.returncode == 0, out[-3000:]
    reports.append(json.loads(next(l for l in out.splitlines() if l.startswith("REPORT "))[7:]))
  return reports


def distinct_rows(step: int, blocks) -> int:
  """Rows the feed reads for ``step`` on the row blocks [lo, hi) of one process's devices:
  each block once, each distinct row of a block once."""
  idx, _ = data.batch_indices(4, step // 7, 100, 16, step % 7)
  return sum(len(np.unique(idx[lo:hi])) for lo, hi in set(blocks))


def test_batches_are_sharded_over_8_devices_in_a_fresh_process():
  (report,) = run_shard_script(8, [0], "-")
  assert report["devices"] == report["local"] == 8
  assert len(report["steps"]) == 2 * 8
  for step in report["steps"]:
    shards = step["shards"]
    assert sorted(s[0] for s in shards) == list(range(8))
    if step["mesh"] == [8]:        # 2 rows on each of the 8 devices
      assert sorted((s[1], s[2]) for s in shards) == [(2 * k, 2 * k + 2) for k in range(8)]
      assert all(s[3] == [2, 2, 2, 1] for s in shards)
    else:                          # (4, 2) mesh: 4 rows per device, each block on 2 devices
      assert sorted((s[1], s[2]) for s in shards) == [(4 * k, 4 * k + 4) for k in range(4)
                                                      for _ in range(2)]
      assert all(s[3] == [4, 2, 2, 1] for s in shards)
  # Each block is read once (not once per device holding it); the epoch's last batch (step 6,
  # 4 rows + padding that repeats its first row) reads fewer rows.
  blocks = {"[8]": [(2 * k, 2 * k + 2) for k in range(8)], "[4, 2]": [(4 * k, 4 * k + 4)
                                                                      for k in range(4)]}
  want = [sum(distinct_rows(step, blocks[m]) for step in range(8)) for m in ("[8]", "[4, 2]")]
  assert report["rows_read"] == want
  assert report["placement"] == "device"


def free_port() -> int:
  """A free TCP port on localhost for the coordinator."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_each_read_only_their_own_rows():
  """2 processes x 4 devices: each holds and reads only its half of every batch."""
  reports = run_shard_script(4, [0, 1], str(free_port()))
  for report in reports:
    assert report["devices"] == 8 and report["local"] == 4
    assert report["placement"] == "device"        # the same decision on both (all-gathered)
  for m, mesh in enumerate(([8], [4, 2])):
    own_blocks = [set(), set()]
    for step in range(8):
      per_process = [[s for st in r["steps"] if st["mesh"] == mesh and st["step"] == step
                      for s in st["shards"]] for r in reports]
      blocks = [{(s[1], s[2]) for s in shards} for shards in per_process]
      assert [len(shards) for shards in per_process] == [4, 4]
      assert not blocks[0] & blocks[1]                      # no row block on both processes
      assert sorted(blocks[0] | blocks[1])[0][0] == 0
      assert sum(hi - lo for lo, hi in blocks[0] | blocks[1]) == 16   # together: the batch
      for p in range(2):
        own_blocks[p] |= blocks[p]
    for p, report in enumerate(reports):
      assert report["rows_read"][m] == sum(distinct_rows(step, own_blocks[p])
                                           for step in range(8))
