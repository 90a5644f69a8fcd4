"""Image arrays given by the user: an ``.npz`` or a folder of ``.npy``, validated (spec §7.4).

``data.source=arrays`` reads ``data.path``: an ``.npz`` with x_train, y_train, x_test, y_test (the
``cifar10.npz`` that ``../shared/data/rebuild_cifar10.py`` writes), or a directory holding
``x_train.npy`` ... ``y_test.npy`` or a single ``.npz``. ``validate_arrays`` turns them into
(N, 32, 32, 3) uint8 images and int32 labels, or raises ``DataError`` naming the split and the
fix. With ``memory_map`` the images stay in the file as read-only memory maps.
"""

from __future__ import annotations

import os
import pathlib
import zipfile
from typing import Any

import numpy as np

from ei_snn_jax.data import registry
from ei_snn_jax.data.base import ARRAY_KEYS, DataError
from ei_snn_jax.data.cache import npz_arrays

COMPACT_FORMAT = "cifar10_compact v1"
IMAGE_SHAPE = (32, 32, 3)

SHARED_DATA_HINT = (
    "for CIFAR-10 offline run `python ../shared/data/rebuild_cifar10.py "
    "../shared/data/cifar10_compact.npz <out>.npz` and pass --config.data.source=arrays "
    "--config.data.path=<out>.npz")


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _validate_images(x: Any, split: str, source_desc: str) -> np.ndarray:
  """One split's images -> contiguous (N, 32, 32, 3) uint8, or DataError."""
  x = np.asarray(x)
  if x.dtype == object:
    raise DataError(f"{source_desc}: {split} has dtype object: store the images as a uint8 "
                    f"array of shape (N, 32, 32, 3)")
  if x.ndim != 4:
    raise DataError(f"{source_desc}: {split} has shape {x.shape}, expected (N, 32, 32, 3) "
                    f"NHWC images: reshape/convert the array")
  if x.shape[0] == 0:
    raise DataError(f"{source_desc}: {split} is empty (shape {x.shape}): supply at least one "
                    f"example per split")
  if tuple(x.shape[1:]) != IMAGE_SHAPE:
    hint = ("it looks like NCHW: transpose with x.transpose(0, 2, 3, 1)"
            if tuple(x.shape[1:]) == (3, 32, 32) else "provide 32x32 RGB images")
    raise DataError(f"{source_desc}: {split} has shape {x.shape}, expected (N, 32, 32, 3) "
                    f"NHWC: {hint}")
  if x.dtype == np.uint8:
    return np.ascontiguousarray(x)
  if np.issubdtype(x.dtype, np.floating):
    finite = np.isfinite(x)
    if not finite.all():
      bad = int(x.size - np.count_nonzero(finite))
      raise DataError(f"{source_desc}: {split} contains {bad} NaN/inf pixel values: fix or drop "
                      f"those images")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
      raise DataError(f"{source_desc}: {split} is {x.dtype} with values in [{lo:g}, {hi:g}]; "
                      f"float images must lie in [0, 1]: store uint8 0..255 instead")
    return np.ascontiguousarray(np.round(x.astype(np.float64) * 255.0).astype(np.uint8))
  raise DataError(f"{source_desc}: {split} has dtype {x.dtype}, expected uint8 (0..255): "
                  f"convert with x.astype(np.uint8) after checking the range")


