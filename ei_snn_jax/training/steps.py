"""The training state and the three jitted functions of a run: the train, probe and eval steps.

There is one of each. A step takes ``(state, batch)``: ``batch`` is what the run's batch source
(``batches.py``) hands the loop for that step, and ``source.select(batch, step)`` gives, inside
the step, the (replicas, batch, ...) images, labels and mask, whatever the source (the epoch's
index table on the devices, a batch streamed from the host). The state carries the replica axis
(``train.num_replicas`` = N, 1 by default) on every leaf but ``step``; ``replicas.over_replicas``
runs the single-run function on every replica, with replica r's seed.

Checkpoints, ``init_state`` and ``evaluation.evaluate`` use the saved layout (N = 1: no replica
axis); ``replicas.to_run_layout`` converts.
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from ei_snn_jax import data as data_lib, models
from ei_snn_jax.analysis import probes
from ei_snn_jax.core import dale
from ei_snn_jax.training import replicas, rng
from ei_snn_jax.training.experiment import Experiment, host_to_global

Array = jax.Array


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


def state_sharding(exp: Experiment) -> TrainState:
  """How a run-layout TrainState lies on the devices, as a prefix of its tree: ``step``
  replicated, every other leaf ``Experiment.replica_sharded`` (the replicas split over the
  devices with ``replicas_over_devices``, else whole on every device)."""
  r = exp.replica_sharded
  return TrainState(step=exp.replicated, params=r, batch_stats=r, opt_state=r, sums=r)


def replica_devices(exp: Experiment):
  """The mesh ``replicas.over_replicas`` splits the replicas over, or None (the devices split
  the batch)."""
  return exp.mesh if exp.replicas_over_devices else None


def _constrain_input(exp: Experiment, x: Array) -> Array:
  """One replica's model input, its batch sharded over the devices; untouched where each device
  holds whole replicas (inside ``shard_map`` every array is the device's own)."""
  if exp.replicas_over_devices:
    return x
  return jax.lax.with_sharding_constraint(x, exp.input_sharded)


def zero_sums() -> dict[str, Array]:
  """The epoch sums of one run (loss * count, correct, count), all zero."""
  return {"loss": jnp.zeros((), jnp.float32), "correct": jnp.zeros((), jnp.float32),
          "count": jnp.zeros((), jnp.float32)}


def first_training_batch(exp: Experiment, seed: int | None = None) -> Array:
  """The first augmented training batch (epoch 0, step 0): the batch E-I Init sees (spec §2.1).

  ``seed``: the run's seed (default ``config.seed``; replica r uses ``config.seed + r``).
  """
  c = exp.config
  seed = c.seed if seed is None else seed
  idx, _ = data_lib.batch_indices(seed, 0, len(exp.dataset.x_train), c.train.batch_size, 0)
  images = jnp.asarray(exp.dataset.x_train[idx])
  return exp.train_transform(rng.step_key(rng.rng_streams(seed)["augment"], 0), images)


def init_state(exp: Experiment) -> TrainState:
  """E-I Init on the first augmented batch, Dale's projection, fresh optimizer state, in the
  saved layout (what a checkpoint holds).

  The init key is the ``init`` stream of the run's seed (``rng.rng_streams``). With
  ``train.num_replicas`` = N > 1: replica r is initialised from seed ``config.seed + r`` on its
  own first batch; the N states are stacked on a leading axis (``step`` is shared).
  """
  @functools.partial(jax.jit, out_shardings=exp.replicated)
  def fresh(key, x0):
    # One program (init, projection, optimizer state): eagerly, each leaf's projection and
    # zeros were separate small compiles, ~2 s per launch that the compile cache never keeps.
    variables = exp.model.init(key, x0, train=False)
    params = dale.project_nonnegative(variables["params"])
    return variables.get("ei_init_stats", {}), TrainState(
        step=jnp.zeros((), jnp.int32), params=params,
        batch_stats=variables.get("batch_stats", {}), opt_state=exp.tx.init(params),
        sums=zero_sums())

  def one(seed):
    x0 = host_to_global(first_training_batch(exp, seed),
                        exp.replicated if exp.replicas_over_devices else exp.input_sharded)
    stats, state = fresh(rng.rng_streams(seed)["init"], x0)
    models.check_ei_init({"ei_init_stats": stats})
    return state

  states = [one(seed) for seed in replicas.seeds(exp.config)]
  if len(states) == 1:
    return jax.device_put(states[0], exp.replicated)
  return jax.device_put(replicas.stack(states), state_sharding(exp))


def nonfinite_leaves(tree) -> Array:
  """One flag per leaf (flatten order): whether it holds a non-finite value."""
  return jnp.stack([~jnp.all(jnp.isfinite(l)) for l in jax.tree.leaves(tree)])


def training_input(exp: Experiment, step, images, labels, seed):
  """One replica's model input and labels from its gathered batch: augmented with the (seed,
  step) key and sharded; plus the step's dropout key. Shared by the train and probe steps."""
  streams = rng.rng_streams(seed)
  augment_key = rng.step_key(streams["augment"], step)
  dropout_key = rng.step_key(streams["dropout"], step)
  x = _constrain_input(exp, exp.train_transform(augment_key, images))
  return x, labels, dropout_key


def _variables(params, batch_stats) -> dict[str, Any]:
  return {"params": params, **({"batch_stats": batch_stats} if batch_stats else {})}


def make_train_step(exp: Experiment, source):
  """Jitted ``(state, batch) -> (state, metrics)``, the state donated; ``batch`` as ``source``
  (a batch source of ``batches.py``) hands it for the step.

  One replica's step: augment, loss on the T-averaged logits, SGD, Dale's projection, epoch
  sums. The step returns only scalars per replica (loss, accuracy, lr, grad norm) and the NaN
  guard's whole-run flags (``finite``, ``bad_leaves``, ``bad_replica``); a non-finite step changes
  nothing (``replicas.vmap_train_step``). The per-layer statistics are ``make_probe_step``'s, on
  logging steps only, which keeps their reductions out of the hot path (issue 11).
  """
  model, tx, schedule = exp.model, exp.tx, exp.schedule

  def one_replica(state: TrainState, images, labels, mask, seed):
    x, labels, dropout_key = training_input(exp, state.step, images, labels, seed)
    weights = mask.astype(jnp.float32)

    def loss_fn(params):
      variables = _variables(params, state.batch_stats)
      if state.batch_stats:
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
    bad_leaves = nonfinite_leaves(grads)
    finite = jnp.isfinite(loss) & ~jnp.any(bad_leaves)
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
               "grad_norm": optax.tree.norm(grads), "finite": finite, "bad_leaves": bad_leaves}
    return new_state, metrics

  replicated = replicas.vmap_train_step(one_replica, replicas.seeds(exp.config),
                                        replica_devices(exp))

  def train_step(state: TrainState, batch):
    return replicated(state, *source.select(batch, state.step))

  states = state_sharding(exp)
  return jax.jit(train_step, in_shardings=(states, source.shardings),
                 out_shardings=(states, exp.replicated), donate_argnums=(0,))


