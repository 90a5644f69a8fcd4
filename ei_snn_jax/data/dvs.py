"""DVS128-Gesture and CIFAR10-DVS as event-count frames, the reference's splits (spec §7.4).

Both datasets become a ``Dataset`` whose images are event counts (N, T, 128, 128, 2), unsigned
integers (``frames.count_dtype``), integrated with spikingjelly's split_by='number' (T frames =
``model.T``). Resizing to 48x48 and the augmentations happen on the device
(``ei_snn_jax.data.dvs_augment``). Sources, found from ``path``:

DVS128-Gesture (11 classes; 1176 train / 288 test samples on the full data)
  * the official ``DvsGesture`` folder: ``trials_to_train.txt``, ``trials_to_test.txt``, every
    listed ``userXX_<lighting>.aedat`` (AEDAT 3.1) with its ``userXX_<lighting>_labels.csv``
    (header line, then ``class,startTime_usec,endTime_usec``); a sample is the events with
    start <= t < end, its label class - 1, exactly as spikingjelly cuts them;
  * spikingjelly's integrated frames
    ``frames_number_<T>_split_by_number/{train,test}/<label>/*.npz`` (``path`` may be that
    folder or the spikingjelly root above it).
CIFAR10-DVS (10 classes; 9000 train / 1000 test)
  * the extracted archives: one folder per class (``airplane`` ... ``truck``) of AEDAT 2.0
    ``*.aedat`` files (``path`` may be spikingjelly's ``extract`` folder or its parent);
  * spikingjelly's frames ``frames_number_<T>_split_by_number/<class>/*.npz``.
  The split is spikingjelly's ``split_to_train_test_set(0.9, random_split=False)``: within each
  class, files in sorted-name order, the first ceil(0.9 n) train and the rest test.

Labels are the class indices of torchvision's ``DatasetFolder`` that the reference trained with:
class folders sorted as strings. For CIFAR10-DVS that is the CIFAR-10 order; for DVS128-Gesture
folder "10" (gesture 11, "other") sorts after "1", so the labels are (folders "0", "1", "10",
"2", ..., "9") -> 0 .. 10 (``GESTURE_FOLDERS``); released checkpoints' outputs use this order.

The result is cached once as ``<cache_dir>/<name>_T<T>.npz`` (atomic write); later runs read
only that file. Every problem raises ``DataError`` with one line naming the file and the fix.
Registers the datasets "dvs128_gesture" and "cifar10_dvs".
"""

from __future__ import annotations

import concurrent.futures
import csv
import functools
import logging
import math
import os
import pathlib
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ei_snn_jax.data import aedat, folders, frames, registry
from ei_snn_jax.data.base import DataError, Dataset
from ei_snn_jax.data.cache import read_cache_arrays, save_npz_atomic

log = logging.getLogger(__name__)

SENSOR_SIZE = (128, 128)
GESTURE_NUM_CLASSES = 11
GESTURE_FOLDERS = tuple(sorted(str(k) for k in range(GESTURE_NUM_CLASSES)))
CIFAR10_DVS_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                       "ship", "truck")
CIFAR10_DVS_TRAIN_RATIO = 0.9
CACHE_FORMAT = "ei_snn_jax dvs frames v1"


def frames_folder_name(T: int) -> str:
  """spikingjelly's folder of T integrated frames per sample (split_by='number')."""
  return f"frames_number_{int(T)}_split_by_number"


def _workers(workers: int | None) -> int:
  return max(1, int(workers) if workers else min(8, os.cpu_count() or 1))


def _stack_counts(samples: Sequence[np.ndarray], what: str) -> np.ndarray:
  """(T, H, W, 2) counts -> one (N, T, H, W, 2) array of the smallest unsigned dtype."""
  if not samples:
    raise DataError(f"{what} holds no samples: check that the folder is complete")
  top = max(int(s.max(initial=0)) for s in samples)
  return np.stack(samples).astype(frames.count_dtype(top), copy=False)


def _map(fn: Callable, items: Iterable, workers: int | None) -> list:
  items = list(items)
  if _workers(workers) == 1 or len(items) <= 1:
    return [fn(i) for i in items]
  with concurrent.futures.ThreadPoolExecutor(_workers(workers)) as pool:
    return list(pool.map(fn, items))


