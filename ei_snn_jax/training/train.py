"""Training and evaluation, readable top to bottom: ``train_and_evaluate(config, workdir)``.

1. Validate the config; build the device mesh (batch sharded over every device, params
   replicated; multi-host via ``jax.distributed.initialize``).
2. Load the dataset as uint8 and place it (``data.placement``): on the devices (each step
   gathers its batch there), or, when it does not fit them, on the host (memory-mapped caches),
   each step's batch streamed by ``data.host_feed``; the batch sources below hide the
   difference from the loop. The per-epoch order comes from (seed, epoch) and the augmentation
   and dropout keys from (seed, step) through named PRNG streams (``rng.py``), so a resumed run
   sees exactly the same batches, on either path.
3. E-I Init: ``model.init`` (key: the ``init`` stream) on the first augmented training batch, then
   Dale's projection.
4. Resume from the latest complete orbax checkpoint in the workdir, if any.
5. Loop: jitted step (gather + augment on device, loss on T-averaged logits, SGD, projection),
   metrics summed on device, a NaN/Inf guard that stops within one step, JSONL/TensorBoard logs,
   evaluation every epoch, checkpoints (latest N + best).

``train.num_replicas = N > 1`` trains N independent seeds (seed, seed+1, ...) in one run: the
state gets a leading replica axis and the step is vmapped over it (``replicas.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import signal
import time
from typing import Any, Callable, Iterator, NamedTuple

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from ei_snn_jax import data as data_lib, errors, models, tree as tree_lib
from ei_snn_jax.analysis import health, probes
from ei_snn_jax.core import dale
from ei_snn_jax.data import host_feed, placement as placement_lib, transforms
from ei_snn_jax.training import checkpointing, config as config_lib, metrics as metrics_lib, optim
from ei_snn_jax.training import guards, replicas, rng, runfolder

Array = jax.Array


class NonFiniteError(errors.UserError, FloatingPointError):
  """Raised when a training step produced a non-finite loss or gradient."""


@flax.struct.dataclass
class TrainState:
  """Everything a step changes; saved whole in checkpoints (resume is exact).

  ``sums`` accumulates the current epoch's training metrics on the device (reset each epoch).
  """
  step: Array
  params: Any
  batch_stats: Any
  opt_state: Any
  sums: dict[str, Array]


def _zero_sums(num_replicas: int = 1) -> dict[str, Array]:
  shape = () if num_replicas == 1 else (num_replicas,)
  return {"loss": jnp.zeros(shape, jnp.float32), "correct": jnp.zeros(shape, jnp.float32),
          "count": jnp.zeros(shape, jnp.float32)}


# ---------------------------------------------------------------------------------------------
# Set-up
# ---------------------------------------------------------------------------------------------

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
  """The static pieces of a run: config, model, optimizer, data, mesh and jitted functions.

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
    return NamedSharding(self.mesh, P())

  @property
  def batch_sharded(self) -> NamedSharding:
    return NamedSharding(self.mesh, P("data"))

  @property
  def input_sharded(self) -> NamedSharding:
    """Sharding of a model input: the batch axis, axis 1 of DVS sequences (T, B, ...)."""
    if transforms.is_sequence(self.config.data.name):
      return NamedSharding(self.mesh, P(None, "data"))
    return self.batch_sharded

  @property
  def num_replicas(self) -> int:
    """``train.num_replicas``: independent seeds vmapped in this run (see ``replicas``)."""
    return replicas.num_replicas(self.config)

  @property
  def index_sharded(self) -> NamedSharding:
    """Sharding of a step's (idx, mask): the batch axis, after the replica axis if any."""
    return self.batch_sharded if self.num_replicas == 1 else NamedSharding(
        self.mesh, P(None, "data"))


def initialize_distributed(parallel: ml_collections.ConfigDict) -> None:
  """``jax.distributed.initialize`` for a multi-host run (once per process).

  With ``parallel.coordinator_address`` unset, JAX finds the cluster itself (TPU pods, SLURM,
  Open MPI); otherwise the address, ``num_processes`` and ``process_id`` are passed. CPU hosts
  exchange data through gloo collectives.
  """
  if jax.distributed.is_initialized():
    return
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  timeout = int(parallel.init_timeout_s)
  where = (f"the coordinator at {parallel.coordinator_address} (process {parallel.process_id} of "
           f"{parallel.num_processes})" if parallel.coordinator_address else
           "the cluster's coordinator (found by JAX)")
  print(f"multi-host start: waiting up to {timeout} s for {where} and every other process "
        f"(parallel.init_timeout_s)", flush=True)
  give_up = (f"multi-host start failed: no answer from {where} within {timeout} s: start every "
             f"process, check parallel.coordinator_address, or raise parallel.init_timeout_s")
  # JAX's client aborts the process (a C++ fatal error) at its own timeout: this line comes
  # first, from a watchdog (``runfolder.exit_after``), with exit status 2.
  with runfolder.exit_after(timeout, give_up):
    try:
      if parallel.coordinator_address:
        jax.distributed.initialize(parallel.coordinator_address, int(parallel.num_processes),
                                   int(parallel.process_id), initialization_timeout=timeout + 60)
      else:
        jax.distributed.initialize(initialization_timeout=timeout + 60)
    except Exception as e:  # noqa: BLE001 - every failure to join becomes one line
      raise config_lib.ConfigError(f"{give_up} ({type(e).__name__}: "
                                   f"{' '.join(str(e).split())[:300]})") from None


