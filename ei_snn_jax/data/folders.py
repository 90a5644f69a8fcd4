"""``load_dataset`` for the datasets read from their own files (spec §7.4).

Tiny-ImageNet-200, MNIST, DVS128-Gesture and CIFAR10-DVS, by ``config.data``:

  source "folder"     the files in ``data.path`` (``tiny_imagenet``, ``mnist``, ``dvs`` modules);
                      Tiny-ImageNet and the DVS sets are converted once into ``data.cache_dir``
                      (``tiny_imagenet.npz``, ``<name>_T<T>.npz``) and read from there later.
  source "auto"       "folder" when ``data.path`` is set or the cache exists; for MNIST
                      otherwise TFDS.
  source "tfds"       MNIST (builder "mnist"); Tiny-ImageNet only with ``data.tfds_name``.
  source "synthetic"  ``synthetic.synthetic_like``: the real shapes, learnable classes.

These arrays are stored in class order (the readers keep the reference's file order), so
``train_subset`` / ``test_subset`` take a fixed random N examples (the same in every run), not
the first N.
"""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np

from ei_snn_jax.data import dvs, mnist, synthetic, tiny_imagenet
from ei_snn_jax.data.sources import DataError, _get

NUM_CLASSES = {"tiny_imagenet": tiny_imagenet.NUM_CLASSES, "mnist": mnist.NUM_CLASSES,
               "dvs128_gesture": dvs.GESTURE_NUM_CLASSES,
               "cifar10_dvs": len(dvs.CIFAR10_DVS_CLASSES)}
SOURCES = {"tiny_imagenet": ("auto", "folder", "tfds", "synthetic"),
           "mnist": ("auto", "folder", "tfds", "synthetic"),
           "dvs128_gesture": ("auto", "folder", "synthetic"),
           "cifar10_dvs": ("auto", "folder", "synthetic")}
_SUBSET_SEED = 0x5B5E7


def load_folder_arrays(name: str, source: str, data_cfg: Any, seed: int = 0, T: int = 4,
                       memory_map: bool = False) -> tuple[np.ndarray, ...]:
  """(x_train, y_train, x_test, y_test) of dataset ``name`` (module doc); T: DVS frames;
  ``memory_map``: the converted caches are mapped, not read (``load_dataset``)."""
  if source not in SOURCES[name]:
    raise DataError(f"data.name={name} cannot use data.source={source}: use one of "
                    f"{', '.join(SOURCES[name])}")
  path = _get(data_cfg, "path", None)
  cache_dir = pathlib.Path(str(_get(data_cfg, "cache_dir", "~/.cache/ei_snn_jax"))).expanduser()
  if source == "synthetic":
    print(f"data: {name} from synthetic stand-in", flush=True)
    return synthetic.synthetic_like(name, NUM_CLASSES[name],
                                    int(_get(data_cfg, "synthetic_train_size", 512)),
                                    int(_get(data_cfg, "synthetic_test_size", 256)), seed=seed,
                                    T=T)
  print(f"data: {name} from {path or cache_dir}", flush=True)
  if name == "mnist":
    ds = mnist.load_mnist(path, source=source, tfds_data_dir=_get(data_cfg, "tfds_data_dir"))
  elif name == "tiny_imagenet":
    ds = tiny_imagenet.load_tiny_imagenet(path, cache_dir=cache_dir, source=source,
                                          tfds_name=_get(data_cfg, "tfds_name"),
                                          tfds_data_dir=_get(data_cfg, "tfds_data_dir"),
                                          memory_map=memory_map)
  elif name == "dvs128_gesture":
    ds = dvs.load_dvs128_gesture(path, T, cache_dir=cache_dir, memory_map=memory_map)
  else:
    ds = dvs.load_cifar10_dvs(path, T, cache_dir=cache_dir, memory_map=memory_map)
  return ds.x_train, ds.y_train, ds.x_test, ds.y_test


def fixed_subset(x: np.ndarray, y: np.ndarray, k: int, field: str) -> tuple[np.ndarray, ...]:
  """A fixed random ``k`` examples in stored order (0 = all), the same in every run."""
  if k < 0:
    raise DataError(f"{field} = {k} is negative: use 0 (all examples) or a positive count")
  if k == 0 or k >= x.shape[0]:
    return x, y
  keep = np.sort(np.random.default_rng(_SUBSET_SEED).permutation(x.shape[0])[:k])
  return x[keep], y[keep]
