"""One registry from dataset name to its loader, defaults and validation (spec §7.4).

Each dataset module registers a ``DatasetSpec`` when it is imported: ``cifar`` (cifar10,
cifar100 and their synthetic stand-in "synthetic"), ``tiny_imagenet``, ``mnist`` and ``dvs``
(dvs128_gesture, cifar10_dvs). The package imports them in that order, which is the order
``dataset_names`` lists them in. ``load_dataset`` is a lookup: the spec's loader returns the four
arrays, then the subsets are taken. The registry also declares the ``config.data`` options
(``options``) and checks a config's data fields (``check``), so every allowed value is written
here once. It imports no dataset module and no JAX (the config module calls it).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from ei_snn_jax import rules
from ei_snn_jax.data.base import DataError, Dataset, first_subset, fixed_subset, option

# data.source: where the arrays come from (the dataset's loader documents what each means).
SOURCES = ("auto", "arrays", "tfds", "download", "synthetic", "folder")
# data.cutout_fill: the colour of Cutout's box (spec §7.4: "red" faithful, "grey" option).
CUTOUT_FILLS = ("red", "grey")
# data.placement: the arrays on every device, streamed from the host, or chosen by size.
PLACEMENTS = ("auto", "device", "host")

Loader = Callable[..., tuple[np.ndarray, ...]]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """What the code knows of one dataset: its classes, stored shape, sources and loader.

  ``load(data_cfg, source, *, seed, T, memory_map)`` returns (x_train, y_train, x_test, y_test)
  as validated host arrays; ``source`` is one of ``sources`` ("auto" is resolved by the loader).
  """
  name: str
  num_classes: int
  image_shape: tuple[int, ...]         # one stored image (H, W, C); of event data, one frame
  sources: tuple[str, ...]             # the data.source values it takes
  load: Loader
  family: str                          # its name in messages ("CIFAR", "the DVS sets")
  frames: bool = False                 # an example is T event frames (T = model.T): a sequence
  random_subset: bool = False          # subsets are a fixed random N (files in class order)
  source_fix: str | None = None        # the fix when data.source is not one of ``sources``

  def example_shape(self, T: int = 4) -> tuple[int, ...]:
    """The stored shape of one example: the image, or (T, H, W, 2) event frames."""
    return (int(T),) + tuple(self.image_shape) if self.frames else tuple(self.image_shape)


_SPECS: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
  """Add (or replace) the dataset ``spec.name``; called by each dataset module on import."""
  unknown = [s for s in spec.sources if s not in SOURCES]
  if unknown or "auto" not in spec.sources:
    raise ValueError(f"dataset {spec.name!r}: sources {spec.sources} must include 'auto' and "
                     f"lie in {SOURCES}")
  _SPECS[spec.name] = spec
  return spec


def dataset_names() -> tuple[str, ...]:
  """The registered dataset names (``data.name`` values), in registration order."""
  return tuple(_SPECS)


def get(name: str) -> DatasetSpec:
  """The spec of dataset ``name``; ``DataError`` naming the known ones otherwise."""
  try:
    return _SPECS[name]
  except KeyError:
    raise DataError(f"data.name {name!r} is not supported: use one of {sorted(_SPECS)}"
                    ) from None


def num_classes() -> dict[str, int]:
  """Dataset name -> number of classes, for every registered dataset."""
  return {name: spec.num_classes for name, spec in _SPECS.items()}


# --------------------------------------------------------------------------------------------
# Options of config.data
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Option:
  """One ``config.data`` field: its default, type, meaning, and rule (``ei_snn_jax.rules``:
  None, allowed values, or a range) with the ``noun`` its message names a value by.

  ``default`` None means an optional value of ``type`` (a placeholder).
  """
  default: Any
  type: type
  help: str
  rule: Any = None
  noun: str = ""                       # what a value is, in "is not a known <noun>"


def options() -> dict[str, Option]:
  """Every ``config.data`` field (name -> ``Option``), in the order of the base config."""
  return {
      "name": Option("cifar10", str, "the dataset", dataset_names(), "dataset"),
      "source": Option(
          "auto", str, "where the arrays come from: auto (data.path if set, else the cached "
          "arrays, else TFDS if importable, else the official download), arrays (data.path), "
          "tfds, download, synthetic (a learnable stand-in of the dataset's shape), folder (the "
          "dataset's own files in data.path)", SOURCES, "data source"),
      "path": Option(None, str, ".npz (x_train, y_train, x_test, y_test) or a directory of "
                     "arrays; for source folder the dataset's folder"),
      "tfds_data_dir": Option(None, str, "the TFDS data folder"),
      "tfds_name": Option(None, str, "a registered TFDS builder for Tiny-ImageNet"),
      "cache_dir": Option("~/.cache/ei_snn_jax", str,
                          "where downloads and converted arrays are cached"),
      "train_subset": Option(0, int, "use only N training examples (0 = all)", ">= 0"),
      "test_subset": Option(0, int, "use only N test examples (0 = all)", ">= 0"),
      "augment": Option(True, bool, "the dataset's training augmentation (data.transforms)"),
      "cutout_fill": Option("red", str, "Cutout's fill colour", CUTOUT_FILLS, "cutout fill"),
      "synthetic_train_size": Option(512, int, "training examples of the synthetic stand-in",
                                     ">= 1"),
      "synthetic_test_size": Option(256, int, "test examples of the synthetic stand-in", ">= 1"),
      "placement": Option("auto", str, "the arrays on every device, on the host and streamed, "
                          "or auto (on the devices when they fit data.device_memory_fraction)",
                          PLACEMENTS, "data placement"),
      "device_memory_fraction": Option(0.25, float, "the part of a device's memory the dataset "
                                       "may take", "in (0, 1]"),
      "assumed_device_memory_gb": Option(16.0, float, "device memory where the backend reports "
                                         "none (XLA:CPU)", "> 0"),
      "host_prefetch": Option(2, int, "batches the host path reads and uploads ahead", ">= 1"),
  }


def setting(data_cfg: Any, key: str) -> Any:
  """``config.data.<key>``, or the option's default where it is missing or None."""
  return option(data_cfg, key, options()[key].default)