def build_experiment(config: ml_collections.ConfigDict) -> Experiment:
  """Validate ``config`` and build everything a run needs except its state.

  The dataset's arrays are memory-mapped where they come from a file (``load_dataset(...,
  memory_map=True)``); ``data.placement`` (``placement.resolve_placement``, one printed line)
  then either uploads them to every device or leaves them on the host to be streamed.
  """
  config_lib.validate_config(config)   # before a multi-host start or any device work
  if config.parallel.distributed:
    initialize_distributed(config.parallel)
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
  if placement.where == "host":   # nothing on the devices: data.host_feed streams the batches
    arrays = (None,) * 4
  else:
    rep = NamedSharding(mesh, P())
    arrays = (host_to_global(dataset.x_train, rep),
              host_to_global(dataset.y_train.astype(np.int32), rep),
              host_to_global(dataset.x_test, rep),
              host_to_global(dataset.y_test.astype(np.int32), rep))
  return Experiment(config, model, tx, schedule, dataset, mesh, steps_per_epoch, total_steps,
                    *arrays, placement)


def first_training_batch(exp: Experiment, seed: int | None = None) -> Array:
  """The first augmented training batch (epoch 0, step 0): the batch E-I Init sees (spec §2.1).

  ``seed``: the run's seed (default ``config.seed``; replica r uses ``config.seed + r``).
  """
  c = exp.config
  seed = c.seed if seed is None else seed
  idx, _ = data_lib.batch_indices(seed, 0, len(exp.dataset.x_train), c.train.batch_size, 0)
  images = jnp.asarray(exp.dataset.x_train[idx])
  train_fn = transforms.train_transform(c.data.name, bool(c.data.augment), c.data.cutout_fill)
  return train_fn(rng.step_key(rng.rng_streams(seed)["augment"], 0), images)


def init_state(exp: Experiment) -> TrainState:
  """E-I Init on the first augmented batch, Dale's projection, fresh optimizer state.

  The init key is the ``init`` stream of the run's seed (``rng.rng_streams``). With
  ``train.num_replicas`` = N > 1: replica r is initialised from seed ``config.seed + r`` on its
  own first batch; the N states are stacked on a leading axis (``step`` is shared).
  """
  init = jax.jit(lambda k, x: exp.model.init(k, x, train=False), out_shardings=exp.replicated)

  def one(seed):
    x0 = host_to_global(first_training_batch(exp, seed), exp.input_sharded)
    variables = init(rng.rng_streams(seed)["init"], x0)
    models.check_ei_init(variables)
    params = dale.project_nonnegative(variables["params"])
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}),
                      opt_state=exp.tx.init(params), sums=_zero_sums())

  states = [one(seed) for seed in replicas.seeds(exp.config)]
  state = states[0] if len(states) == 1 else replicas.stack(states)
  return jax.device_put(state, exp.replicated)


# ---------------------------------------------------------------------------------------------
# Steps
# ---------------------------------------------------------------------------------------------

def _first_nonfinite_leaf(tree) -> Array:
  """Index of the first leaf (flatten order) holding a non-finite value, or -1."""
  leaves = jax.tree.leaves(tree)
  bad = jnp.stack([~jnp.all(jnp.isfinite(l)) for l in leaves])
  return jnp.where(jnp.any(bad), jnp.argmax(bad), -1)


def _training_input(exp: Experiment, train_fn, step, images, labels, seed):
  """The step's model input and labels from its gathered batch (``train_x[idx]``,
  ``train_y[idx]``): augment with the (seed, step) key, shard; plus the step's dropout key.
  Shared by the training step and the probe step (same batch, same keys)."""
  streams = rng.rng_streams(seed)
  augment_key = rng.step_key(streams["augment"], step)
  dropout_key = rng.step_key(streams["dropout"], step)
  x = jax.lax.with_sharding_constraint(train_fn(augment_key, images), exp.input_sharded)
  return x, labels, dropout_key


