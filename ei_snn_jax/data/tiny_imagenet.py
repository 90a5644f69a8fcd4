"""Tiny-ImageNet-200 from its official folder, cached once as uint8 arrays (spec §7.4).

Official layout (``tiny-imagenet-200.zip``; ``path`` may be that folder or its parent):

    wnids.txt                                   200 WordNet ids
    train/<wnid>/images/<wnid>_<k>.JPEG         500 per class (64x64)
    val/images/val_<k>.JPEG                     10000 images
    val/val_annotations.txt                     <file>\\t<wnid>\\t<box> per line

As in the reference (torchvision ``ImageFolder`` on train/, its ``class_to_idx`` for val/), the
label of a wnid is its index among the train class folders sorted by name; training images are
read in sorted order per class, validation images in annotation-file order. Images are decoded
with Pillow and converted to RGB (a few are greyscale). The arrays (uint8 (N, 64, 64, 3),
int32 labels) are written once to ``<cache_dir>/tiny_imagenet.npz`` (atomic); resizing to 32
and augmentation happen on the device (``ei_snn_jax.data.imagenet_augment``).

TFDS has no Tiny-ImageNet builder in its catalog; ``source="tfds"`` takes a registered
community builder by name (``tfds_name``; splits "train" and "validation"). Registers the
dataset "tiny_imagenet".
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import pathlib
from typing import Any

import numpy as np

from ei_snn_jax.data import folders, registry, tfds_source
from ei_snn_jax.data.base import DataError, Dataset
from ei_snn_jax.data.cache import read_cache_arrays, save_npz_atomic

log = logging.getLogger(__name__)

NUM_CLASSES = 200
IMAGE_SHAPE = (64, 64, 3)
CACHE_NAME = "tiny_imagenet.npz"
CACHE_FORMAT = "ei_snn_jax tiny_imagenet v1"
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
_FOLDER_HINT = "point data.path at the unzipped tiny-imagenet-200 folder"


def find_root(path: str | os.PathLike) -> pathlib.Path:
  """The folder holding wnids.txt, train/ and val/ (``path`` or its tiny-imagenet-200/)."""
  path = pathlib.Path(path).expanduser()
  if not path.is_dir():
    raise DataError(f"data.path {path} is not a folder: {_FOLDER_HINT} (wnids.txt, train/, "
                    f"val/)")
  for root in (path, path / "tiny-imagenet-200"):
    if (root / "wnids.txt").is_file() or (root / "train").is_dir():
      return root
  raise DataError(f"data.path {path} has no wnids.txt or train/ folder: {_FOLDER_HINT}")


def _read_image(path: pathlib.Path) -> np.ndarray:
  from PIL import Image, UnidentifiedImageError  # pylint: disable=import-outside-toplevel
  try:
    with Image.open(path) as im:
      arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
  except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
    raise DataError(f"{path} could not be decoded as an image ({e.__class__.__name__}: {e}): "
                    f"re-extract tiny-imagenet-200.zip") from None
  if arr.shape != IMAGE_SHAPE:
    raise DataError(f"{path} is {arr.shape[1]}x{arr.shape[0]}, expected 64x64: this is not the "
                    f"official Tiny-ImageNet-200 (re-extract tiny-imagenet-200.zip)")
  return arr


def _read_images(paths: list[pathlib.Path], workers: int | None) -> np.ndarray:
  out = np.empty((len(paths),) + IMAGE_SHAPE, np.uint8)
  n = max(1, int(workers) if workers else min(8, os.cpu_count() or 1))

  def fill(i: int) -> None:
    out[i] = _read_image(paths[i])

  if n == 1:
    for i in range(len(paths)):
      fill(i)
  else:
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
      list(pool.map(fill, range(len(paths))))
  return out


def list_tiny_imagenet(root: str | os.PathLike) -> tuple[list, np.ndarray, list, np.ndarray,
                                                         list[str]]:
  """(train files, train labels, val files, val labels, wnids) of the official layout."""
  root = pathlib.Path(root)
  train_dir, val_dir = root / "train", root / "val"
  if not train_dir.is_dir():
    raise DataError(f"{train_dir} is missing: {_FOLDER_HINT} (train/<wnid>/images/*.JPEG)")
  wnids = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
  if not wnids:
    raise DataError(f"{train_dir} has no class folders: expected train/<wnid>/images/*.JPEG")
  listed = root / "wnids.txt"
  if listed.is_file():
    want = {ln.strip() for ln in listed.read_text().splitlines() if ln.strip()}
    if want != set(wnids):
      extra = sorted(set(wnids) - want)[:3]
      lacking = sorted(want - set(wnids))[:3]
      raise DataError(f"{train_dir} class folders do not match {listed} (missing {lacking}, "
                      f"unlisted {extra}): re-extract tiny-imagenet-200.zip")
  train_files, train_labels = [], []
  for k, wnid in enumerate(wnids):
    images_dir = train_dir / wnid / "images"
    if not images_dir.is_dir():
      raise DataError(f"{images_dir} is missing: Tiny-ImageNet training images live in "
                      f"train/<wnid>/images/*.JPEG")
    files = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
      raise DataError(f"{images_dir} holds no images: re-extract tiny-imagenet-200.zip")
    train_files += files
    train_labels += [k] * len(files)
  annotations = val_dir / "val_annotations.txt"
  if not annotations.is_file():
    raise DataError(f"{annotations} is missing: the validation labels come from "
                    f"val/val_annotations.txt (re-extract tiny-imagenet-200.zip)")
  index = {w: k for k, w in enumerate(wnids)}
  val_files, val_labels = [], []
  for line_no, line in enumerate(annotations.read_text().splitlines(), start=1):
    parts = line.strip().split("\t")
    if len(parts) < 2:
      continue                                          # as the reference: skip short lines
    name, wnid = parts[0], parts[1]
    if wnid not in index:
      raise DataError(f"{annotations} line {line_no}: class {wnid!r} has no train/ folder: "
                      f"re-extract tiny-imagenet-200.zip")
    image = val_dir / "images" / name
    if not image.is_file():
      raise DataError(f"{image} (line {line_no} of {annotations}) is missing: re-extract "
                      f"tiny-imagenet-200.zip")
    val_files.append(image)
    val_labels.append(index[wnid])
  if not val_files:
    raise DataError(f"{annotations} lists no images: re-extract tiny-imagenet-200.zip")
  return (train_files, np.asarray(train_labels, np.int32), val_files,
          np.asarray(val_labels, np.int32), wnids)


def read_tiny_imagenet_folder(root: str | os.PathLike,
                              workers: int | None = None) -> tuple[np.ndarray, ...]:
  """Decode the official folder -> (x_train, y_train, x_test, y_test, wnids) (spec §7.4)."""
  train_files, y_train, val_files, y_test, wnids = list_tiny_imagenet(root)
  log.info("Decoding %d + %d Tiny-ImageNet images from %s", len(train_files), len(val_files),
           root)
  x_train = _read_images(train_files, workers)
  x_test = _read_images(val_files, workers)
  return x_train, y_train, x_test, y_test, np.asarray(wnids)


def _validate(arrays: dict, desc: str, num_classes: int) -> dict:
  for split in ("train", "test"):
    x, y = np.asarray(arrays[f"x_{split}"]), np.asarray(arrays[f"y_{split}"])
    if x.ndim != 4 or x.shape[1:] != IMAGE_SHAPE or x.dtype != np.uint8:
      raise DataError(f"{desc}: x_{split} is {x.dtype} {x.shape}, expected uint8 (N, 64, 64, 3):"
                      f" delete it and convert the folder again")
    if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer):
      raise DataError(f"{desc}: y_{split} has shape {y.shape} / dtype {y.dtype}, expected "
                      f"({x.shape[0]},) integers: delete it and convert the folder again")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
      raise DataError(f"{desc}: y_{split} lies outside [0, {num_classes}): delete it and "
                      f"convert the folder again")
    arrays[f"y_{split}"] = y.astype(np.int32)
  return arrays


def _load_cache(path: pathlib.Path, memory_map: bool = False) -> dict:
  arrays = read_cache_arrays(path, CACHE_FORMAT, "Tiny-ImageNet", memory_map)
  return _validate(arrays, f"cache {path}", NUM_CLASSES)


def load_tiny_imagenet(path: str | os.PathLike | None = None,
                       cache_dir: str | os.PathLike | None = None, source: str = "auto",
                       tfds_name: str | None = None, tfds_data_dir: str | None = None,
                       workers: int | None = None, memory_map: bool = False) -> Dataset:
  """Tiny-ImageNet-200 as uint8 (N, 64, 64, 3) images, 200 classes (spec §7.4).

  ``source``: "folder" (``path``), "tfds" (``tfds_name``) or "auto" (the cache if present,
  else the folder). The decoded arrays are cached in ``cache_dir`` when given; ``memory_map``:
  a cache read later is mapped, not read into memory.
  """
  cache = pathlib.Path(cache_dir).expanduser() / CACHE_NAME if cache_dir is not None else None
  if source not in ("auto", "folder", "tfds"):
    raise DataError(f"Tiny-ImageNet source {source!r} is not supported: use auto, folder or "
                    f"tfds")
  if cache is not None and cache.is_file() and source != "tfds":
    arrays = _load_cache(cache, memory_map)
  elif source == "tfds":
    if not tfds_name:
      raise DataError("TFDS has no Tiny-ImageNet builder in its catalog: set data.tfds_name to "
                      f"a registered builder, or use the folder ({_FOLDER_HINT})")
    x_train, y_train, x_test, y_test = tfds_source.load_tfds_supervised(
        tfds_name, ("train", "validation"), tfds_data_dir, _FOLDER_HINT)
    arrays = _validate(dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test),
                       f"tfds {tfds_name}", NUM_CLASSES)
  else:
    if path is None:
      where = f" and no cache {cache} exists" if cache is not None else ""
      raise DataError(f"Tiny-ImageNet needs data.path{where}: {_FOLDER_HINT}")
    x_train, y_train, x_test, y_test, wnids = read_tiny_imagenet_folder(find_root(path), workers)
    arrays = dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    if cache is not None:
      try:
        save_npz_atomic(cache, format=np.asarray(CACHE_FORMAT), wnids=wnids, **arrays)
        log.info("Cached Tiny-ImageNet arrays in %s", cache)
      except OSError as e:
        log.warning("Could not cache Tiny-ImageNet in %s: %s", cache, e)
  return Dataset(num_classes=NUM_CLASSES, name="tiny_imagenet", **arrays)


def _load(data_cfg: Any, source: str, *, seed: int = 0, T: int = 4,
          memory_map: bool = False) -> tuple[np.ndarray, ...]:
  def read(path: Any, cache_dir: pathlib.Path, source: str) -> Dataset:
    return load_tiny_imagenet(path, cache_dir=cache_dir, source=source,
                              tfds_name=registry.setting(data_cfg, "tfds_name"),
                              tfds_data_dir=registry.setting(data_cfg, "tfds_data_dir"),
                              memory_map=memory_map)

  return folders.load_own_files("tiny_imagenet", data_cfg, source, read, seed=seed, T=T)


registry.register(registry.DatasetSpec(
    name="tiny_imagenet", num_classes=NUM_CLASSES, image_shape=IMAGE_SHAPE,
    sources=("auto", "folder", "tfds", "synthetic"), load=_load, family="Tiny-ImageNet",
    random_subset=True))
