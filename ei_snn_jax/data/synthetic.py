"""Learnable synthetic stand-ins in the shape of every dataset (spec §7.4; offline runs, tests).

``synthetic_like(name, ...)`` returns (x_train, y_train, x_test, y_test) shaped and typed like
the real data of ``name`` (its registered ``example_shape``): uint8 images (N, H, W, C) for the
image datasets, unsigned event counts (N, T, H, W, 2) for the event datasets. Each class has a
fixed prototype (drawn from the class count, so train and test share it); examples add noise
drawn from ``seed``. ``synthetic_arrays`` is the CIFAR-shaped stand-in (data.name=synthetic,
or data.source=synthetic of CIFAR). ``from_config`` reads the sizes from ``config.data``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ei_snn_jax.data import registry
from ei_snn_jax.data.base import DataError

CIFAR_SHAPE = (32, 32, 3)


def _check_sizes(train_size: int, test_size: int) -> None:
  if train_size <= 0 or test_size <= 0:
    raise DataError(f"synthetic sizes must be positive (train {train_size}, test {test_size}): "
                    f"set data.synthetic_train_size / data.synthetic_test_size > 0")


def synthetic_arrays(num_classes: int, train_size: int, test_size: int,
                     seed: int = 0) -> tuple[np.ndarray, ...]:
  """Seeded, learnable uint8 images (spec §7.4 offline stand-in for CIFAR).

  Each class has a mean colour and a coarse 4x4 colour pattern (drawn from a fixed seed, so
  train and test share them); examples add Gaussian pixel noise drawn from ``seed``. Labels are
  balanced (round robin) and shuffled.
  """
  _check_sizes(train_size, test_size)
  proto_rng = np.random.default_rng([num_classes, 0x5EED])
  colour = proto_rng.uniform(50.0, 205.0, size=(num_classes, 1, 1, 3))
  coarse = proto_rng.uniform(-45.0, 45.0, size=(num_classes, 4, 4, 3))
  protos = colour + np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)      # (K, 32, 32, 3)

  def split(n: int, which: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, which, 0x5EED])
    y = rng.permutation(np.arange(n) % num_classes).astype(np.int32)
    x = protos[y] + rng.normal(0.0, 24.0, size=(n,) + CIFAR_SHAPE)
    return np.clip(np.round(x), 0, 255).astype(np.uint8), y

  x_train, y_train = split(int(train_size), 1)
  x_test, y_test = split(int(test_size), 2)
  return x_train, y_train, x_test, y_test


def _labels(rng: np.random.Generator, n: int, num_classes: int) -> np.ndarray:
  return rng.permutation(np.arange(n) % num_classes).astype(np.int32)


def _images(shape: tuple[int, int, int], num_classes: int, n_train: int, n_test: int,
            seed: int) -> tuple[np.ndarray, ...]:
  h, w, c = shape
  proto_rng = np.random.default_rng([num_classes, h, c, 0x5EED])
  colour = proto_rng.uniform(50.0, 205.0, size=(num_classes, 1, 1, c))
  coarse = proto_rng.uniform(-45.0, 45.0, size=(num_classes, 4, 4, c))
  protos = colour + np.repeat(np.repeat(coarse, -(-h // 4), 1), -(-w // 4), 2)[:, :h, :w]

  def split(n: int, which: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, which, 0x5EED])
    y = _labels(rng, n, num_classes)
    x = protos[y] + rng.normal(0.0, 24.0, size=(n,) + shape)
    return np.clip(np.round(x), 0, 255).astype(np.uint8), y

  return split(n_train, 1) + split(n_test, 2)


def _events(sensor: tuple[int, int], T: int, num_classes: int, n_train: int, n_test: int,
            seed: int) -> tuple[np.ndarray, ...]:
  """Poisson counts: a class-specific blob that drifts over the T frames, plus background."""
  hh, ww = sensor
  proto_rng = np.random.default_rng([num_classes, T, 0xD75])
  centre = proto_rng.uniform(32, 96, size=(num_classes, 2))
  drift = proto_rng.uniform(-4, 4, size=(num_classes, 2))
  polarity_bias = proto_rng.uniform(0.3, 0.7, size=(num_classes,))
  yy, xx = np.mgrid[0:hh, 0:ww]

  def split(n: int, which: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, which, 0xD75])
    y = _labels(rng, n, num_classes)
    out = np.empty((n, T, hh, ww, 2), np.uint8)
    for i, k in enumerate(y):
      for t in range(T):
        cy, cx = centre[k] + drift[k] * t
        rate = 0.02 + 1.5 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 12.0 ** 2))
        out[i, t, :, :, 0] = np.minimum(rng.poisson(rate * polarity_bias[k]), 255)
        out[i, t, :, :, 1] = np.minimum(rng.poisson(rate * (1 - polarity_bias[k])), 255)
    return out, y

  return split(n_train, 1) + split(n_test, 2)


def synthetic_like(name: str, num_classes: int, train_size: int, test_size: int, seed: int = 0,
                   T: int = 4) -> tuple[np.ndarray, ...]:
  """Synthetic (x_train, y_train, x_test, y_test) shaped like dataset ``name`` (module doc)."""
  _check_sizes(train_size, test_size)
  spec = registry.get(name)
  if spec.frames:
    return _events(tuple(spec.image_shape[:2]), int(T), num_classes, int(train_size),
                   int(test_size), seed)
  if tuple(spec.image_shape) == CIFAR_SHAPE:
    return synthetic_arrays(num_classes, int(train_size), int(test_size), seed=seed)
  return _images(tuple(spec.image_shape), num_classes, int(train_size), int(test_size), seed)


def from_config(name: str, data_cfg: Any, seed: int = 0, T: int = 4) -> tuple[np.ndarray, ...]:
  """``synthetic_like`` dataset ``name`` with the sizes of ``config.data`` (data.source
  synthetic)."""
  return synthetic_like(name, registry.get(name).num_classes,
                        int(registry.setting(data_cfg, "synthetic_train_size")),
                        int(registry.setting(data_cfg, "synthetic_test_size")), seed=seed, T=T)
