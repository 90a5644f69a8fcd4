"""Named PRNG streams (training/rng.py): no two random uses of a run share a key.

Before the streams, step k's dropout key ``fold_in(key_k, 1)`` *was* the augmentation key of
example 1 (``split(key_k, B)[1]``: JAX's partitionable Threefry makes them equal), and the init
key was a fold-in of the same root. The checks below fail for that scheme.
"""

import jax
import numpy as np
import pytest

from ei_snn_jax.training import rng

B = 16
STEPS = 6


def _data(key) -> tuple[int, ...]:
  return tuple(np.asarray(jax.random.key_data(key)).reshape(-1).tolist())


def _example_keys(step_key):
  """The per-example augmentation keys of a step, as ``augment.augment_batch`` derives them (one
  key per example, then crop / Cutout / flip keys from each)."""
  per_example = jax.random.split(step_key, B)
  return list(per_example) + list(jax.vmap(lambda k: jax.random.split(k, 3))(
      per_example).reshape(-1))


@pytest.mark.parametrize("seed", [0, 2025])
def test_streams_never_share_a_key(seed):
  streams = rng.rng_streams(seed)
  assert set(streams) == set(rng.STREAMS) == {"init", "augment", "dropout"}
  init = _data(streams["init"])
  seen = {init: "init"}
  for step in range(STEPS):
    dropout = _data(rng.step_key(streams["dropout"], step))
    augment = rng.step_key(streams["augment"], step)
    examples = {_data(k) for k in _example_keys(augment)}
    assert len(examples) == 4 * B
    # The dropout key of a step differs from every augmentation key of that step, and the init
    # key from both.
    assert dropout not in examples and dropout != _data(augment)
    assert init not in examples and init != dropout
    for name, keys in ((f"dropout {step}", [dropout]), (f"augment {step}", [_data(augment)]),
                       (f"examples {step}", examples)):
      for k in keys:
        assert k not in seen, f"{name} reuses the key of {seen.get(k)}"
        seen[k] = name


def test_streams_are_a_function_of_the_seed_and_jittable():
  a, b, c = rng.rng_streams(7), rng.rng_streams(7), rng.rng_streams(8)
  for name in rng.STREAMS:
    assert _data(a[name]) == _data(b[name]) != _data(c[name])
  # Traced seeds (the replicas' vmapped step) give the same keys as Python ints.
  traced = jax.jit(jax.vmap(lambda s: jax.random.key_data(
      rng.step_key(rng.rng_streams(s)["dropout"], 3))))(np.array([7, 8], np.int32))
  np.testing.assert_array_equal(traced[0], jax.random.key_data(rng.step_key(a["dropout"], 3)))
  np.testing.assert_array_equal(traced[1], jax.random.key_data(rng.step_key(c["dropout"], 3)))
