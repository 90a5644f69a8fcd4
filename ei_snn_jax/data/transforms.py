"""The training and evaluation transform of each dataset, on the device (spec §7.4).

``train_transform(name, augment, cutout_fill)`` returns ``fn(key, batch) -> model input`` and
``eval_transform(name)`` returns ``fn(batch) -> model input``; the batch is the stored uint8
images / event counts gathered on the device. Model inputs are float32 images (B, H, W, C) in
[0, 1] or DVS sequences (T, B, 48, 48, 2) of event counts.

    cifar10, cifar100, synthetic  RandomCrop(4) -> Cutout -> flip        | /255
    tiny_imagenet                 RandomResizedCrop(32) -> flip -> ColorJitter -> Cutout | Resize(32)
    mnist                         none (ToTensor only)                  | /255
    dvs128_gesture                RandomResizedCrop(128, 0.5) -> 48 -> flip | Resize(48)
    cifar10_dvs                   RandomResizedCrop(128, 0.7) -> 48 -> flip -> roll|rotate|cutout
                                                                        | Resize(48)
With ``augment=False`` the training transform is the evaluation transform.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax

from ei_snn_jax.data import augment, dvs_augment, imagenet_augment, registry

Array = jax.Array


def _check(name: str) -> None:
  if name not in registry.dataset_names():
    raise ValueError(f"no transforms for dataset {name!r}; choose one of "
                     f"{registry.dataset_names()}")


def eval_transform(name: str) -> Callable[[Array], Array]:
  """The test-set transform of dataset ``name`` (spec §7.4)."""
  _check(name)
  if name == "tiny_imagenet":
    return imagenet_augment.eval_batch
  if is_sequence(name):
    return dvs_augment.eval_batch
  return augment.to_float


def train_transform(name: str, augment_data: bool = True,
                    cutout_fill: str = "red") -> Callable[[Array, Array], Array]:
  """The training transform of dataset ``name`` (spec §7.4): ``fn(key, batch)``."""
  _check(name)
  augment.check_cutout_fill(cutout_fill)
  if not augment_data or name == "mnist":
    plain = eval_transform(name)
    return lambda key, batch: plain(batch)
  if name == "tiny_imagenet":
    return functools.partial(imagenet_augment.augment_batch, cutout_fill=cutout_fill)
  if name == "dvs128_gesture":
    return dvs_augment.augment_gesture
  if name == "cifar10_dvs":
    return dvs_augment.augment_cifar10_dvs
  return functools.partial(augment.augment_batch, cutout_fill=cutout_fill)


def is_sequence(name: str) -> bool:
  """True for datasets whose model input is a (T, B, ...) sequence (spec §6.1)."""
  return name in registry.dataset_names() and registry.get(name).frames
