"""The data registry (issue 22): one place for each dataset's loader, defaults and validation.

``registry.check`` must report every data mistake with the message the config validation gives
(the config module calls it), ``registry.options`` must be the base config's ``data`` group, and
every registered dataset must load through ``load_dataset`` in its registered shape.
"""

from __future__ import annotations

import numpy as np
import pytest

from ei_snn_jax import data
from ei_snn_jax.data import base, registry
from ei_snn_jax.training import config as config_lib

# (case, data fields to set) -> each a data mistake (or a valid combination: no message).
CASES = [
    ("default", {}),
    ("unknown name, close", {"name": "cifar1"}),
    ("unknown name, far", {"name": "imagenet"}),
    ("unknown source", {"source": "s3"}),
    ("misspelt source", {"source": "tfd"}),
    ("arrays without path", {"source": "arrays"}),
    ("synthetic from download", {"name": "synthetic", "source": "download"}),
    ("synthetic from tfds", {"name": "synthetic", "source": "tfds"}),
    ("synthetic from folder", {"name": "synthetic", "source": "folder", "path": "/x"}),
    ("synthetic from arrays", {"name": "synthetic", "source": "arrays", "path": "/x.npz"}),
    ("cifar10 from folder without path", {"source": "folder"}),
    ("cifar100 from folder", {"name": "cifar100", "source": "folder", "path": "/x"}),
    ("tiny_imagenet from arrays", {"name": "tiny_imagenet", "source": "arrays", "path": "/x"}),
    ("tiny_imagenet from folder", {"name": "tiny_imagenet", "source": "folder", "path": "/x"}),
    ("mnist from download", {"name": "mnist", "source": "download"}),
    ("dvs128_gesture from tfds", {"name": "dvs128_gesture", "source": "tfds"}),
    ("cifar10_dvs from arrays", {"name": "cifar10_dvs", "source": "arrays"}),
    ("cifar10_dvs from folder without path", {"name": "cifar10_dvs", "source": "folder"}),
    ("unknown cutout fill", {"cutout_fill": "black"}),
    ("misspelt cutout fill", {"cutout_fill": "gray"}),
    ("unknown placement", {"placement": "gpu"}),
    ("memory fraction zero", {"device_memory_fraction": 0.0}),
    ("memory fraction above one", {"device_memory_fraction": 1.5}),
    ("assumed memory zero", {"assumed_device_memory_gb": 0.0}),
    ("host prefetch zero", {"host_prefetch": 0}),
    ("negative subsets", {"train_subset": -1, "test_subset": -2}),
    ("empty synthetic sets", {"synthetic_train_size": 0, "synthetic_test_size": -1}),
    ("many at once", {"name": "mnist", "source": "arrays", "cutout_fill": "blue",
                      "placement": "tpu", "host_prefetch": -1}),
]

VALID = ("default", "synthetic from arrays", "tiny_imagenet from folder")


def config_with(fields: dict) -> object:
  cfg = config_lib.base_config()
  for key, value in fields.items():
    cfg.data[key] = value
  return cfg


def data_messages_of_validate_config(cfg) -> list[str]:
  """The data.* problems ``validate_config`` reports for ``cfg`` (sorted)."""
  try:
    config_lib.validate_config(cfg, num_devices=1)
  except config_lib.ConfigError as e:
    return sorted(p for p in str(e).split("; ") if p.startswith("data."))
  return []


@pytest.mark.parametrize("case, fields", CASES, ids=[c[0] for c in CASES])
def test_check_gives_the_config_validation_messages(case, fields):
  cfg = config_with(fields)
  problems: list[str] = []
  registry.check(cfg.data, problems)
  assert sorted(problems) == data_messages_of_validate_config(cfg)
  assert bool(problems) == (case not in VALID)
  assert len(problems) == len(set(problems))