def _validate_labels(y: Any, n: int, num_classes: int, split: str,
                     source_desc: str) -> np.ndarray:
  """One split's labels -> (N,) int32 in [0, num_classes), or DataError."""
  y = np.asarray(y)
  if y.ndim == 2 and y.shape[1] == 1:      # Keras-style (N, 1) labels
    y = y[:, 0]
  if y.ndim != 1:
    raise DataError(f"{source_desc}: {split} has shape {y.shape}, expected (N,) integer class "
                    f"labels (not one-hot): convert with y.argmax(-1)")
  if y.dtype == np.bool_ or not np.issubdtype(y.dtype, np.integer):
    raise DataError(f"{source_desc}: {split} has dtype {y.dtype}, expected integer class "
                    f"labels: convert with y.astype(np.int64)")
  if y.shape[0] != n:
    raise DataError(f"{source_desc}: {split} has {y.shape[0]} labels but the images have {n} "
                    f"examples: the arrays must have equal length")
  if n and (int(y.min()) < 0 or int(y.max()) >= num_classes):
    raise DataError(f"{source_desc}: {split} labels lie in [{int(y.min())}, {int(y.max())}], "
                    f"outside [0, {num_classes}) for {num_classes} classes: check data.name "
                    f"or the labels")
  return np.ascontiguousarray(y.astype(np.int32))