def make_train_step(exp: Experiment, from_epoch_table: bool = False, from_batch: bool = False):
  """Jitted (state, train_x, train_y, idx, mask) -> (state, metrics); the state is donated.

  ``from_epoch_table``: the step takes its whole epoch's index table instead, ``(state,
  train_x, train_y, epoch_idx, epoch_mask)`` (``epoch_table``, uploaded once per epoch), and
  slices row ``state.step % steps_per_epoch`` on the device, so an ordinary step moves nothing
  between host and device (the training loop runs it under ``jax.transfer_guard``).

  ``from_batch``: the step takes the already gathered global batch, ``(state, images, labels,
  mask)`` = ``(train_x[idx], train_y[idx], mask)`` as ``data.host_feed`` streams it (the host
  path of ``data.placement``). Every variant runs the same ``batch_step`` on the gathered batch.

  The step returns only scalars (loss, accuracy, lr, grad norm, the NaN-guard flags): the
  per-layer probe statistics are not computed here but by ``make_probe_step`` on logging steps,
  which keeps their reductions over every current out of the hot path (issue 11).

  With ``train.num_replicas`` = N > 1 the step is vmapped over the stacked state and (N, batch)
  idx/mask or batch (``replicas.vmap_train_step``); metrics then have a leading replica axis.
  """
  if from_epoch_table and from_batch:
    raise ValueError("make_train_step: from_epoch_table and from_batch exclude each other")
  c = exp.config
  model, tx, schedule = exp.model, exp.tx, exp.schedule
  train_fn = transforms.train_transform(c.data.name, bool(c.data.augment), c.data.cutout_fill)

  def batch_step(state: TrainState, images, labels, mask, seed=c.seed):
    x, labels, dropout_key = _training_input(exp, train_fn, state.step, images, labels, seed)
    weights = mask.astype(jnp.float32)

    def loss_fn(params):
      variables = {"params": params}
      if state.batch_stats:
        variables["batch_stats"] = state.batch_stats
        logits, new_vars = model.apply(variables, x, train=True, mutable=["batch_stats"],
                                       rngs={"dropout": dropout_key})
      else:
        logits, new_vars = model.apply(variables, x, train=True,
                                       rngs={"dropout": dropout_key}), {}
      ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
      loss = jnp.sum(ce * weights) / jnp.sum(weights)
      return loss, (logits, new_vars)

    (loss, (logits, new_vars)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = dale.project_nonnegative(optax.apply_updates(state.params, updates))
    bad_leaf = _first_nonfinite_leaf(grads)
    finite = jnp.isfinite(loss) & (bad_leaf < 0)
    correct = jnp.sum((jnp.argmax(logits, -1) == labels) * weights)
    n = jnp.sum(weights)
    new_state = TrainState(
        step=state.step + 1, params=params,
        batch_stats=new_vars.get("batch_stats", state.batch_stats), opt_state=opt_state,
        sums={"loss": state.sums["loss"] + loss * n, "correct": state.sums["correct"] + correct,
              "count": state.sums["count"] + n})
    # A non-finite step changes nothing, so the state stays the last good one.
    new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), new_state, state)
    metrics = {"loss": loss, "accuracy": correct / n, "lr": schedule(state.step),
               "grad_norm": optax.tree.norm(grads), "finite": finite, "bad_leaf": bad_leaf}
    return new_state, metrics

  def step_fn(state: TrainState, train_x, train_y, idx, mask, seed=c.seed):
    return batch_step(state, train_x[idx], train_y[idx], mask, seed)

  rep, dat = exp.replicated, exp.index_sharded
  if from_batch:
    if exp.num_replicas > 1:
      batch_step = replicas.vmap_train_step(batch_step, replicas.seeds(c), data_axes=(0, 0, 0))
    return jax.jit(batch_step, in_shardings=(rep, dat, dat, dat), out_shardings=(rep, rep),
                   donate_argnums=(0,))
  if exp.num_replicas > 1:
    step_fn = replicas.vmap_train_step(step_fn, replicas.seeds(c))
  if not from_epoch_table:
    return jax.jit(step_fn, in_shardings=(rep, rep, rep, dat, dat), out_shardings=(rep, rep),
                   donate_argnums=(0,))
  spe = exp.steps_per_epoch

  def table_step(state: TrainState, train_x, train_y, epoch_idx, epoch_mask):
    row = state.step % spe                   # the step's row of its epoch's table
    idx = jax.lax.with_sharding_constraint(
        jax.lax.dynamic_index_in_dim(epoch_idx, row, keepdims=False), dat)
    mask = jax.lax.with_sharding_constraint(
        jax.lax.dynamic_index_in_dim(epoch_mask, row, keepdims=False), dat)
    return step_fn(state, train_x, train_y, idx, mask)

  table = epoch_table_sharding(exp)
  return jax.jit(table_step, in_shardings=(rep, rep, rep, table, table),
                 out_shardings=(rep, rep), donate_argnums=(0,))