def _join(words: list[str]) -> str:
  return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def source_problem(name: str, source: str) -> str | None:
  """Why dataset ``name`` cannot come from ``source`` (a known source), or None."""
  spec = _SPECS.get(name)
  if spec is None or source not in SOURCES or source in spec.sources:
    return None
  if source == "folder":
    readers = list(dict.fromkeys(s.family for s in _SPECS.values() if "folder" in s.sources))
    return (f"data.source='folder' reads {_join(readers)}, not {name!r}: use data.source=arrays "
            f"(or auto) for {spec.family}")
  fix = spec.source_fix or f"use one of {', '.join(spec.sources)}"
  return f"data.name={name!r} cannot come from data.source={source!r}: {fix}"


def check(data_cfg: Any, problems: list[str]) -> None:
  """Append to ``problems`` one line per problem of ``config.data`` (values already of the
  schema's types): unknown names (with the closest match), values out of range, and a source
  the dataset cannot come from or that needs data.path."""
  for key, opt in options().items():
    message = rules.problem(f"data.{key}", option(data_cfg, key, opt.default), opt.rule, opt.noun)
    if message:
      problems.append(message)
  _check_source(data_cfg, problems)


def check_config(cfg: Any, problems: list[str]) -> None:
  """The rules across ``cfg.data``'s fields (``training.config`` checks each field's own rule)."""
  _check_source(cfg.data, problems)


def _check_source(data_cfg: Any, problems: list[str]) -> None:
  """Where the data comes from: data.path where the source needs it; a source the dataset has."""
  name, source, path = (setting(data_cfg, key) for key in ("name", "source", "path"))
  if source == "arrays" and not path:
    problems.append("data.source='arrays' needs data.path: set data.path to the .npz file (or "
                    "directory of arrays), or use data.source=auto")
  message = source_problem(name, source)
  if message:
    problems.append(message)
  if source == "folder" and not path:
    problems.append(f"data.source='folder' needs data.path: set it to the {name} folder (see "
                    f"ei_snn_jax.data)")


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_dataset(data_cfg: Any, seed: int = 0, T: int = 4, memory_map: bool = False) -> Dataset:
  """Load ``config.data`` as a ``Dataset`` of host arrays (spec §7.4).

  ``seed`` only affects the synthetic source; ``T`` (``model.T``) is the number of event frames
  of the DVS sets. Subsets (``train_subset``/``test_subset`` > 0) keep the first N examples
  (of a dataset stored in class order: a fixed random N). ``memory_map``: images read from an
  ``.npy`` / uncompressed ``.npz`` file (the given arrays, the converted caches) stay in the
  file as read-only memory maps instead of being read.
  """
  name = str(setting(data_cfg, "name")).lower()
  source = str(setting(data_cfg, "source")).lower()
  spec = get(name)
  if source not in SOURCES:
    raise DataError(f"data.source {source!r} is not supported: use one of {list(SOURCES)}")
  problem = source_problem(name, source)
  if problem:
    raise DataError(problem)
  x_train, y_train, x_test, y_test = spec.load(data_cfg, source, seed=seed, T=T,
                                               memory_map=memory_map)
  take = fixed_subset if spec.random_subset else first_subset
  x_train, y_train = take(x_train, y_train, int(setting(data_cfg, "train_subset")),
                          "data.train_subset")
  x_test, y_test = take(x_test, y_test, int(setting(data_cfg, "test_subset")),
                        "data.test_subset")
  return Dataset(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                 num_classes=spec.num_classes, name=name)