def validate_arrays(x_train: Any, y_train: Any, x_test: Any, y_test: Any, num_classes: int,
                    source_desc: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Check and normalise the four arrays (spec §7.4); returns uint8 images, int32 labels.

  A missing array is passed as None. Float images in [0, 1] are converted to uint8 with
  round(x * 255); anything else that is not (N, 32, 32, 3) uint8 with integer labels in
  [0, num_classes) raises DataError naming the split.
  """
  arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
  missing = [k for k, v in arrays.items() if v is None]
  if missing:
    raise DataError(f"{source_desc}: missing array(s) {', '.join(missing)}: it must hold "
                    f"x_train, y_train, x_test, y_test")
  xtr = _validate_images(x_train, "x_train", source_desc)
  xte = _validate_images(x_test, "x_test", source_desc)
  ytr = _validate_labels(y_train, xtr.shape[0], num_classes, "y_train", source_desc)
  yte = _validate_labels(y_test, xte.shape[0], num_classes, "y_test", source_desc)
  _check_classes_used(ytr, yte, num_classes, source_desc)
  return xtr, ytr, xte, yte


def _check_classes_used(y_train: np.ndarray, y_test: np.ndarray, num_classes: int,
                        source_desc: str) -> None:
  """DataError when labels plentiful enough to show every class (>= 10 per class) use at most
  half of the model's classes: the arrays belong to another dataset than data.name (e.g.
  CIFAR-10 arrays under data.name=cifar100 would train a 100-class model on 10 classes)."""
  if len(y_train) < 10 * num_classes:
    return
  used = np.union1d(np.unique(y_train), np.unique(y_test))
  if 2 * len(used) <= num_classes:
    same = [name for name, n in registry.num_classes().items() if n == int(used.max()) + 1]
    hint = f" (e.g. data.name={same[0]})" if same else ""
    raise DataError(f"{source_desc}: the labels use only {len(used)} of the {num_classes} classes "
                    f"of this data.name (labels {int(used.min())}..{int(used.max())}): the arrays "
                    f"hold another dataset; set data.name to theirs{hint}")



def _compact_error(path: pathlib.Path) -> DataError:
  script = path.parent / "rebuild_cifar10.py"
  return DataError(
      f"{path} is the compact CIFAR-10 file (format '{COMPACT_FORMAT}'), not arrays: rebuild "
      f"them with `python {script} {path} <out>.npz` (or "
      f"ei_snn_jax.data.rebuild_cifar10_from_compact) and point data.path at <out>.npz")



def _load_npz(path: pathlib.Path, num_classes: int,
              memory_map: bool = False) -> tuple[np.ndarray, ...]:
  """Read and validate an arrays .npz (x_train, y_train, x_test, y_test); ``memory_map``: map
  the arrays instead of reading them (``npz_arrays``)."""
  desc = f"data.path {path}"
  with open(path, "rb") as f:
    head = f.read(6)
  if head[:4] != b"PK\x03\x04" and head != b"\x93NUMPY":
    raise DataError(f"{desc} is not a NumPy .npz archive (it starts with bytes {head!r}): save "
                    f"the arrays with np.savez(path, x_train=..., y_train=..., x_test=..., "
                    f"y_test=...)")
  try:
    z = np.load(path, allow_pickle=False)
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    raise DataError(f"{desc} could not be read as .npz ({e.__class__.__name__}: {e}): "
                    f"re-create the file") from None
  if not isinstance(z, np.lib.npyio.NpzFile):
    raise DataError(f"{desc} holds a single array, not an .npz archive: save x_train, "
                    f"y_train, x_test, y_test with np.savez")
  with z:
    if "format" in z.files:
      try:
        fmt = str(z["format"])
      except (ValueError, OSError):
        fmt = ""
      if fmt == COMPACT_FORMAT:
        raise _compact_error(path)
    missing = [k for k in ARRAY_KEYS if k not in z.files]
    if missing:
      raise DataError(f"{desc} lacks key(s) {', '.join(missing)} (has: "
                      f"{', '.join(z.files) or 'none'}): save it with np.savez(path, "
                      f"x_train=..., y_train=..., x_test=..., y_test=...)")
    try:
      arrays = npz_arrays(z, path, ARRAY_KEYS, memory_map)
    except zipfile.BadZipFile as e:
      raise DataError(f"{desc} is damaged ({e}): re-create or re-download the file") from None
    except (ValueError, OSError, EOFError) as e:
      raise DataError(f"{desc} could not be read ({e.__class__.__name__}: {e}): store plain "
                      f"numeric arrays (no pickled objects) and re-create the file") from None
  return validate_arrays(*arrays, num_classes, desc)


def _load_npy_dir(path: pathlib.Path, num_classes: int,
                  memory_map: bool = False) -> tuple[np.ndarray, ...]:
  """Read (or map) a directory of x_train.npy, y_train.npy, x_test.npy, y_test.npy (or one
  .npz)."""
  npys = {k: path / f"{k}.npy" for k in ARRAY_KEYS}
  present = [k for k, p in npys.items() if p.is_file()]
  if len(present) == len(ARRAY_KEYS):
    arrays = []
    for k in ARRAY_KEYS:
      try:
        arrays.append(np.load(npys[k], mmap_mode="r" if memory_map else None,
                              allow_pickle=False))
      except (OSError, ValueError, EOFError) as e:
        raise DataError(f"data.path {npys[k]} could not be read ({e.__class__.__name__}: {e}): "
                        f"re-create it with np.save") from None
    return validate_arrays(*arrays, num_classes, f"data.path {path}")
  npzs = sorted(p for p in path.glob("*.npz") if p.is_file())
  if not present and len(npzs) == 1:
    return _load_npz(npzs[0], num_classes, memory_map)
  if present:
    missing = [f"{k}.npy" for k in ARRAY_KEYS if k not in present]
    raise DataError(f"data.path {path} lacks {', '.join(missing)}: a directory needs all of "
                    f"x_train.npy, y_train.npy, x_test.npy, y_test.npy")
  if len(npzs) > 1:
    raise DataError(f"data.path {path} holds several .npz files ({', '.join(p.name for p in npzs)})"
                    f": point data.path at one of them")
  raise DataError(f"data.path {path} holds neither x_train.npy/y_train.npy/x_test.npy/"
                  f"y_test.npy nor an .npz: point data.path at the arrays")


def load_arrays(path: str | os.PathLike, num_classes: int,
                memory_map: bool = False) -> tuple[np.ndarray, ...]:
  """Load (x_train, y_train, x_test, y_test) from an .npz or a directory (spec §7.4);
  ``memory_map``: the images stay in the file, mapped (uint8 images; labels are converted)."""
  p = pathlib.Path(path).expanduser()
  if not p.exists():
    raise DataError(f"data.path {p} does not exist: {SHARED_DATA_HINT}, or point data.path at "
                    f"an existing .npz / directory of .npy arrays")
  if p.is_dir():
    return _load_npy_dir(p, num_classes, memory_map)
  return _load_npz(p, num_classes, memory_map)

