"""MNIST from the official IDX files, or TFDS (spec §6.4 MLP; the reference's ``get_mnist``).

IDX format (big-endian): magic 0x00000803 (images) or 0x00000801 (labels), then the dimension
sizes as u32 (N, 28, 28 or N), then the uint8 data. The four files
``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
``t10k-labels-idx1-ubyte`` (each optionally ``.gz``; torchvision's ``MNIST/raw/`` also works)
become uint8 images (N, 28, 28, 1) and int32 labels. The reference applies ToTensor only (no
augmentation), so the transform is ``augment.to_float``. Registers the dataset "mnist".
"""

from __future__ import annotations

import gzip
import os
import pathlib
from typing import Any

import numpy as np

from ei_snn_jax.data import folders, registry, tfds_source
from ei_snn_jax.data.base import DataError, Dataset

NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28, 1)
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
IDX_UBYTE = 0x08
_FOLDER_HINT = "point data.path at the folder of the four MNIST IDX files"


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """One IDX file (optionally gzipped) of unsigned bytes -> uint8 array of its shape."""
  path = pathlib.Path(path)
  try:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
      raw = gzip.decompress(raw)
  except (OSError, EOFError, gzip.BadGzipFile) as e:
    raise DataError(f"{path} could not be read ({e.__class__.__name__}: {e}): re-download or "
                    f"re-extract the file") from None
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
    raise DataError(f"{path} does not start with an IDX magic number: this is not an MNIST IDX "
                    f"file")
  if raw[2] != IDX_UBYTE:
    raise DataError(f"{path} stores IDX type 0x{raw[2]:02x}, expected 0x08 (unsigned bytes): "
                    f"this is not an MNIST IDX file")
  ndim = raw[3]
  header = 4 + 4 * ndim
  if len(raw) < header:
    raise DataError(f"{path}: the IDX header is cut short: the file is truncated; re-download "
                    f"it")
  shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
  size = int(np.prod(shape)) if shape else 0
  if len(raw) - header != size:
    raise DataError(f"{path} holds {len(raw) - header} data bytes but its header {shape} needs "
                    f"{size}: the file is truncated or corrupt; re-download it")
  return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def _find(folder: pathlib.Path, stem: str) -> pathlib.Path:
  names = [stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"]
  for base in (folder, folder / "MNIST" / "raw", folder / "raw"):
    for n in names:
      if (base / n).is_file():
        return base / n
  raise DataError(f"{folder} lacks {stem} (or {stem}.gz): {_FOLDER_HINT}")


def _validate(arrays: dict, desc: str) -> dict:
  for split in ("train", "test"):
    x, y = np.asarray(arrays[f"x_{split}"]), np.asarray(arrays[f"y_{split}"])
    if x.ndim == 3:
      x = x[..., None]
    if x.ndim != 4 or x.shape[1:] != IMAGE_SHAPE or x.dtype != np.uint8:
      raise DataError(f"{desc}: {split} images are {x.dtype} {x.shape}, expected uint8 "
                      f"(N, 28, 28): {_FOLDER_HINT}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
      raise DataError(f"{desc}: {y.shape[0] if y.ndim else 0} {split} labels for {x.shape[0]} "
                      f"images: the label and image files do not belong together")
    if y.size and int(y.max()) >= NUM_CLASSES:
      raise DataError(f"{desc}: {split} label {int(y.max())} is outside 0..9: the label file "
                      f"is corrupt")
    arrays[f"x_{split}"], arrays[f"y_{split}"] = np.ascontiguousarray(x), y.astype(np.int32)
  return arrays


def read_mnist_folder(path: str | os.PathLike) -> dict:
  """The four IDX files in ``path`` -> dict x_train, y_train, x_test, y_test (validated)."""
  folder = pathlib.Path(path).expanduser()
  if not folder.is_dir():
    raise DataError(f"data.path {folder} is not a folder: {_FOLDER_HINT}")
  arrays = {k: read_idx(_find(folder, stem)) for k, stem in IDX_FILES.items()}
  return _validate(arrays, f"MNIST in {folder}")


def load_mnist(path: str | os.PathLike | None = None, source: str = "auto",
               tfds_data_dir: str | None = None) -> Dataset:
  """MNIST as uint8 (N, 28, 28, 1) images and int32 labels (spec §6.4).

  ``source``: "folder" (IDX files in ``path``), "tfds" (builder "mnist"), or "auto" (the
  folder when ``path`` is set, else TFDS).
  """
  if source not in ("auto", "folder", "tfds"):
    raise DataError(f"MNIST source {source!r} is not supported: use auto, folder or tfds")
  if source == "folder" or (source == "auto" and path):
    if not path:
      raise DataError(f"MNIST from IDX files needs data.path: {_FOLDER_HINT}")
    arrays = read_mnist_folder(path)
  else:
    x_train, y_train, x_test, y_test = tfds_source.load_tfds_supervised(
        "mnist", ("train", "test"), tfds_data_dir, _FOLDER_HINT)
    arrays = _validate(dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test),
                       "tfds mnist")
  return Dataset(num_classes=NUM_CLASSES, name="mnist", **arrays)


def _load(data_cfg: Any, source: str, *, seed: int = 0, T: int = 4,
          memory_map: bool = False) -> tuple[np.ndarray, ...]:
  del memory_map                                     # MNIST is read directly (no cache)

  def read(path: Any, cache_dir: pathlib.Path, source: str) -> Dataset:
    del cache_dir
    return load_mnist(path, source=source,
                      tfds_data_dir=registry.setting(data_cfg, "tfds_data_dir"))

  return folders.load_own_files("mnist", data_cfg, source, read, seed=seed, T=T)


registry.register(registry.DatasetSpec(
    name="mnist", num_classes=NUM_CLASSES, image_shape=IMAGE_SHAPE,
    sources=("auto", "folder", "tfds", "synthetic"), load=_load, family="MNIST",
    random_subset=True))