def epoch_table_sharding(exp: Experiment) -> NamedSharding:
  """Sharding of an epoch's (steps, [replicas,] batch) index table: the batch axis over devices."""
  spec = P(None, "data") if exp.num_replicas == 1 else P(None, None, "data")
  return NamedSharding(exp.mesh, spec)


def epoch_table(exp: Experiment, epoch: int) -> tuple[np.ndarray, np.ndarray]:
  """The (idx, mask) of every step of ``epoch`` stacked on a leading step axis (host arrays):
  row i is ``replicas.batch_indices(config, epoch, n, i)``, the (seed, epoch) order
  (``data.epoch_table``)."""
  c = exp.config
  idx, mask = data_lib.epoch_table(tuple(replicas.seeds(c)), epoch, len(exp.dataset.x_train),
                                   c.train.batch_size)
  if exp.num_replicas == 1:                    # (steps, 1, batch) -> (steps, batch)
    return idx[:, 0], mask[:, 0]
  return idx, mask


def make_probe_step(exp: Experiment, from_batch: bool = False):
  """Jitted (state, train_x, train_y, idx, mask) -> the per-layer probe statistics
  (``probes.probe_summary``: mean/std of every current, firing rates, dead-layer signs) of the
  training forward pass on that step's batch, with the step's own augmentation and dropout keys.
  ``from_batch``: it takes the gathered batch instead, ``(state, images, labels, mask)``, as
  ``make_train_step(from_batch=True)``.

  Called on logging steps *before* the training step, so it sees exactly the forward pass the
  step differentiates; ordinary steps pay nothing for the probes. Batch statistics are read but
  not updated. With replicas the statistics have a leading replica axis.
  """
  c = exp.config
  model = exp.model
  train_fn = transforms.train_transform(c.data.name, bool(c.data.augment), c.data.cutout_fill)

  def probe_batch(state: TrainState, images, labels, mask, seed=c.seed):
    del mask
    x, _, dropout_key = _training_input(exp, train_fn, state.step, images, labels, seed)
    variables = {"params": state.params}
    mutable = ["probes"]
    if state.batch_stats:
      variables["batch_stats"] = state.batch_stats
      mutable.append("batch_stats")
    _, new_vars = model.apply(variables, x, train=True, mutable=mutable,
                              rngs={"dropout": dropout_key})
    return probes.probe_summary(new_vars.get("probes", {}))

  def probe_fn(state: TrainState, train_x, train_y, idx, mask, seed=c.seed):
    return probe_batch(state, train_x[idx], train_y[idx], mask, seed)

  rep, dat = exp.replicated, exp.index_sharded
  fn, data_axes, shardings = ((probe_batch, (0, 0, 0), (rep, dat, dat, dat)) if from_batch else
                              (probe_fn, (None, None, 0, 0), (rep, rep, rep, dat, dat)))
  if exp.num_replicas > 1:
    fn = replicas.vmap_with_seeds(fn, replicas.seeds(c), data_axes)
  return jax.jit(fn, in_shardings=shardings, out_shardings=rep)


def make_eval_step(exp: Experiment, from_batch: bool = False):
  """Jitted (params, batch_stats, test_x, test_y, idx, mask) -> (sum of loss, number correct)
  on a test batch; ``from_batch``: (params, batch_stats, images, labels, mask), the gathered
  batch (``test_x[idx]``, ``test_y[idx]``) streamed from the host."""
  model = exp.model
  transform = transforms.eval_transform(exp.config.data.name)

  def eval_batch(params, batch_stats, images, labels, mask):
    x = jax.lax.with_sharding_constraint(transform(images), exp.input_sharded)
    variables = {"params": params}
    if batch_stats:
      variables["batch_stats"] = batch_stats
    logits = model.apply(variables, x, train=False)
    w = mask.astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.sum(ce * w), jnp.sum((jnp.argmax(logits, -1) == labels) * w)

  def eval_fn(params, batch_stats, test_x, test_y, idx, mask):
    return eval_batch(params, batch_stats, test_x[idx], test_y[idx], mask)

  rep, dat = exp.replicated, exp.batch_sharded
  fn, shardings = ((eval_batch, (rep, rep, dat, dat, dat)) if from_batch else
                   (eval_fn, (rep, rep, rep, rep, dat, dat)))
  if exp.num_replicas > 1:
    fn = replicas.vmap_eval_step(fn)
  return jax.jit(fn, in_shardings=shardings, out_shardings=(rep, rep))


