"""CIFAR-10/100 (and a learnable synthetic stand-in) as uint8 host arrays (spec §7.4).

Every dataset is returned as a ``Dataset`` of NHWC uint8 images and int32 labels; augmentation
and the [0, 1] scaling happen on the device (``ei_snn_jax.data.augment``). Sources (``config.data``):

  arrays     ``data.path``: an ``.npz`` with x_train, y_train, x_test, y_test (the
             ``cifar10.npz`` that ``../shared/data/rebuild_cifar10.py`` writes), or a directory
             holding ``x_train.npy`` ... ``y_test.npy`` or a single ``.npz``.
  tfds       ``tensorflow_datasets.load`` (needs tensorflow-datasets *and* tensorflow); the
             arrays are cached as ``<cache_dir>/<name>.npz``.
  download   the official python-pickle archive, md5-checked, converted once to
             ``<cache_dir>/<name>.npz``; later runs need no network.
  synthetic  seeded random images whose class is learnable (mean colour + coarse pattern).
  auto       arrays if ``data.path`` is set, else the cached ``<cache_dir>/<name>.npz``, else tfds
             when tensorflow-datasets and tensorflow are importable, else download.

Every data problem raises ``DataError`` with one line naming the problem and the fix.

``load_dataset(..., memory_map=True)`` (the training run's host path, ``data.placement``) maps
arrays read from ``.npy`` / uncompressed ``.npz`` files instead of reading them into memory, so
that a dataset larger than the host's memory is read batch by batch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import logging
import os
import pathlib
import pickle
import socket
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from typing import Any, Mapping

import numpy as np

from ei_snn_jax import errors
from ei_snn_jax.data.memmap import memory_map_npz

log = logging.getLogger(__name__)

COMPACT_FORMAT = "cifar10_compact v1"
ARRAY_KEYS = ("x_train", "y_train", "x_test", "y_test")
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "synthetic": 10, "tiny_imagenet": 200,
               "mnist": 10, "dvs128_gesture": 11, "cifar10_dvs": 10}
SOURCES = ("auto", "arrays", "tfds", "download", "synthetic", "folder")
# Read from their own files by ``data.folders`` (Tiny-ImageNet, MNIST, the DVS sets).
FOLDER_DATASETS = ("tiny_imagenet", "mnist", "dvs128_gesture", "cifar10_dvs")
IMAGE_SHAPE = (32, 32, 3)

# Official archives (spec §7.4). Tests override these dicts (or pass url=/md5=) to use a local
# HTTP server.
DOWNLOAD_URLS = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
}
DOWNLOAD_MD5 = {
    "cifar10": "c58f30108f718f92721af3b95e74349a",
    "cifar100": "eb9058c3a382ffc7106e4002c42a8d85",
}
DOWNLOAD_TIMEOUT_S = 60.0

_SHARED_DATA_HINT = (
    "for CIFAR-10 offline run `python ../shared/data/rebuild_cifar10.py "
    "../shared/data/cifar10_compact.npz <out>.npz` and pass --config.data.source=arrays "
    "--config.data.path=<out>.npz")



class DataError(errors.UserError, ValueError):
  """A data problem; the message is one line naming the problem and the fix (spec §7.4)."""

  def __init__(self, message: str):
    super().__init__(" ".join(str(message).split()))


@dataclasses.dataclass(frozen=True, eq=False)   # arrays: compare fields explicitly
class Dataset:
  """Train/test split as host arrays: NHWC uint8 images, int32 labels (spec §7.4)."""
  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  name: str

  @property
  def num_train(self) -> int:
    """Number of training examples."""
    return int(self.x_train.shape[0])

  @property
  def num_test(self) -> int:
    """Number of test examples."""
    return int(self.x_test.shape[0])


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
    same = [name for name, n in NUM_CLASSES.items() if n == int(used.max()) + 1]
    hint = f" (e.g. data.name={same[0]})" if same else ""
    raise DataError(f"{source_desc}: the labels use only {len(used)} of the {num_classes} classes "
                    f"of this data.name (labels {int(used.min())}..{int(used.max())}): the arrays "
                    f"hold another dataset; set data.name to theirs{hint}")


# --------------------------------------------------------------------------------------------
# Arrays on disk
# --------------------------------------------------------------------------------------------


def _compact_error(path: pathlib.Path) -> DataError:
  script = path.parent / "rebuild_cifar10.py"
  return DataError(
      f"{path} is the compact CIFAR-10 file (format '{COMPACT_FORMAT}'), not arrays: rebuild "
      f"them with `python {script} {path} <out>.npz` (or "
      f"ei_snn_jax.data.rebuild_cifar10_from_compact) and point data.path at <out>.npz")


def npz_arrays(z: Any, path: pathlib.Path, keys: tuple[str, ...],
               memory_map: bool = False) -> list[np.ndarray]:
  """The arrays ``keys`` of the open ``np.load`` archive ``z`` of ``path``: read into memory,
  or with ``memory_map`` mapped from the file (``memory_map_npz``; a compressed file, which
  cannot be mapped, is read, with a log line)."""
  if memory_map:
    try:
      mapped = memory_map_npz(path)
      return [mapped[k] for k in keys]
    except ValueError as e:
      log.warning("%s is read into memory: %s", path, e)
  return [z[k] for k in keys]


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
    raise DataError(f"data.path {p} does not exist: {_SHARED_DATA_HINT}, or point data.path at "
                    f"an existing .npz / directory of .npy arrays")
  if p.is_dir():
    return _load_npy_dir(p, num_classes, memory_map)
  return _load_npz(p, num_classes, memory_map)


def _save_npz_atomic(path: pathlib.Path, **arrays: np.ndarray) -> pathlib.Path:
  """np.savez to a temporary name in the same folder, then rename (no half-written cache)."""
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp.npz", dir=path.parent)
  os.close(fd)
  try:
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise
  return path


# --------------------------------------------------------------------------------------------
# Synthetic
# --------------------------------------------------------------------------------------------


def read_cache_arrays(path: pathlib.Path, cache_format: str, what: str,
                      memory_map: bool = False) -> dict[str, np.ndarray]:
  """The four arrays of a converted-dataset cache written with ``format=cache_format``, read
  into memory or, with ``memory_map``, mapped from the file (``npz_arrays``).

  A cache of another format, or one that cannot be read, is one ``DataError`` line saying to
  delete it (it is rebuilt from data.path). ``what`` names the cache kind in the message.
  """
  try:
    with np.load(path, allow_pickle=False) as z:
      if "format" not in z.files or str(z["format"]) != cache_format:
        raise DataError(f"{path} is not an ei_snn_jax {what} cache ({cache_format}): delete it "
                        f"so that it is rebuilt from data.path")
      return dict(zip(ARRAY_KEYS, npz_arrays(z, path, ARRAY_KEYS, memory_map)))
  except DataError:
    raise
  except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
    raise DataError(f"cache {path} could not be read ({e.__class__.__name__}: {e}): delete it "
                    f"so that it is rebuilt from data.path") from None


def synthetic_arrays(num_classes: int, train_size: int, test_size: int,
                     seed: int = 0) -> tuple[np.ndarray, ...]:
  """Seeded, learnable uint8 images (spec §7.4 offline stand-in for CIFAR).

  Each class has a mean colour and a coarse 4x4 colour pattern (drawn from a fixed seed, so
  train and test share them); examples add Gaussian pixel noise drawn from ``seed``. Labels are
  balanced (round robin) and shuffled.
  """
  if train_size <= 0 or test_size <= 0:
    raise DataError(f"synthetic sizes must be positive (train {train_size}, test {test_size}): "
                    f"set data.synthetic_train_size / data.synthetic_test_size > 0")
  proto_rng = np.random.default_rng([num_classes, 0x5EED])
  colour = proto_rng.uniform(50.0, 205.0, size=(num_classes, 1, 1, 3))
  coarse = proto_rng.uniform(-45.0, 45.0, size=(num_classes, 4, 4, 3))
  protos = colour + np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)      # (K, 32, 32, 3)

  def split(n: int, which: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, which, 0x5EED])
    y = rng.permutation(np.arange(n) % num_classes).astype(np.int32)
    x = protos[y] + rng.normal(0.0, 24.0, size=(n,) + IMAGE_SHAPE)
    return np.clip(np.round(x), 0, 255).astype(np.uint8), y

  x_train, y_train = split(int(train_size), 1)
  x_test, y_test = split(int(test_size), 2)
  return x_train, y_train, x_test, y_test


# --------------------------------------------------------------------------------------------
# TFDS
# --------------------------------------------------------------------------------------------


def load_tfds_arrays(name: str, data_dir: str | None,
                     num_classes: int) -> tuple[np.ndarray, ...]:
  """``tfds.load(name, batch_size=-1)`` -> validated arrays (spec §7.4; needs TF, see notes §2)."""
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise DataError(f"data.source=tfds needs tensorflow-datasets ({e}): `pip install "
                    f"tensorflow-datasets tensorflow-cpu importlib_resources`, or use "
                    f"data.source=arrays (data.path=...) or data.source=download") from None
  kwargs = {}
  if data_dir:
    kwargs["data_dir"] = str(pathlib.Path(data_dir).expanduser())
  try:
    train, test = tfds.load(name, split=["train", "test"], batch_size=-1, as_supervised=True,
                            download=True, **kwargs)
    (x_train, y_train), (x_test, y_test) = tfds.as_numpy(train), tfds.as_numpy(test)
  except ImportError as e:
    raise DataError(f"tfds.load({name!r}) needs tensorflow ({e}): `pip install tensorflow-cpu "
                    f"importlib_resources`, or use data.source=arrays or data.source=download"
                    ) from None
  except Exception as e:  # network, missing data, TF errors: report in one line
    raise DataError(f"tfds.load({name!r}) failed ({e.__class__.__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else ''}): check data.tfds_data_dir / "
                    f"the network, or use data.source=arrays with data.path=...") from None
  return validate_arrays(x_train, y_train, x_test, y_test, num_classes, f"tfds {name}")


# --------------------------------------------------------------------------------------------
# Official archive download
# --------------------------------------------------------------------------------------------


def _md5(path: pathlib.Path) -> str:
  h = hashlib.md5()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def _fetch(url: str, dest: pathlib.Path, md5: str, timeout: float) -> None:
  """Download url to dest (via dest.part), checking the md5; no partial file is left behind."""
  part = dest.with_name(dest.name + ".part")
  h = hashlib.md5()
  try:
    with urllib.request.urlopen(url, timeout=timeout) as r, open(part, "wb") as f:
      for chunk in iter(lambda: r.read(1 << 20), b""):
        h.update(chunk)
        f.write(chunk)
  except urllib.error.HTTPError as e:
    part.unlink(missing_ok=True)
    raise DataError(f"{url} answered HTTP {e.code} ({e.reason}): check the URL, or use "
                    f"data.source=arrays with data.path=... ({_SHARED_DATA_HINT})") from None
  except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError) as e:
    part.unlink(missing_ok=True)
    reason = getattr(e, "reason", None) or e
    raise DataError(f"could not reach {url} ({reason}): no internet? use data.source=arrays "
                    f"with data.path=... ({_SHARED_DATA_HINT})") from None
  if h.hexdigest() != md5:
    part.unlink(missing_ok=True)
    raise DataError(f"download of {url} has md5 {h.hexdigest()}, expected {md5} (corrupt or "
                    f"truncated; deleted): retry, or fetch the archive by hand into the cache")
  os.replace(part, dest)


def _unpickle(tar: tarfile.TarFile, member: str) -> dict:
  f = tar.extractfile(member)
  if f is None:
    raise KeyError(member)
  return pickle.loads(f.read(), encoding="bytes")


def _batch_arrays(d: dict, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
  x = np.asarray(d[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
  return x, np.asarray(d[label_key], np.int64)


def convert_archive(archive: str | os.PathLike, name: str) -> tuple[np.ndarray, ...]:
  """Official cifar-{10,100}-python.tar.gz -> (x_train, y_train, x_test, y_test) (spec §7.4)."""
  archive = pathlib.Path(archive)
  try:
    with tarfile.open(archive, "r:gz") as tar:
      by_base = {}
      for m in tar.getmembers():
        if m.isfile():
          by_base[(pathlib.PurePosixPath(m.name).parent.name,
                   pathlib.PurePosixPath(m.name).name)] = m.name
      if name == "cifar10":
        folder, label_key = "cifar-10-batches-py", b"labels"
        train_members = [f"data_batch_{i}" for i in range(1, 6)]
        test_members = ["test_batch"]
      else:
        folder, label_key = "cifar-100-python", b"fine_labels"
        train_members, test_members = ["train"], ["test"]

      def read(members: list[str]) -> tuple[np.ndarray, np.ndarray]:
        parts = [_batch_arrays(_unpickle(tar, by_base[(folder, m)]), label_key) for m in members]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

      x_train, y_train = read(train_members)
      x_test, y_test = read(test_members)
  except (tarfile.TarError, OSError, EOFError, KeyError, pickle.UnpicklingError, ValueError,
          TypeError) as e:
    raise DataError(f"archive {archive} is not a valid {name} python archive "
                    f"({e.__class__.__name__}: {e}): delete it and download again") from None
  return x_train, y_train, x_test, y_test


def download_dataset(name: str, cache_dir: str | os.PathLike, url: str | None = None,
                     md5: str | None = None, timeout: float | None = None) -> pathlib.Path:
  """Download + md5-check + convert the official archive once; returns ``<cache>/<name>.npz``.

  Spec §7.4. An existing converted file is returned without any network access; an existing
  archive with the right md5 is converted without downloading again.
  """
  if name not in DOWNLOAD_URLS:
    raise DataError(f"data.source=download supports {sorted(DOWNLOAD_URLS)}, not {name!r}: "
                    f"set data.name to cifar10 or cifar100")
  cache = pathlib.Path(cache_dir).expanduser()
  out = cache / f"{name}.npz"
  if out.is_file():
    return out
  url = url or DOWNLOAD_URLS[name]
  md5 = (md5 or DOWNLOAD_MD5[name]).lower()
  timeout = DOWNLOAD_TIMEOUT_S if timeout is None else timeout
  try:
    cache.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise DataError(f"data.cache_dir {cache} cannot be created ({e}): set data.cache_dir to a "
                    f"writable folder") from None
  archive = cache / url.rstrip("/").rsplit("/", 1)[-1]
  if archive.is_file() and _md5(archive) != md5:
    log.warning("Deleting %s: md5 mismatch (expected %s)", archive, md5)
    archive.unlink()
  if not archive.is_file():
    log.info("Downloading %s to %s", url, archive)
    _fetch(url, archive, md5, timeout)
  x_train, y_train, x_test, y_test = convert_archive(archive, name)
  validate_arrays(x_train, y_train, x_test, y_test, NUM_CLASSES[name], f"archive {archive}")
  return _save_npz_atomic(out, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


# --------------------------------------------------------------------------------------------
# Compact CIFAR-10 in ../shared/data
# --------------------------------------------------------------------------------------------


def _is_arrays_npz(path: pathlib.Path) -> bool:
  try:
    with np.load(path, allow_pickle=False) as z:
      return all(k in z.files for k in ARRAY_KEYS) and z["y_test"].ndim == 1
  except Exception:  # unreadable / truncated / not an npz
    return False


def shared_compact_cifar10() -> pathlib.Path | None:
  """The project's offline CIFAR-10 (``shared/data/cifar10_compact.npz`` beside the checkout:
  next to the current directory or to the repository holding this package), or None."""
  here = pathlib.Path(__file__).resolve().parents[2]
  for root in (pathlib.Path.cwd(), here):
    candidate = root.parent / "shared" / "data" / "cifar10_compact.npz"
    if candidate.is_file() and (candidate.parent / "rebuild_cifar10.py").is_file():
      return candidate
  return None


def rebuild_cifar10_from_compact(compact_path: str | os.PathLike,
                                 out_path: str | os.PathLike) -> pathlib.Path:
  """Rebuild ``cifar10.npz`` from the compact file with its ``rebuild_cifar10.py`` (spec §7.4).

  Returns out_path at once if it already holds the arrays; otherwise runs the script that lives
  next to the compact file, writing to a temporary name and renaming atomically.
  """
  compact = pathlib.Path(compact_path).expanduser()
  out = pathlib.Path(out_path).expanduser()
  if out.is_file() and _is_arrays_npz(out):
    return out
  script = compact.parent / "rebuild_cifar10.py"
  if not compact.is_file():
    raise DataError(f"compact CIFAR-10 file {compact} does not exist: point at "
                    f"../shared/data/cifar10_compact.npz")
  if not script.is_file():
    raise DataError(f"{script} does not exist: the rebuild script must sit next to {compact}")
  try:
    out.parent.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise DataError(f"cannot create {out.parent} ({e}): choose a writable out_path") from None
  fd, tmp = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=".tmp.npz", dir=out.parent)
  os.close(fd)
  try:
    proc = subprocess.run([sys.executable, str(script), str(compact), tmp], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
      lines = (proc.stderr or proc.stdout or "").strip().splitlines()
      raise DataError(f"{script} failed (exit {proc.returncode}: "
                      f"{lines[-1] if lines else 'no output'}): check {compact}")
    log.info("%s", proc.stdout.strip())
    os.replace(tmp, out)
  finally:
    pathlib.Path(tmp).unlink(missing_ok=True)
  return out


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def _get(cfg: Any, key: str, default: Any = None) -> Any:
  if isinstance(cfg, Mapping) or hasattr(cfg, "get"):
    try:
      v = cfg.get(key, default)
    except (AttributeError, KeyError):
      v = default
  else:
    v = getattr(cfg, key, default)
  return default if v is None else v


def _module_available(name: str) -> bool:
  try:
    return importlib.util.find_spec(name) is not None
  except (ImportError, ValueError):
    return False


def _take_subset(x: np.ndarray, y: np.ndarray, k: int, field: str) -> tuple[np.ndarray, ...]:
  if k < 0:
    raise DataError(f"{field} = {k} is negative: use 0 (all examples) or a positive count")
  if k == 0:
    return x, y
  if k > x.shape[0]:
    log.warning("%s = %d exceeds the %d available examples; using all", field, k, x.shape[0])
  return x[:k], y[:k]


def load_dataset(data_cfg: Any, seed: int = 0, T: int = 4, memory_map: bool = False) -> Dataset:
  """Load ``config.data`` as a ``Dataset`` of host arrays (spec §7.4).

  ``seed`` only affects the synthetic source; ``T`` (``model.T``) is the number of event frames
  of the DVS sets. Subsets (``train_subset``/``test_subset`` > 0) keep the first N examples
  (for the datasets of ``data.folders``, stored in class order: a fixed random N).
  ``memory_map``: images read from an ``.npy`` / uncompressed ``.npz`` file (the given arrays,
  the converted caches) stay in the file as read-only memory maps instead of being read.
  """
  name = str(_get(data_cfg, "name", "cifar10")).lower()
  source = str(_get(data_cfg, "source", "auto")).lower()
  if name not in NUM_CLASSES:
    raise DataError(f"data.name {name!r} is not supported: use one of {sorted(NUM_CLASSES)}")
  if source not in SOURCES:
    raise DataError(f"data.source {source!r} is not supported: use one of {list(SOURCES)}")
  num_classes = NUM_CLASSES[name]
  path = _get(data_cfg, "path", None)
  cache_dir = pathlib.Path(str(_get(data_cfg, "cache_dir", "~/.cache/ei_snn_jax"))).expanduser()

  if name in FOLDER_DATASETS:
    from ei_snn_jax.data import folders  # pylint: disable=import-outside-toplevel
    if source == "auto" and path:
      source = "folder"
    x_train, y_train, x_test, y_test = folders.load_folder_arrays(name, source, data_cfg, seed, T,
                                                                  memory_map)
    x_train, y_train = folders.fixed_subset(x_train, y_train,
                                            int(_get(data_cfg, "train_subset", 0)),
                                            "data.train_subset")
    x_test, y_test = folders.fixed_subset(x_test, y_test, int(_get(data_cfg, "test_subset", 0)),
                                          "data.test_subset")
    return Dataset(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                   num_classes=num_classes, name=name)
  if source == "folder":
    raise DataError(f"data.source=folder reads {', '.join(FOLDER_DATASETS)}, not {name}: use "
                    f"data.source=arrays (or auto)")

  if source == "auto":
    if path:
      source = "arrays"
    elif name == "synthetic":
      source = "synthetic"
    elif (cache_dir / f"{name}.npz").is_file():
      source, path = "arrays", str(cache_dir / f"{name}.npz")
    elif name == "cifar10" and shared_compact_cifar10() is not None:
      compact = shared_compact_cifar10()
      print(f"data: rebuilding CIFAR-10 from {compact} into {cache_dir / 'cifar10.npz'} (once)",
            flush=True)
      source = "arrays"
      path = str(rebuild_cifar10_from_compact(compact, cache_dir / "cifar10.npz"))
    elif _module_available("tensorflow_datasets") and _module_available("tensorflow"):
      source = "tfds"
    else:
      source = "download"
    log.info("data.source=auto resolved to %s", source)

  if source == "synthetic":
    arrays = synthetic_arrays(num_classes, int(_get(data_cfg, "synthetic_train_size", 512)),
                              int(_get(data_cfg, "synthetic_test_size", 256)), seed=seed)
  elif source == "arrays":
    if not path:
      raise DataError("data.source=arrays needs data.path: set it to an .npz (x_train, y_train, "
                      f"x_test, y_test) or a directory of .npy arrays ({_SHARED_DATA_HINT})")
    arrays = load_arrays(path, num_classes, memory_map)
    print(f"data: {name} from {pathlib.Path(path).expanduser()}", flush=True)
  elif name == "synthetic":
    raise DataError(f"data.name=synthetic cannot use data.source={source}: set data.source to "
                    f"synthetic (or auto), or data.name to cifar10/cifar100")
  elif source == "tfds":
    cached = cache_dir / f"{name}.npz"
    if cached.is_file():
      arrays = load_arrays(cached, num_classes, memory_map)
    else:
      arrays = load_tfds_arrays(name, _get(data_cfg, "tfds_data_dir", None), num_classes)
      try:
        _save_npz_atomic(cached, **dict(zip(ARRAY_KEYS, arrays)))
      except OSError as e:
        log.warning("Could not cache the TFDS arrays in %s: %s", cached, e)
  else:  # download
    arrays = load_arrays(download_dataset(name, cache_dir), num_classes, memory_map)

  x_train, y_train, x_test, y_test = arrays
  x_train, y_train = _take_subset(x_train, y_train, int(_get(data_cfg, "train_subset", 0)),
                                  "data.train_subset")
  x_test, y_test = _take_subset(x_test, y_test, int(_get(data_cfg, "test_subset", 0)),
                                "data.test_subset")
  return Dataset(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                 num_classes=num_classes, name=name)