# --------------------------------------------------------------------------------------------
# DVS128-Gesture
# --------------------------------------------------------------------------------------------


def read_trials(path: str | os.PathLike) -> list[str]:
  """The ``*.aedat`` names listed in ``trials_to_train.txt`` / ``trials_to_test.txt``."""
  path = pathlib.Path(path)
  try:
    names = [ln.strip() for ln in path.read_text().splitlines()]
  except (OSError, UnicodeDecodeError) as e:
    raise DataError(f"{path} could not be read ({e.__class__.__name__}): the DvsGesture folder "
                    f"must hold trials_to_train.txt and trials_to_test.txt") from None
  names = [n for n in names if n]
  if not names:
    raise DataError(f"{path} lists no .aedat files: restore it from DvsGesture.tar.gz")
  return names


def read_gesture_labels(path: str | os.PathLike) -> np.ndarray:
  """A ``*_labels.csv`` -> int64 rows (class 1..11, startTime_usec, endTime_usec)."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise DataError(f"label file {path} is missing: every userXX_<lighting>.aedat needs its "
                    f"userXX_<lighting>_labels.csv next to it (from DvsGesture.tar.gz)")
  rows = []
  try:
    with open(path, newline="") as f:
      reader = csv.reader(f)
      next(reader, None)                                  # "class,startTime_usec,endTime_usec"
      for line_no, row in enumerate(reader, start=2):
        if not row or not "".join(row).strip():
          continue
        try:
          if len(row) < 3:
            raise ValueError
          rows.append([int(v) for v in row[:3]])
        except ValueError:
          raise DataError(f"{path} line {line_no} is {','.join(row)!r}, expected "
                          f"'class,startTime_usec,endTime_usec' integers: restore the file"
                          ) from None
  except (OSError, UnicodeDecodeError) as e:
    raise DataError(f"{path} could not be read ({e.__class__.__name__}): restore the label "
                    f"file from DvsGesture.tar.gz") from None
  if not rows:
    raise DataError(f"{path} has no label rows: restore the label file from DvsGesture.tar.gz")
  table = np.asarray(rows, np.int64)
  bad = (table[:, 0] < 1) | (table[:, 0] > GESTURE_NUM_CLASSES)
  if bad.any():
    raise DataError(f"{path}: class {int(table[bad][0, 0])} outside 1..{GESTURE_NUM_CLASSES}: "
                    f"this is not a DVS128-Gesture label file")
  return table


def cut_gesture_samples(events: aedat.Events, labels: np.ndarray,
                        stem: str) -> list[tuple[str, int, aedat.Events]]:
  """One recording -> [(sample file name, class folder, events)] as spikingjelly cuts it.

  Row k of the label table gives the events with start <= t < end; the folder is class - 1 and
  the name ``<stem>_<n>.npz`` with n counting that folder's samples of this recording.
  """
  per_folder = [0] * GESTURE_NUM_CLASSES
  out = []
  for cls, start, end in labels:
    folder = int(cls) - 1
    mask = (events.t >= start) & (events.t < end)
    out.append((f"{stem}_{per_folder[folder]}.npz", folder, events.select(mask)))
    per_folder[folder] += 1
  return out


def _gesture_from_aedat(root: pathlib.Path, T: int, workers: int | None) -> tuple:
  height, width = SENSOR_SIZE
  splits = []
  for split in ("train", "test"):
    trials = read_trials(root / f"trials_to_{split}.txt")

    def one_file(name: str) -> list[tuple[str, int, np.ndarray]]:
      aedat_path = root / name
      if not aedat_path.is_file():
        raise DataError(f"{aedat_path} is listed in trials_to_{split}.txt but missing: "
                        f"extract the whole DvsGesture.tar.gz into {root}")
      stem = os.path.splitext(name)[0]
      labels = read_gesture_labels(root / f"{stem}_labels.csv")
      events = aedat.read_aedat3(aedat_path)
      return [(sample, folder, _compact(frames.integrate_by_number(ev, T, height, width,
                                                                    aedat_path)))
              for sample, folder, ev in cut_gesture_samples(events, labels, stem)]

    samples = [s for per_file in _map(one_file, trials, workers) for s in per_file]
    # DatasetFolder order: class folders sorted as strings, then file names sorted.
    samples.sort(key=lambda s: (GESTURE_FOLDERS.index(str(s[1])), s[0]))
    x = _stack_counts([s[2] for s in samples], f"{root} ({split})")
    y = np.asarray([GESTURE_FOLDERS.index(str(s[1])) for s in samples], np.int32)
    splits += [x, y]
  return tuple(splits)


def _compact(counts: np.ndarray) -> np.ndarray:
  return counts.astype(frames.count_dtype(int(counts.max(initial=0))))


def _read_frames_class_folders(folder: pathlib.Path, class_names: Sequence[str], T: int,
                               workers: int | None) -> tuple[list[list[np.ndarray]], list]:
  """Class folders of spikingjelly frames (DatasetFolder order) -> per-class sample lists."""
  height, width = SENSOR_SIZE
  missing = [c for c in class_names if not (folder / c).is_dir()]
  if missing:
    raise DataError(f"{folder} lacks class folder(s) {', '.join(missing)}: point at a complete "
                    f"{frames_folder_name(T)} folder")
  files = [sorted(p for p in (folder / c).iterdir() if p.suffix in (".npz", ".npy"))
           for c in sorted(class_names)]
  empty = [c for c, fs in zip(sorted(class_names), files) if not fs]
  if empty:
    log.warning("%s: class folder(s) %s hold no frames", folder, ", ".join(empty))
  flat = [p for fs in files for p in fs]
  loaded = _map(lambda p: _compact(frames.read_frames_npz(p, T, height, width)), flat, workers)
  out, i = [], 0
  for fs in files:
    out.append(loaded[i:i + len(fs)])
    i += len(fs)
  return out, files


def _gesture_from_frames(folder: pathlib.Path, T: int, workers: int | None) -> tuple:
  splits = []
  for split in ("train", "test"):
    if not (folder / split).is_dir():
      raise DataError(f"{folder} has no '{split}' folder: DVS128-Gesture frames live in "
                      f"{frames_folder_name(T)}/train/<0..10>/ and .../test/<0..10>/")
    per_class, _ = _read_frames_class_folders(folder / split, GESTURE_FOLDERS, T, workers)
    x = _stack_counts([s for cls in per_class for s in cls], str(folder / split))
    y = np.concatenate([np.full(len(cls), k, np.int32) for k, cls in enumerate(per_class)])
    splits += [x, y]
  return tuple(splits)


# --------------------------------------------------------------------------------------------
# CIFAR10-DVS
# --------------------------------------------------------------------------------------------


def cifar10_dvs_split(labels: np.ndarray, num_classes: int = len(CIFAR10_DVS_CLASSES),
                      train_ratio: float = CIFAR10_DVS_TRAIN_RATIO) -> tuple[np.ndarray, ...]:
  """spikingjelly split_to_train_test_set(0.9, random_split=False): (train_idx, test_idx).

  ``labels`` in dataset order; per class the first ceil(ratio * n) indices go to train.
  """
  labels = np.asarray(labels)
  train, test = [], []
  for k in range(num_classes):
    idx = np.flatnonzero(labels == k)
    pos = math.ceil(len(idx) * train_ratio)
    train.append(idx[:pos])
    test.append(idx[pos:])
  return np.concatenate(train).astype(np.int64), np.concatenate(test).astype(np.int64)


def _cifar10_dvs_from_aedat(root: pathlib.Path, T: int, workers: int | None) -> tuple:
  height, width = SENSOR_SIZE
  missing = [c for c in CIFAR10_DVS_CLASSES if not (root / c).is_dir()]
  if missing:
    raise DataError(f"{root} lacks class folder(s) {', '.join(missing)}: extract every "
                    f"CIFAR10-DVS class zip (airplane.zip ... truck.zip) into it")
  per_class = []
  for c in sorted(CIFAR10_DVS_CLASSES):
    files = sorted((p for p in (root / c).iterdir() if p.suffix == ".aedat"),
                   key=lambda p: p.stem + ".npz")     # spikingjelly sorts the .npz names
    if not files:
      raise DataError(f"{root / c} holds no .aedat files: extract {c}.zip into it")
    per_class.append(_map(
        lambda p: _compact(frames.integrate_by_number(aedat.read_aedat2_cifar10dvs(p), T,
                                                      height, width, p)), files, workers))
  return _cifar10_dvs_split_arrays(per_class, str(root))


def _cifar10_dvs_split_arrays(per_class: list[list[np.ndarray]], what: str) -> tuple:
  samples = [s for cls in per_class for s in cls]
  labels = np.concatenate([np.full(len(cls), k, np.int32) for k, cls in enumerate(per_class)])
  train_idx, test_idx = cifar10_dvs_split(labels)
  x = _stack_counts(samples, what)
  return x[train_idx], labels[train_idx], x[test_idx], labels[test_idx]


def _cifar10_dvs_from_frames(folder: pathlib.Path, T: int, workers: int | None) -> tuple:
  per_class, _ = _read_frames_class_folders(folder, CIFAR10_DVS_CLASSES, T, workers)
  return _cifar10_dvs_split_arrays(per_class, str(folder))


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def _find_layout(path: pathlib.Path, T: int, raw_marker: Callable[[pathlib.Path], bool],
                 raw_subdirs: Sequence[str], expected: str) -> tuple[str, pathlib.Path]:
  """("frames" | "raw", folder) for a user-given path, or DataError saying what was expected."""
  if not path.exists():
    raise DataError(f"data.path {path} does not exist: {expected}")
  if not path.is_dir():
    raise DataError(f"data.path {path} is a file, not a folder: {expected}")
  if (path / frames_folder_name(T)).is_dir():
    return "frames", path / frames_folder_name(T)
  if path.name.startswith("frames_number_"):
    if path.name != frames_folder_name(T):
      raise DataError(f"data.path {path} holds frames for another T (model.T = {T}): point at "
                      f"{path.parent / frames_folder_name(T)} or set model.T to match")
    return "frames", path
  for candidate in [path] + [path / d for d in raw_subdirs]:
    if candidate.is_dir() and raw_marker(candidate):
      return "raw", candidate
  others = sorted(p.name for p in path.glob("frames_number_*_split_by_number"))
  hint = f" (found {', '.join(others)}: set model.T to match)" if others else ""
  raise DataError(f"data.path {path} has neither {frames_folder_name(T)}/ nor the raw files"
                  f"{hint}: {expected}")


def _need_path(path, name: str, T: int, cache_dir, expected: str) -> None:
  if path is None:
    where = (f" and {pathlib.Path(cache_dir).expanduser() / f'{name}_T{int(T)}.npz'} does not "
             f"exist" if cache_dir is not None else "")
    raise DataError(f"{name} needs data.path{where}: {expected}")


def _cached(name: str, T: int, cache_dir: str | os.PathLike | None, build: Callable[[], tuple],
            num_classes: int, memory_map: bool = False) -> Dataset:
  cache = None
  if cache_dir is not None:
    cache = pathlib.Path(cache_dir).expanduser() / f"{name}_T{int(T)}.npz"
    if cache.is_file():
      return _load_cache(cache, name, T, num_classes, memory_map)
  x_train, y_train, x_test, y_test = build()
  if cache is not None:
    try:
      save_npz_atomic(cache, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                       format=np.asarray(CACHE_FORMAT), T=np.asarray(int(T)))
      log.info("Cached %s frames in %s", name, cache)
    except OSError as e:
      log.warning("Could not cache %s in %s: %s", name, cache, e)
  return Dataset(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                 num_classes=num_classes, name=name)


def _load_cache(path: pathlib.Path, name: str, T: int, num_classes: int,
                memory_map: bool = False) -> Dataset:
  arrays = read_cache_arrays(path, CACHE_FORMAT, "DVS", memory_map)
  for split in ("train", "test"):
    x = arrays[f"x_{split}"]
    if x.ndim != 5 or x.shape[1] != T or x.shape[2:] != SENSOR_SIZE + (2,):
      raise DataError(f"cache {path}: x_{split} has shape {x.shape}, expected (N, {T}, 128, 128,"
                      f" 2): delete it so that it is rebuilt")
  return Dataset(num_classes=num_classes, name=name, **arrays)


def load_dvs128_gesture(path: str | os.PathLike | None, T: int,
                        cache_dir: str | os.PathLike | None = None,
                        workers: int | None = None, memory_map: bool = False) -> Dataset:
  """DVS128-Gesture as (N, T, 128, 128, 2) event counts, official split (spec §7.4);
  ``memory_map``: a cache read later is mapped, not read into memory."""
  expected = ("point data.path at the DvsGesture folder (trials_to_train.txt, *.aedat, "
              "*_labels.csv) or at spikingjelly's DVS128Gesture root holding "
              f"{frames_folder_name(T)}/")

  def build() -> tuple:
    _need_path(path, "dvs128_gesture", T, cache_dir, expected)
    kind, folder = _find_layout(pathlib.Path(path).expanduser(), T,
                                lambda p: (p / "trials_to_train.txt").is_file(),
                                ("DvsGesture", "extract/DvsGesture"), expected)
    log.info("Reading DVS128-Gesture %s from %s", kind, folder)
    if kind == "frames":
      return _gesture_from_frames(folder, T, workers)
    return _gesture_from_aedat(folder, T, workers)

  return _cached("dvs128_gesture", T, cache_dir, build, GESTURE_NUM_CLASSES, memory_map)


def load_cifar10_dvs(path: str | os.PathLike | None, T: int, cache_dir: str | os.PathLike | None = None,
                     workers: int | None = None, memory_map: bool = False) -> Dataset:
  """CIFAR10-DVS as (N, T, 128, 128, 2) event counts, spikingjelly's 90/10 split (spec §7.4);
  ``memory_map``: a cache read later is mapped, not read into memory."""
  expected = ("point data.path at the folder of class folders airplane/ ... truck/ of *.aedat "
              "files (spikingjelly's extract/) or at spikingjelly's CIFAR10DVS root holding "
              f"{frames_folder_name(T)}/")

  def is_raw(p: pathlib.Path) -> bool:
    return any((p / c).is_dir() and any((p / c).glob("*.aedat")) for c in CIFAR10_DVS_CLASSES)

  def build() -> tuple:
    _need_path(path, "cifar10_dvs", T, cache_dir, expected)
    kind, folder = _find_layout(pathlib.Path(path).expanduser(), T, is_raw, ("extract",),
                                expected)
    log.info("Reading CIFAR10-DVS %s from %s", kind, folder)
    if kind == "frames":
      return _cifar10_dvs_from_frames(folder, T, workers)
    return _cifar10_dvs_from_aedat(folder, T, workers)

  return _cached("cifar10_dvs", T, cache_dir, build, len(CIFAR10_DVS_CLASSES), memory_map)


def _load(name: str, data_cfg: Any, source: str, *, seed: int = 0, T: int = 4,
          memory_map: bool = False) -> tuple[np.ndarray, ...]:
  reader = load_dvs128_gesture if name == "dvs128_gesture" else load_cifar10_dvs

  def read(path: Any, cache_dir: pathlib.Path, source: str) -> Dataset:
    del source                                       # "folder" or "auto": the files or the cache
    return reader(path, T, cache_dir=cache_dir, memory_map=memory_map)

  return folders.load_own_files(name, data_cfg, source, read, seed=seed, T=T)


_DVS_SOURCES = ("auto", "folder", "synthetic")
registry.register(registry.DatasetSpec(
    name="dvs128_gesture", num_classes=GESTURE_NUM_CLASSES, image_shape=SENSOR_SIZE + (2,),
    sources=_DVS_SOURCES, load=functools.partial(_load, "dvs128_gesture"),
    family="the DVS sets", frames=True, random_subset=True))
registry.register(registry.DatasetSpec(
    name="cifar10_dvs", num_classes=len(CIFAR10_DVS_CLASSES), image_shape=SENSOR_SIZE + (2,),
    sources=_DVS_SOURCES, load=functools.partial(_load, "cifar10_dvs"),
    family="the DVS sets", frames=True, random_subset=True))