def make_probe_step(exp: Experiment, source):
  """Jitted ``(state, batch) -> {name: (replicas,) statistic}``: the per-layer probe statistics
  (``probes.probe_summary``: mean/std of every current, firing rates, dead-layer signs) of the
  training forward pass on the step's batch, with the step's own augmentation and dropout keys.

  Called on logging steps *before* the train step, on the same ``batch``, so it sees exactly
  the forward pass the step differentiates; ordinary steps pay nothing for the probes. Batch
  statistics are read but not updated.
  """
  model = exp.model

  def one_replica(state: TrainState, images, labels, mask, seed):
    del mask
    x, _, dropout_key = training_input(exp, state.step, images, labels, seed)
    mutable = ["probes"] + (["batch_stats"] if state.batch_stats else [])
    _, new_vars = model.apply(_variables(state.params, state.batch_stats), x, train=True,
                              mutable=mutable, rngs={"dropout": dropout_key})
    return probes.probe_summary(new_vars.get("probes", {}))

  replicated = replicas.with_seeds(one_replica, replicas.seeds(exp.config),
                                   replica_devices(exp))

  def probe_step(state: TrainState, batch):
    return replicated(state, *source.select(batch, state.step))

  return jax.jit(probe_step, in_shardings=(state_sharding(exp), source.shardings),
                 out_shardings=exp.replicated)


def make_eval_step(exp: Experiment, source):
  """Jitted ``(params, batch_stats, batch) -> (sum of loss, number correct)``, each with the
  replica axis, on one test batch as ``source`` (``batches.eval_source``) hands it; every
  replica sees the same batch."""
  model = exp.model

  def one_replica(params, batch_stats, images, labels, mask):
    x = _constrain_input(exp, exp.eval_transform(images))
    logits = model.apply(_variables(params, batch_stats), x, train=False)
    w = mask.astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.sum(ce * w), jnp.sum((jnp.argmax(logits, -1) == labels) * w)

  replicated = replicas.vmap_eval_step(one_replica, exp.num_replicas, replica_devices(exp))

  def eval_step(params, batch_stats, batch):
    return replicated(params, batch_stats, *source.select(batch, None))

  r = exp.replica_sharded
  return jax.jit(eval_step, in_shardings=(r, r, source.shardings),
                 out_shardings=(exp.replicated, exp.replicated))


def host_sums(state: TrainState) -> list[dict[str, np.ndarray]]:
  """The epoch sums of each replica, read to the host (one read)."""
  return replicas.per_replica(jax.device_get(state.sums))