@contextlib.contextmanager
def eval_inputs(exp: Experiment) -> Iterator[Iterator[tuple]]:
  """The eval step's inputs after (params, batch_stats), one tuple per test batch of
  ``data.eval_batches`` (in order, the last padded and masked): on the device path the test
  arrays and the uploaded (idx, mask); on the host path the gathered batch, read and uploaded
  by a ``data.host_feed`` thread that leaving the context stops."""
  batches = data_lib.eval_batches(len(exp.dataset.x_test), exp.config.train.eval_batch_size)
  if not exp.from_host:
    yield ((exp.test_x, exp.test_y, *(host_to_global(a, exp.batch_sharded) for a in batch))
           for batch in batches)
    return
  prefetch = int(exp.config.data.host_prefetch)
  with host_feed.HostBatchFeed(exp.dataset.x_test, exp.dataset.y_test, batches,
                               exp.batch_sharded, prefetch=prefetch) as feed:
    yield (tuple(batch) for batch in feed)


def evaluate(exp: Experiment, state: TrainState, eval_step=None) -> dict[str, Any]:
  """Test loss and accuracy over the whole (possibly subset) test split, from the devices or
  streamed from the host (``data.placement``): the same batches and sums either way.

  With ``train.num_replicas`` > 1 each value is a list, one entry per replica.
  """
  eval_step = eval_step or make_eval_step(exp, from_batch=exp.from_host)
  n = len(exp.dataset.x_test)
  loss_sum, correct = 0.0, 0.0
  with eval_inputs(exp) as batches:
    for args in batches:
      l, k = eval_step(state.params, state.batch_stats, *args)
      loss_sum, correct = loss_sum + l, correct + k
  if exp.num_replicas > 1:
    return {"test_loss": [float(v) / n for v in np.asarray(loss_sum)],
            "test_accuracy": [float(v) / n for v in np.asarray(correct)]}
  return {"test_loss": float(loss_sum) / n, "test_accuracy": float(correct) / n}


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------

def _forward_layer_order(exp: Experiment) -> list[str]:
  """Layer paths ("conv0", "stage0_block1.conv2", "head") in the order the model creates its
  parameters, i.e. forward order (a trace keeps Flax's creation order; jit outputs sort keys)."""
  order: list[str] = []

  def init(x):
    variables = exp.model.init(jax.random.key(0), x, train=False)

    def walk(tree, path):
      for k, v in tree.items():
        if hasattr(v, "items"):
          walk(v, path + (k,))
        else:
          layer = tree_lib.layer_path(path)
          if layer not in order:
            order.append(layer)

    walk(variables["params"], ())
    return variables

  shape = (exp.config.train.batch_size,) + tuple(exp.dataset.x_train.shape[1:])
  x = jax.eval_shape(transforms.eval_transform(exp.config.data.name),
                     jax.ShapeDtypeStruct(shape, exp.dataset.x_train.dtype))
  jax.eval_shape(init, jax.ShapeDtypeStruct(x.shape, jnp.float32))
  return order


def _first_nonfinite_layer(exp: Experiment, metrics: dict, replica: int) -> str | None:
  """'layer conv2 (its excitatory, balanced currents)': the first layer in forward order whose
  recorded currents (the probe statistics among the step's metrics) are non-finite, or None."""
  bad: dict[str, set[str]] = {}
  for key, value in metrics.items():
    stat, sep, layer = key.partition("/")
    value = np.asarray(value)
    if replica >= 0 and value.ndim:
      value = value[replica]
    if sep and not np.all(np.isfinite(value)):
      bad.setdefault(layer, set()).add(stat.removesuffix("_mean").removesuffix("_std"))
  if not bad:
    return None
  try:
    order = _forward_layer_order(exp)
  except Exception:  # noqa: BLE001 - only a diagnostic; fall back to name order
    order = []
  first = min(bad, key=lambda layer: (order.index(layer) if layer in order else len(order), layer))
  circuit_order = probes.CURRENTS
  rank = lambda s: (circuit_order.index(s) if s in circuit_order else len(circuit_order), s)
  return f"layer {first} (its {', '.join(sorted(bad[first], key=rank))} currents)"


