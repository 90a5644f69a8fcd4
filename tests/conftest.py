"""Test set-up: 8 fake CPU devices (multi-device code paths) and JAX's persistent compile cache.

Both must be configured before JAX initialises its backend, hence at import time here.
"""

import os
import pathlib
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402
import pytest  # noqa: E402

# Outside the checkout, so that fresh clones (CI) reuse compiled programs and rebuilt data.
CACHE = pathlib.Path(os.environ.get("EI_SNN_TEST_CACHE", "~/.cache/ei_snn_jax")).expanduser()
jax.config.update("jax_compilation_cache_dir", str(CACHE / "jax_compile"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def cifar10_npz():
  """Path of the real CIFAR-10 arrays, rebuilt once from ../shared into the test cache.

  Without ../shared/data/cifar10_compact.npz the tests that need real data (the only check that
  training really learns) skip, except under CI (``CI=true``), where they fail: CI must not
  pass without them.
  """
  from ei_snn_jax import data
  compact = SHARED / "data" / "cifar10_compact.npz"
  if not compact.exists():
    reason = (f"real CIFAR-10 is not available: {compact} is missing (the shared data folder "
              "next to the checkout)")
    if os.environ.get("CI") == "true":
      pytest.fail(f"{reason}; CI=true, so the real-data tests must run", pytrace=False)
    pytest.skip(f"{reason}; skipped outside CI")
  return data.rebuild_cifar10_from_compact(compact, CACHE / "cifar10.npz")


@pytest.fixture(scope="session")
def tiny_reference_run(tmp_path_factory):
  """The tiny run of tests/test_reliability.py (``tiny_config()``, 24 steps) trained in-process
  without interruption: the reference of the kill/resume tests. Read it; copy it to change it."""
  from ei_snn_jax.training import train
  from test_reliability import TOTAL_STEPS, tiny_config
  workdir = tmp_path_factory.mktemp("tiny_reference")
  summary = train.train_and_evaluate(tiny_config(), workdir)
  assert summary["finished"] and summary["step"] == TOTAL_STEPS
  return workdir


def with_nan_in(state, layer: str = "['conv2']['ei']['w_ee']"):
  """``state`` with the parameter at ``layer`` (a ``jax.tree_util.keystr`` path) made NaN: the
  fault the NaN-guard tests inject."""
  import jax.numpy as jnp
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: x * jnp.nan if jax.tree_util.keystr(path) == layer else x, state.params)
  return state.replace(params=params)


@pytest.fixture
def nan_in_layer():
  """``with_nan_in`` (a fixture, so that test modules need not import conftest)."""
  return with_nan_in