def test_check_keeps_the_pinned_wording():
  problems: list[str] = []
  registry.check(config_with({"name": "imagenet", "source": "arrays"}).data, problems)
  assert problems == [
      "data.name='imagenet' is not a known dataset (did you mean tiny_imagenet?): use one of "
      "cifar10, cifar100, synthetic, tiny_imagenet, mnist, dvs128_gesture, cifar10_dvs",
      "data.source='arrays' needs data.path: set data.path to the .npz file (or directory of "
      "arrays), or use data.source=auto"]
  problems = []
  registry.check({"name": "cifar10", "source": "folder", "path": "/x", "cutout_fill": "gray"},
                 problems)
  assert problems == [
      "data.cutout_fill='gray' is not a known cutout fill (did you mean grey?): use one of red, "
      "grey",
      "data.source='folder' reads Tiny-ImageNet, MNIST and the DVS sets, not 'cifar10': use "
      "data.source=arrays (or auto) for CIFAR"]


def test_options_are_the_base_config_data_group():
  base = config_lib.base_config().data
  opts = registry.options()
  assert sorted(opts) == sorted(base.keys())
  for key, opt in opts.items():
    assert base[key] == opt.default, key
    if opt.default is not None:
      assert type(base[key]) is opt.type, key
    assert opt.help, key
  assert opts["name"].rule == registry.dataset_names()
  assert opts["source"].rule == registry.SOURCES


def test_every_dataset_is_registered_once_in_order():
  assert registry.dataset_names() == ("cifar10", "cifar100", "synthetic", "tiny_imagenet",
                                      "mnist", "dvs128_gesture", "cifar10_dvs")
  assert data.NUM_CLASSES == registry.num_classes()
  for name in registry.dataset_names():
    spec = registry.get(name)
    assert spec.name == name and set(spec.sources) <= set(registry.SOURCES)
  with pytest.raises(data.DataError, match=r"data\.name 'imagenet' is not supported"):
    registry.get("imagenet")


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "synthetic", "tiny_imagenet", "mnist",
                                  "dvs128_gesture", "cifar10_dvs"])
def test_every_dataset_loads_its_synthetic_stand_in_in_its_registered_shape(name):
  spec = registry.get(name)
  ds = data.load_dataset({"name": name, "source": "synthetic", "synthetic_train_size": 3,
                          "synthetic_test_size": 2, "train_subset": 2}, seed=1, T=2)
  assert (ds.name, ds.num_classes, ds.num_train, ds.num_test) == (name, spec.num_classes, 2, 2)
  assert ds.x_train.shape[1:] == spec.example_shape(2) and ds.y_train.dtype == np.int32


def test_the_loader_refuses_a_source_with_the_check_message():
  for fields in ({"name": "tiny_imagenet", "source": "arrays", "path": "/x"},
                 {"name": "synthetic", "source": "download"},
                 {"name": "cifar100", "source": "folder", "path": "/x"}):
    problems: list[str] = []
    registry.check(fields, problems)
    with pytest.raises(data.DataError) as e:
      data.load_dataset(fields)
    assert str(e.value) == problems[0]


def test_own_file_datasets_load_their_caches_through_the_registry(tmp_path):
  from ei_snn_jax.data import cache, dvs, tiny_imagenet
  rng = np.random.default_rng(0)
  T = 2
  events = rng.integers(0, 3, (6, T, 128, 128, 2), np.uint8)
  cache.save_npz_atomic(tmp_path / f"cifar10_dvs_T{T}.npz", x_train=events, y_train=np.arange(6),
                        x_test=events[:2], y_test=np.arange(2),
                        format=np.asarray(dvs.CACHE_FORMAT), T=np.asarray(T))
  images = rng.integers(0, 255, (6, 64, 64, 3), np.uint8)
  cache.save_npz_atomic(tmp_path / tiny_imagenet.CACHE_NAME, x_train=images,
                        y_train=np.arange(6), x_test=images[:2], y_test=np.arange(2),
                        format=np.asarray(tiny_imagenet.CACHE_FORMAT), wnids=np.asarray(["a"]))
  for name in ("cifar10_dvs", "tiny_imagenet"):
    ds = data.load_dataset({"name": name, "cache_dir": str(tmp_path), "train_subset": 4}, T=T)
    full = data.load_dataset({"name": name, "cache_dir": str(tmp_path)}, T=T)
    assert ds.num_train == 4 and full.num_train == 6 and ds.num_test == 2
    _, fixed = base.fixed_subset(full.x_train, full.y_train, 4, "data.train_subset")
    np.testing.assert_array_equal(ds.y_train, fixed)                     # a fixed random 4
    assert ds.x_train.shape[1:] == registry.get(name).example_shape(T)