def _raise_nonfinite(exp: Experiment, state: TrainState, metrics: dict, step: int) -> None:
  leaf = int(metrics["bad_leaf"])
  replica = int(metrics.get("bad_replica", -1))       # only with train.num_replicas > 1
  loss = np.asarray(metrics["loss"])
  loss, who = (loss[replica], f" in replica {replica} (seed {exp.config.seed + replica})") if (
      replica >= 0) else (loss, "")
  paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(state.params)[0]]
  where = f"first non-finite gradient in params{paths[leaf]}" if leaf >= 0 else (
      "the loss is non-finite but every gradient is finite")
  layer = _first_nonfinite_layer(exp, metrics, replica)
  if layer:
    where = f"the forward pass first went non-finite in {layer}; {where}"
  raise NonFiniteError(
      f"non-finite loss/gradient at step {step}{who} (loss={float(loss)}): {where}. "
      "The step was not applied; the last checkpoint is intact. Lower optim.lr or check the data.")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | os.PathLike,
                       *, stop_after_steps: int | None = None) -> dict[str, Any]:
  """Train ``config`` in ``workdir`` (resuming automatically), evaluate every epoch.

  Args:
    stop_after_steps: stop (after a checkpoint) once this global step is reached, as a
      pre-empted job would; rerunning continues. ``config.train.max_steps`` does the same.

  Returns:
    The run summary (also written to ``workdir/summary.json``).
  """
  workdir = pathlib.Path(workdir).expanduser()
  exp = build_experiment(config)
  primary = jax.process_index() == 0   # on several hosts only process 0 writes records
  lock = runfolder.WorkdirLock(workdir) if primary else contextlib.nullcontext()
  with lock, runfolder.StopSignals() as stop, checkpointing.disk_errors(workdir):
    try:
      return _train(exp, workdir, primary, stop, stop_after_steps)
    finally:
      metrics_lib.close_all()   # also on errors: no writer flushes at exit into a full disk


def _window_to_json(window: list[Any]) -> list[Any]:
  """Host step metrics of an unfinished logging window as JSON (saved with a checkpoint)."""
  return [jax.tree.map(lambda a: {"dtype": np.asarray(a).dtype.name,
                                  "value": np.asarray(a).tolist()}, m) for m in window]


def _window_from_json(window: list[Any]) -> list[Any]:
  """Inverse of ``_window_to_json``."""
  is_leaf = lambda x: isinstance(x, dict) and set(x) == {"dtype", "value"}
  return [jax.tree.map(lambda a: np.asarray(a["value"], a["dtype"]), m, is_leaf=is_leaf)
          for m in window]


class StepInputs(NamedTuple):
  """One training step's inputs from a batch source."""
  train: tuple                    # the training step's arguments after the state
  probe: Callable[[], tuple]      # the probe step's arguments after the state (on demand)


class DeviceBatches:
  """The device path's step inputs: the dataset on every device and the epoch's index table,
  uploaded once per epoch (``make_train_step(from_epoch_table=True)`` slices the step's row)."""

  def __init__(self, exp: Experiment):
    self.exp = exp
    self._epoch, self._host_table, self._table = None, None, None

  def for_step(self, step: int) -> StepInputs:
    """The inputs of global step ``step`` (steps come in order)."""
    exp = self.exp
    epoch, in_epoch = divmod(step, exp.steps_per_epoch)
    if self._epoch != epoch:       # the epoch's order, uploaded once (explicitly)
      self._host_table = epoch_table(exp, epoch)
      self._table = tuple(host_to_global(a, epoch_table_sharding(exp)) for a in self._host_table)
      self._epoch = epoch
    # This step's (idx, mask) stay on the host; the probes upload them only when asked.
    idx, mask = (a[in_epoch] for a in self._host_table)
    probe = lambda: (exp.train_x, exp.train_y, *(host_to_global(a, exp.index_sharded)
                                                 for a in (idx, mask)))
    return StepInputs((exp.train_x, exp.train_y, *self._table), probe)

  def __enter__(self) -> DeviceBatches:
    return self

  def __exit__(self, *exc_info) -> None:
    pass


class HostBatches:
  """The host path's step inputs: each step's gathered global batch, read from the host arrays
  and uploaded ``data.host_prefetch`` steps ahead by a ``data.host_feed`` thread that starts at
  ``start_step`` (the restored step) and ends at ``end_step``. Leaving the context (normally or
  by an exception) stops and joins the thread."""

  def __init__(self, exp: Experiment, start_step: int, end_step: int):
    c = exp.config
    self._feed = host_feed.training_feed(
        exp.dataset.x_train, exp.dataset.y_train, seed=c.seed, batch_size=c.train.batch_size,
        sharding=exp.index_sharded, start_step=start_step, end_step=end_step,
        num_replicas=exp.num_replicas, prefetch=int(c.data.host_prefetch))

  def for_step(self, step: int) -> StepInputs:
    """The inputs of global step ``step`` (steps come in order)."""
    if self._feed.next_step != step:
      raise RuntimeError(f"the host feed is at step {self._feed.next_step}, not {step}")
    batch = tuple(next(self._feed))            # (images, labels, mask) on the devices
    return StepInputs(batch, lambda: batch)

  def __enter__(self) -> HostBatches:
    return self

  def __exit__(self, *exc_info) -> None:
    self._feed.close()


def batch_source(exp: Experiment, start_step: int, end_step: int) -> DeviceBatches | HostBatches:
  """The training loop's step inputs for the run's placement (a context manager)."""
  return HostBatches(exp, start_step, end_step) if exp.from_host else DeviceBatches(exp)


