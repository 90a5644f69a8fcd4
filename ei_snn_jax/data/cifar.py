"""CIFAR-10 and CIFAR-100 (and their synthetic stand-in) as uint8 host arrays (spec §7.4).

Registers the datasets "cifar10", "cifar100" and "synthetic" (10 learnable classes of CIFAR's
shape). Their sources (``config.data``):

  arrays     ``data.path``: the arrays of ``data.arrays``.
  tfds       ``tensorflow_datasets.load`` (needs tensorflow-datasets *and* tensorflow); the
             arrays are cached as ``<cache_dir>/<name>.npz``.
  download   the official python-pickle archive, md5-checked, converted once to
             ``<cache_dir>/<name>.npz``; later runs need no network.
  synthetic  seeded random images whose class is learnable (``synthetic.synthetic_arrays``).
  auto       arrays if ``data.path`` is set, else the cached ``<cache_dir>/<name>.npz``, else the
             project's compact CIFAR-10 (``shared/data``), else tfds when tensorflow-datasets and
             tensorflow are importable, else download; for "synthetic", the synthetic source.
"""

from __future__ import annotations

import functools
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
from typing import Any

import numpy as np

from ei_snn_jax.data import registry, synthetic
from ei_snn_jax.data.arrays import IMAGE_SHAPE, SHARED_DATA_HINT, load_arrays, validate_arrays
from ei_snn_jax.data.base import ARRAY_KEYS, DataError
from ei_snn_jax.data.cache import save_npz_atomic

log = logging.getLogger(__name__)

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
                    f"data.source=arrays with data.path=... ({SHARED_DATA_HINT})") from None
  except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError, OSError) as e:
    part.unlink(missing_ok=True)
    reason = getattr(e, "reason", None) or e
    raise DataError(f"could not reach {url} ({reason}): no internet? use data.source=arrays "
                    f"with data.path=... ({SHARED_DATA_HINT})") from None
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
  validate_arrays(x_train, y_train, x_test, y_test, registry.get(name).num_classes,
                  f"archive {archive}")
  return save_npz_atomic(out, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


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
# The loader
# --------------------------------------------------------------------------------------------


def _module_available(name: str) -> bool:
  try:
    return importlib.util.find_spec(name) is not None
  except (ImportError, ValueError):
    return False


def _resolve_auto(name: str, path: Any, cache_dir: pathlib.Path) -> tuple[str, Any]:
  """(source, path) that data.source=auto stands for (module doc)."""
  if path:
    return "arrays", path
  if name == "synthetic":
    return "synthetic", path
  if (cache_dir / f"{name}.npz").is_file():
    return "arrays", str(cache_dir / f"{name}.npz")
  compact = shared_compact_cifar10() if name == "cifar10" else None
  if compact is not None:
    print(f"data: rebuilding CIFAR-10 from {compact} into {cache_dir / 'cifar10.npz'} (once)",
          flush=True)
    return "arrays", str(rebuild_cifar10_from_compact(compact, cache_dir / "cifar10.npz"))
  if _module_available("tensorflow_datasets") and _module_available("tensorflow"):
    return "tfds", path
  return "download", path


def load_cifar(name: str, data_cfg: Any, source: str, *, seed: int = 0, T: int = 4,
               memory_map: bool = False) -> tuple[np.ndarray, ...]:
  """(x_train, y_train, x_test, y_test) of ``name`` (cifar10, cifar100, synthetic) from
  ``source`` (module doc); ``memory_map``: arrays read from files stay mapped. ``T`` is unused."""
  del T
  num_classes = registry.get(name).num_classes
  path = registry.setting(data_cfg, "path")
  cache_dir = pathlib.Path(str(registry.setting(data_cfg, "cache_dir"))).expanduser()
  if source == "auto":
    source, path = _resolve_auto(name, path, cache_dir)
    log.info("data.source=auto resolved to %s", source)
  if source == "synthetic":
    return synthetic.from_config(name, data_cfg, seed=seed)
  if source == "arrays":
    if not path:
      raise DataError("data.source=arrays needs data.path: set it to an .npz (x_train, y_train, "
                      f"x_test, y_test) or a directory of .npy arrays ({SHARED_DATA_HINT})")
    arrays = load_arrays(path, num_classes, memory_map)
    print(f"data: {name} from {pathlib.Path(path).expanduser()}", flush=True)
    return arrays
  if source == "tfds":
    cached = cache_dir / f"{name}.npz"
    if cached.is_file():
      return load_arrays(cached, num_classes, memory_map)
    arrays = load_tfds_arrays(name, registry.setting(data_cfg, "tfds_data_dir"), num_classes)
    try:
      save_npz_atomic(cached, **dict(zip(ARRAY_KEYS, arrays)))
    except OSError as e:
      log.warning("Could not cache the TFDS arrays in %s: %s", cached, e)
    return arrays
  return load_arrays(download_dataset(name, cache_dir), num_classes, memory_map)


_CIFAR_SOURCES = ("auto", "arrays", "tfds", "download", "synthetic")
registry.register(registry.DatasetSpec(
    name="cifar10", num_classes=10, image_shape=IMAGE_SHAPE, sources=_CIFAR_SOURCES,
    load=functools.partial(load_cifar, "cifar10"), family="CIFAR"))
registry.register(registry.DatasetSpec(
    name="cifar100", num_classes=100, image_shape=IMAGE_SHAPE, sources=_CIFAR_SOURCES,
    load=functools.partial(load_cifar, "cifar100"), family="CIFAR"))
registry.register(registry.DatasetSpec(
    name="synthetic", num_classes=10, image_shape=IMAGE_SHAPE,
    sources=("auto", "arrays", "synthetic"), load=functools.partial(load_cifar, "synthetic"),
    family="CIFAR",
    source_fix="set data.source=synthetic (or auto), or data.name to cifar10/cifar100"))
