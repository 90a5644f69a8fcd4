"""The static pieces of a run: config, model, optimizer, dataset, device mesh, input transforms.

``build_experiment(config)`` validates the config, builds the 1-D device mesh (multi-host
through ``distributed.py``), loads the dataset as uint8 and places it (``data.placement``):
replicated on the devices, or left on the host (memory-mapped) for ``batches.HostBatches`` to
stream.

The mesh's one axis ("data") splits one of two things (``replicas_over_devices``):
* the batch: data parallel, every device holding the parameters of every replica and its share
  of each replica's batch (a single run, ``train.num_replicas`` = 1, always does this);
* the replicas (``train.num_replicas`` = N > 1, a multiple of the device count, one process):
  each device holds N / devices whole replicas (state and batches) and trains them on its own.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ei_snn_jax import data as data_lib, models
from ei_snn_jax.data import placement as placement_lib, transforms
from ei_snn_jax.training import config as config_lib, distributed, optim, replicas

Array = jax.Array


def make_mesh(num_devices: int = 0) -> Mesh:
  """1-D data-parallel mesh over the first ``num_devices`` devices (0 = all)."""
  devices = jax.devices()
  if num_devices:
    if num_devices > len(devices):
      raise config_lib.ConfigError(
          f"parallel.num_devices={num_devices} but only {len(devices)} devices are visible: "
          f"set parallel.num_devices<={len(devices)} (0 = all)")
    devices = devices[:num_devices]
  return Mesh(np.array(devices), ("data",))


def host_to_global(x: Any, sharding: NamedSharding) -> Array:
  """A host array that every process holds identically -> a global ``jax.Array`` laid out as
  ``sharding``. On one host this is a plain transfer; on several hosts jit refuses numpy inputs
  with a sharded layout, and each process supplies the shards of its own devices from ``x``."""
  x = np.asarray(x)
  return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


@dataclasses.dataclass
class Experiment:
  """The static pieces of a run: config, model, optimizer, data, mesh.

  ``train_x`` ... ``test_y``: the dataset replicated on the devices, or None when the run
  streams it from the host (``placement.where == "host"``, see ``from_host``).
  """
  config: ml_collections.ConfigDict
  model: Any
  tx: optax.GradientTransformation
  schedule: optax.Schedule
  dataset: data_lib.Dataset
  mesh: Mesh
  steps_per_epoch: int
  total_steps: int
  train_x: Array | None
  train_y: Array | None
  test_x: Array | None
  test_y: Array | None
  placement: placement_lib.Placement

  @property
  def from_host(self) -> bool:
    """Whether the batches are read on the host and streamed (the host path of
    ``data.placement``) rather than gathered from arrays on the devices."""
    return self.placement.where == "host"

  @property
  def replicated(self) -> NamedSharding:
    """Sharding of everything every device holds whole (state, dataset, metrics)."""
    return NamedSharding(self.mesh, P())

  @property
  def batch_sharded(self) -> NamedSharding:
    """Sharding of a (batch, ...) array: the batch axis over the devices."""
    return NamedSharding(self.mesh, P("data"))

  @functools.cached_property
  def replicas_over_devices(self) -> bool:
    """Whether the devices split the replicas rather than the batch: ``train.num_replicas`` =
    N > 1 on several devices, N a multiple of their number, in one process.

    Each device then trains N / devices whole replicas on its own (``replicas.over_replicas``
    under ``shard_map``): no collective in the step. Splitting the batch instead, XLA gathers
    every replica's batch to every device at each convolution: vmap turns a convolution with
    per-replica kernels into a grouped convolution, which XLA's SPMD partitioner does not split
    over the batch (openxla/xla#47945; E-I VGG-8 at 1/8 width, 2 replicas on 8 CPU devices:
    7.6 MB of all-gathers per train step against 12 KB for one replica).
    """
    return replicas.over_devices(self.num_replicas, self.mesh.devices.size, jax.process_count())

  @property
  def replica_sharded(self) -> NamedSharding:
    """Sharding of an array with the leading replica axis (the run-layout state's leaves but
    ``step``, per-replica metrics): the replicas over the devices (``replicas_over_devices``),
    else whole on every device."""
    return NamedSharding(self.mesh, P("data") if self.replicas_over_devices else P())

  @property
  def replica_batch_sharded(self) -> NamedSharding:
    """Sharding of a training batch (replicas, batch, ...): the replica axis over the devices
    (``replicas_over_devices``), else the batch axis."""
    return NamedSharding(self.mesh, P("data") if self.replicas_over_devices else P(None, "data"))

  @property
  def test_batch_sharded(self) -> NamedSharding:
    """Sharding of a test batch (batch, ...), which every replica sees: the batch axis over the
    devices, or whole on every device when the devices hold replicas."""
    return self.replicated if self.replicas_over_devices else self.batch_sharded

  @property
  def input_sharded(self) -> NamedSharding:
    """Sharding of one replica's model input when the devices split the batch: the batch axis,
    axis 1 of DVS sequences (T, B, ...)."""
    if transforms.is_sequence(self.config.data.name):
      return NamedSharding(self.mesh, P(None, "data"))
    return self.batch_sharded

  @property
  def num_replicas(self) -> int:
    """``train.num_replicas``: the length of the state's replica axis (see ``replicas``)."""
    return replicas.num_replicas(self.config)

  @functools.cached_property
  def train_transform(self) -> Callable[[Array, Array], Array]:
    """(key, uint8 batch) -> the augmented model input (spec §7.4); built once per run."""
    c = self.config
    return transforms.train_transform(c.data.name, bool(c.data.augment), c.data.cutout_fill)

  @functools.cached_property
  def eval_transform(self) -> Callable[[Array], Array]:
    """uint8 batch -> the model input at test time; built once per run."""
    return transforms.eval_transform(self.config.data.name)


