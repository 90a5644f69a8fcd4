"""Named PRNG streams of a run: every random draw has its own stream, so no two uses share a key.

The root key ``jax.random.key(config.seed)`` is split once into the streams of ``STREAMS``
(``rng_streams``); each stream drives one thing only:

* ``init``: ``model.init``, the Exp(s) draws of W_EE / W_IE in E-I Init (spec §2) and every other
  random initialiser (DANN, BN baselines).
* ``augment``: training augmentation (spec §7.4). Step k uses ``step_key(augment, k)``, and
  ``data.augment.augment_batch`` splits that key into one key per example
  (``jax.random.split(key, B)``). E-I Init sees the augmented batch of step 0, i.e. exactly the
  first training batch.
* ``dropout``: dropout masks; step k uses ``step_key(dropout, k)`` (Flax folds in each layer's
  path). No paper config uses dropout.

A per-step key is ``fold_in(stream, step)`` of its own stream, so the keys of a step are a pure
function of (seed, step): a resumed run draws exactly what an uninterrupted one draws. The data
order is not drawn here: it is a NumPy permutation of (seed, epoch) (``data.order``).

Replica r of a ``train.num_replicas`` run uses the streams of seed ``config.seed + r``.
"""

from __future__ import annotations

import jax

Array = jax.Array

# The config options this module owns: dotted field -> (default, allowed values or range,
# meaning); ``training.config.base_config`` is assembled from these (docs/options.md).
CONFIG_OPTIONS = {
    "seed": (2025, f">= 0 and <= {2**31 - 1 - 4096}", "master seed (+ replica stays an int32)"),
}

# The streams, in the order the root key is split. Add new ones at the end: with JAX's default
# (partitionable) Threefry, split(root, n)[i] does not depend on n, so the existing streams, and
# with them every earlier run's numbers, stay as they are.
STREAMS = ("init", "augment", "dropout")


def rng_streams(seed: int | Array) -> dict[str, Array]:
  """{"init", "augment", "dropout"}: the root key of ``seed`` split into the named streams.

  Works on a traced seed too (the replicas' vmapped step).
  """
  keys = jax.random.split(jax.random.key(seed), len(STREAMS))
  return dict(zip(STREAMS, keys))


def step_key(stream: Array, step: int | Array) -> Array:
  """The key of training step ``step`` in ``stream``: ``fold_in(stream, step)``."""
  return jax.random.fold_in(stream, step)
