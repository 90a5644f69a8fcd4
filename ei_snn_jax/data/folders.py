"""The shared first steps of the datasets read from their own files (spec §7.4).

Tiny-ImageNet-200, MNIST, DVS128-Gesture and CIFAR10-DVS (``tiny_imagenet``, ``mnist``,
``dvs``), by ``config.data``:

  source "folder"     the files in ``data.path``; Tiny-ImageNet and the DVS sets are converted
                      once into ``data.cache_dir`` (``tiny_imagenet.npz``, ``<name>_T<T>.npz``)
                      and read from there later.
  source "auto"       "folder" when ``data.path`` is set, else the cache; for MNIST TFDS.
  source "tfds"       MNIST (builder "mnist"); Tiny-ImageNet only with ``data.tfds_name``.
  source "synthetic"  ``synthetic.synthetic_like``: the real shapes, learnable classes.

These arrays are stored in class order (the readers keep the reference's file order), so
their specs take subsets as a fixed random N examples (the same in every run), not the first N.
"""

from __future__ import annotations

import pathlib
from typing import Any, Callable

import numpy as np

from ei_snn_jax.data import registry, synthetic
from ei_snn_jax.data.base import Dataset

# read(path, cache_dir, source) -> Dataset: one dataset's reader of its files.
Reader = Callable[[Any, pathlib.Path, str], Dataset]


def load_own_files(name: str, data_cfg: Any, source: str, read: Reader, *, seed: int = 0,
                   T: int = 4) -> tuple[np.ndarray, ...]:
  """(x_train, y_train, x_test, y_test) of dataset ``name`` from ``source`` (module doc):
  the synthetic stand-in, or ``read`` of data.path and data.cache_dir."""
  path = registry.setting(data_cfg, "path")
  cache_dir = pathlib.Path(str(registry.setting(data_cfg, "cache_dir"))).expanduser()
  if source == "auto" and path:
    source = "folder"
  if source == "synthetic":
    print(f"data: {name} from synthetic stand-in", flush=True)
    return synthetic.from_config(name, data_cfg, seed=seed, T=T)
  print(f"data: {name} from {path or cache_dir}", flush=True)
  ds = read(path, cache_dir, source)
  return ds.x_train, ds.y_train, ds.x_test, ds.y_test