def build_experiment(config: ml_collections.ConfigDict) -> Experiment:
  """Validate ``config`` and build everything a run needs except its state.

  The dataset's arrays are memory-mapped where they come from a file (``load_dataset(...,
  memory_map=True)``); ``data.placement`` (``placement.resolve_placement``, one printed line)
  then either uploads them to every device or leaves them on the host to be streamed.
  """
  config_lib.validate_config(config)   # before a multi-host start or any device work
  if config.parallel.distributed:
    distributed.initialize_distributed(config.parallel)
  mesh = make_mesh(config.parallel.num_devices)
  config_lib.validate_config(config, num_devices=mesh.devices.size)
  dataset = data_lib.load_dataset(config.data, seed=config.seed, T=config.model.T,
                                  memory_map=True)
  local = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
  placement = placement_lib.resolve_placement(config.data, placement_lib.dataset_nbytes(dataset),
                                              local)
  model = models.create_model(config.model, dataset.num_classes)
  steps_per_epoch = data_lib.num_batches(len(dataset.x_train), config.train.batch_size)
  total_steps = steps_per_epoch * config.train.epochs
  tx, schedule = optim.make_optimizer(
      config.optim.lr, config.optim.init_lr, config.optim.warmup_epochs * steps_per_epoch,
      total_steps, config.optim.weight_decay, config.optim.momentum,
      config.optim.momentum_first_step)
  if placement.where == "host":   # nothing on the devices: batches.HostBatches streams them
    arrays = (None,) * 4
  else:
    rep = NamedSharding(mesh, P())
    arrays = (host_to_global(dataset.x_train, rep),
              host_to_global(dataset.y_train.astype(np.int32), rep),
              host_to_global(dataset.x_test, rep),
              host_to_global(dataset.y_test.astype(np.int32), rep))
  exp = Experiment(config, model, tx, schedule, dataset, mesh, steps_per_epoch, total_steps,
                   *arrays, placement)
  n, devices = exp.num_replicas, mesh.devices.size
  if n > 1 and devices > 1:
    if exp.replicas_over_devices:
      print(f"replicas: {n} over {devices} devices, {n // devices} whole replica(s) on each",
            flush=True)
    else:
      fit = max(d for d in range(1, devices + 1) if n % d == 0)
      print(f"warning: replicas: {n} on {devices} devices, each replica's batch split over "
            f"them: XLA then gathers the whole batch to every device at each convolution "
            f"(openxla/xla#47945; compiled for 8 H200s, 2 replicas of E-I VGG-16 move 213 GB "
            f"per device and step, 8 replicas 12 GB); parallel.num_devices={fit} or a "
            f"multiple of {devices} as train.num_replicas puts whole replicas on each device",
            file=sys.stderr, flush=True)
  return exp