def _train(exp: Experiment, workdir: pathlib.Path, primary: bool, stop: runfolder.StopSignals,
           stop_after_steps: int | None) -> dict[str, Any]:
  """The body of ``train_and_evaluate`` (the workdir is locked and signals are caught)."""
  c = exp.config
  logger = metrics_lib.MetricsLogger(workdir, config_lib.config_fingerprint(c), c,
                                     enabled=primary)
  ckpt = checkpointing.Checkpointer(workdir, keep=c.train.keep_checkpoints,
                                  cleanup_unfinished=True)
  R = exp.num_replicas            # > 1: vmapped seeds, records per replica (see replicas.py)
  loggers = replicas.loggers(workdir, c, logger)
  all_loggers = loggers if R == 1 else [logger, *loggers]

  state = init_state(exp)
  fingerprint = config_lib.config_fingerprint(c)
  meta = {"best_test_accuracy": -1.0, "best_epoch": -1, "best_step": -1, "wall_time": 0.0,
          "fingerprint": fingerprint}
  restored = ckpt.resume(state, exp.replicated)
  if restored is not None:
    state, meta = restored
    if meta.setdefault("fingerprint", fingerprint) != fingerprint:
      raise config_lib.ConfigError(
          f"the checkpoints in {workdir} were written by another config (its config.json is "
          f"gone): rerun with the original config, or use a new --workdir")
    state = state.replace(params=dale.project_nonnegative(state.params))  # spec §4, after restore
    print(f"resumed from step {int(state.step)} in {workdir}")
  if primary:   # records after the restored step (or all, with no checkpoint) are redone
    ckpt.reconcile(int(state.step), state, meta)
    for log in all_loggers:
      log.truncate_after(int(state.step))
  host = exp.from_host       # the steps take the streamed batch, else index the devices' data
  train_step = make_train_step(exp, from_epoch_table=not host, from_batch=host)
  probe_step = make_probe_step(exp, from_batch=host)
  eval_step = make_eval_step(exp, from_batch=host)

  spe = exp.steps_per_epoch
  limit = exp.total_steps
  for cap in (stop_after_steps, c.train.max_steps or None):
    if cap:
      limit = min(limit, cap)
  start_step = int(state.step)
  progress = metrics_lib.Progress(limit, start_step, enabled=c.train.progress_bar and primary)
  t_start = time.time() - meta["wall_time"]
  pending, window = None, _window_from_json(meta.pop("window", []))
  saved_step = int(state.step)

  def closes_window(step_done: int) -> bool:
    """Whether the step that makes ``step_done`` steps ends a logging window."""
    return (step_done % c.train.log_every_steps == 0 or step_done % spe == 0
            or step_done == limit or step_done % c.train.checkpoint_every_steps == 0)

  def check(step_metrics, step, inputs):
    if not bool(jax.device_get(step_metrics["finite"])):   # explicit: allowed by the guard
      ckpt.wait()
      # Which layer went non-finite: the probes recomputed on the failing step's batch (with
      # the state the guard kept; not an ordinary step, so its uploads are allowed).
      with jax.transfer_guard("allow"):
        layer_stats = probe_step(state, *inputs.probe())
        _raise_nonfinite(exp, state, {**jax.device_get(layer_stats),
                                      **jax.device_get(step_metrics)}, step)

  if primary and start_step < limit:
    runfolder.set_aside_summary(workdir)
    print(f"compiling the training step ({c.model.arch}, T={c.model.T}, batch "
          f"{c.train.batch_size}); the first step waits for it", flush=True)
  step = start_step
  with batch_source(exp, start_step, limit) as batches:   # stops a feed thread on any exit
    while step < limit:
      # This step's inputs: the epoch's index table (device path) or its streamed batch (host).
      inputs = batches.for_step(step)
      logging_step = closes_window(step + 1)
      if logging_step:              # the layer statistics, before the step donates the state
        layer_stats = probe_step(state, *inputs.probe())
      # An ordinary step moves no data: the device path's table is uploaded once per epoch, the
      # host path's batch by the feed's thread (explicit device_put, outside this guard).
      with jax.transfer_guard(c.train.transfer_guard):
        state, step_metrics = train_step(state, *inputs.train)
        stop.idle = False           # a signal now waits for the step's checkpoint
        step_metrics["finite"].copy_to_host_async()
        if pending is not None:        # the previous step's guard: at most one step behind
          check(*pending)
      pending = (step_metrics, step, inputs)
      window.append(step_metrics)
      step += 1
      progress.update(step)
      # Checkpoint steps close the logging window too, so that a run resumed from any checkpoint
      # writes exactly the records of an uninterrupted one (and no save follows a bad step).
      if logging_step:
        check(*pending)
        pending = None
        window, layer_stats = jax.device_get((window, layer_stats))   # one host read
        records = replicas.mean_metrics(window, R, metrics_lib.mean_metrics)
        window = []
        for record, stats in zip(records, replicas.per_replica(layer_stats, R)):
          record.update({k: float(v) for k, v in stats.items()})  # the window's last step
          record.update(step=step, epoch=step / spe)
        record = replicas.write_records(loggers, logger, "train", records)
        progress.postfix(loss=record["loss"], acc=record["accuracy"], lr=record["lr"])
        dead = [d for r in records for d in health.dead_layers(r)]
        if dead and c.train.stop_on_dead_layer:
          ckpt.wait()
          raise health.DeadLayerError(health.describe(dead[0], step))
        guards.check_divergence(records, exp.dataset.num_classes, step, c.optim.lr, ckpt.wait)
      epoch_done = step % spe == 0
      if epoch_done:
        sums = replicas.per_replica(jax.device_get(state.sums), R)
        tests = replicas.per_replica(evaluate(exp, state, eval_step), R)
        records = [{"epoch": step // spe, "step": step,
                    "train_loss": float(s["loss"] / s["count"]),
                    "train_accuracy": float(s["correct"] / s["count"]),
                    "wall_time": time.time() - t_start, **test} for s, test in zip(sums, tests)]
        state = state.replace(sums=jax.tree.map(
            lambda a: host_to_global(np.zeros(a.shape, a.dtype), exp.replicated), state.sums))
        accuracies = [test["test_accuracy"] for test in tests]
        accuracy = float(np.mean(accuracies))  # with replicas, the best checkpoint is the best mean
        is_best = accuracy > meta["best_test_accuracy"]
        if is_best:
          meta.update(best_test_accuracy=accuracy, best_epoch=step // spe)
        for record, best in zip(records, replicas.update_bests(meta, accuracies, step // spe)):
          record["best_test_accuracy"] = best
        record = replicas.write_records(loggers, logger, "epoch", records)
        progress.message(f"epoch {step // spe}: test acc {record['test_accuracy']:.4f} "
                         f"(best {meta['best_test_accuracy']:.4f}), train loss "
                         f"{record['train_loss']:.4f}")
        if is_best:
          meta["best_step"] = step
        meta["wall_time"] = time.time() - t_start
        ckpt.save(step, state, meta, best=is_best)
        saved_step = step
      elif step % c.train.checkpoint_every_steps == 0 or step == limit:
        meta["wall_time"] = time.time() - t_start
        ckpt.save(step, state, meta)
        saved_step = step
      if stop.received and step < limit:
        if pending is not None:
          check(*pending)
          pending = None
        if saved_step != step:   # the unfinished logging window travels with the checkpoint
          meta["wall_time"] = time.time() - t_start
          ckpt.save(step, state, {**meta, "window": _window_to_json(jax.device_get(window))})
        ckpt.wait()
        progress.close()
        for log in all_loggers:
          log.close()
        ckpt.close()
        name = signal.Signals(stop.received).name
        raise runfolder.TrainingInterrupted(
            f"stopped by {name} at step {step}/{limit}: checkpoint saved in {workdir}; rerun the "
            f"same command to continue", stop.received)
    if pending is not None:
      check(*pending)
  if c.train.max_steps and step == c.train.max_steps and step % spe:
    # A shortened run (train.max_steps) ends mid-epoch: evaluate what it reached.
    tests = replicas.per_replica(evaluate(exp, state, eval_step), R)
    record = replicas.write_records(loggers, logger, "eval",
                                    [{"step": step, "epoch": step / spe, **t} for t in tests])
    meta["last_eval_accuracy"] = record["test_accuracy"]
  ckpt.wait()
  progress.close()

  summary = {"step": step, "total_steps": exp.total_steps, "finished": step >= exp.total_steps,
             "best_test_accuracy": meta["best_test_accuracy"], "best_epoch": meta["best_epoch"],
             "wall_time": time.time() - t_start, "devices": exp.mesh.devices.size,
             "device_kind": jax.devices()[0].device_kind, "config": c.to_dict()}
  evals = [r for r in (logger.last("eval"), logger.last("epoch")) if r is not None]
  last_eval = max(evals, key=lambda r: r["step"]) if evals else None
  if last_eval is not None and last_eval["step"] == step:
    summary["final_test_accuracy"] = last_eval["test_accuracy"]
    if summary["best_test_accuracy"] < 0:
      summary["best_test_accuracy"] = last_eval["test_accuracy"]
  if R > 1:  # per-replica best/final accuracy, mean and std over replicas
    summary.update(replicas.summary(c, meta, loggers, step))
  if primary:
    runfolder.write_atomic(workdir / "summary.json", json.dumps(summary, indent=2, default=str))
  for log in all_loggers:
    log.close()
  ckpt.close()
  return summary
