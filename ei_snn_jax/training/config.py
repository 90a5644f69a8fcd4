"""The experiment config: its schema, the ``:ARG`` of config files, validation and fingerprints.

A run is one config file ``configs/NAME.py`` whose ``get_config(arg=None)`` starts from
``base_config()`` (the schema below, with the paper's E-I CIFAR-10 recipe as defaults) and
overrides what differs. The command-line tools read it with ``ml_collections.config_flags``
(``--config=configs/NAME.py:ARG --config.optim.lr=0.002``, see ``experiments/cli.py``); this
module owns only what the config itself must:

* ``base_config()``: every field, its type and default (the schema every run config matches).
* ``apply_config_arg(cfg, "runlocal,model.T=8")``: the big_vision-style ``ARG`` every config file
  accepts: the flag ``runlocal`` (a tiny run for debugging) and ``key=value`` pairs.
* ``validate_config(cfg, num_devices)``: unknown / missing fields, value types, allowed values and
  ranges, cross-field rules; one ``ConfigError`` line naming every problem and its fix.
* ``load_config("configs/x.py:ARG", ["model.T=8"])`` / ``apply_overrides``: a config file and
  ``key=value`` overrides from Python (tests, notebooks, the benchmark).
* ``config_to_json`` / ``config_from_saved`` / ``config_fingerprint``: the resolved config a run
  saves to its workdir, read back, and a hash of the fields that define the run.

This module imports no JAX and nothing of ``configs/``, so config handling stays fast and the
library is installable on its own.
"""

from __future__ import annotations

import ast
import contextlib
import difflib
import hashlib
import importlib.util
import inspect
import json
import math
import numbers
import pathlib
from typing import Any, Mapping, Sequence

import ml_collections
from ml_collections import config_dict

from ei_snn_jax import errors

ARCHS = ("vgg8", "vgg11", "vgg16", "vgg19", "resnet18", "mlp2", "mlp4", "mlp6", "mlp8", "mlp12",
         "mlp16")
VARIANTS = ("ei", "bn", "dann")
DATASETS = ("cifar10", "cifar100", "synthetic", "tiny_imagenet", "mnist", "dvs128_gesture",
            "cifar10_dvs")
DATA_SOURCES = ("auto", "arrays", "tfds", "download", "synthetic", "folder")
# Datasets read from their own files (data.source "folder"; spec §7.4) and the sources each takes.
FOLDER_DATASETS = {"tiny_imagenet": ("auto", "folder", "tfds", "synthetic"),
                   "mnist": ("auto", "folder", "tfds", "synthetic"),
                   "dvs128_gesture": ("auto", "folder", "synthetic"),
                   "cifar10_dvs": ("auto", "folder", "synthetic")}
SURROGATES = ("sigmoid", "atan", "triangle", "fast_sigmoid")
STABILIZATIONS = ("adaptive", "epsilon", "none")
CONV_DTYPES = ("float32", "bfloat16")
CUTOUT_FILLS = ("red", "grey")
MOMENTUM_FIRST_STEPS = ("reference", "optax")
TRANSFER_GUARDS = ("disallow", "log", "allow")
# Where the dataset lives during training (``data.placement``; equal to data.placement.PLACEMENTS).
PLACEMENTS = ("auto", "device", "host")

# The ``runlocal`` flag of ``apply_config_arg``: a few steps on a small real-data subset.
# Warmup is switched off because a 1-epoch run cannot hold a whole-epoch warmup.
RUNLOCAL = {
    "train.epochs": 1,
    "train.max_steps": 4,
    "train.batch_size": 16,
    "train.eval_batch_size": 64,
    "train.log_every_steps": 1,
    "data.train_subset": 256,
    "data.test_subset": 256,
    "model.width_multiplier": 0.125,
    "optim.warmup_epochs": 0,
}

# Fields that do not change what is trained (bookkeeping, cadence, hardware, file locations).
MAX_SEED = 2**31 - 1 - 4096     # seed + replica index stays a non-negative int32
MAX_T = 1024                    # time steps per example (memory: activations of every step)
MAX_UNROLLED_T = 64             # model.scan_unroll=0 writes every step out: compile time

FINGERPRINT_EXCLUDE = (
    "train.progress_bar",
    "train.log_every_steps",
    "train.checkpoint_every_steps",
    "train.keep_checkpoints",
    "train.max_steps",
    "train.stop_on_dead_layer",
    "train.transfer_guard",
    "parallel",
    "data.cache_dir",
    "data.path",
    "data.tfds_data_dir",
    "data.placement",                 # host or device: the same batches (data.host_feed)
    "data.device_memory_fraction",
    "data.assumed_device_memory_gb",
    "data.host_prefetch",
)

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
_NONE = ("none", "null")


class ConfigError(errors.UserError, ValueError):
  """A config problem; the message is one line naming the field and how to fix it."""


# ------------------------------------------------------------------------------------------------
# The schema.


def base_config() -> ml_collections.ConfigDict:
  """Every config field with its default: the paper's E-I CIFAR-10 recipe (VGG-16 values, spec §5-7).

  Run configs override arch / lr / warmup. Fields:

    seed                         master seed; init, data order, augmentation and dropout use
                                 named streams split from it (``training.train.rng_streams``).
    data.name                    "cifar10" | "cifar100" | "synthetic" | "tiny_imagenet" |
                                 "mnist" | "dvs128_gesture" | "cifar10_dvs".
    data.source                  "auto" (data.path if set, else the cached arrays, else TFDS if
                                 installed, else the official archive) | "arrays" | "tfds" |
                                 "download" | "synthetic" | "folder" (the dataset's own files
                                 in data.path: Tiny-ImageNet folder, MNIST IDX files, DVS
                                 AEDAT or spikingjelly frames; spec §7.4). Tiny-ImageNet,
                                 MNIST and the DVS sets take auto, folder, synthetic (and tfds
                                 for MNIST, or Tiny-ImageNet with data.tfds_name).
    data.path                    .npz (x_train, y_train, x_test, y_test) or a directory of arrays;
                                 for "folder" the dataset's folder.
    data.tfds_name               a registered TFDS builder for Tiny-ImageNet (none in the catalog).
    data.synthetic_*_size        examples of the synthetic stand-in (shaped like data.name).
    data.cache_dir               where downloads and converted arrays are cached.
    data.train_subset/test_subset  use only the first N examples (0 = all).
    data.augment / cutout_fill   the dataset's training augmentation (``data.transforms``; none
                                 for MNIST); Cutout fill "red" (the reference's) or "grey".
    data.placement               "auto" | "device" | "host": the arrays replicated on every
                                 device (the batch gathered in the step) or read on the host
                                 and streamed (``data.host_feed``); "auto" keeps them on the
                                 devices when they take at most data.device_memory_fraction of
                                 the smallest device's memory (``data.placement``). The batches
                                 and results are the same either way (``train.py``).
    data.device_memory_fraction  in (0, 1]: the part of a device's memory the dataset may take.
    data.assumed_device_memory_gb  device memory where the backend reports none (XLA:CPU).
    data.host_prefetch           batches the host path reads and uploads ahead (>= 1).
    model.arch / variant         "vgg8|vgg11|vgg16|vgg19|resnet18|mlp2|...|mlp16" / "ei|bn|dann"
                                 (the MLPs: "ei" and "bn" only, spec §6.4).
    model.T                      time steps (direct encoding: the image repeated T times; DVS:
                                 the number of event frames, spikingjelly split_by='number').
    model.width_multiplier       scales every channel count (1.0 = the paper's models).
    model.ei_*                   E-I method switches (ablations); see ``layers.EIOptions``.
    model.conv_dtype             "float32" | "bfloat16" (the E-I division stays float32).
    optim.*                      SGD momentum 0.9 (first step as the reference's EiSGD), coupled
                                 L2 weight decay, warmup + cosine (§7).
    train.*                      epochs, batch size, logging, evaluation and checkpoint cadence.
    parallel.*                   device mesh and multi-host settings; init_timeout_s: how long
                                 a multi-host start waits for the coordinator and every process.
  """
  c = ml_collections.ConfigDict()
  c.seed = 2025

  c.data = ml_collections.ConfigDict()
  c.data.name = "cifar10"
  c.data.source = "auto"
  c.data.path = config_dict.placeholder(str)
  c.data.tfds_data_dir = config_dict.placeholder(str)
  c.data.tfds_name = config_dict.placeholder(str)
  c.data.cache_dir = "~/.cache/ei_snn_jax"
  c.data.train_subset = 0
  c.data.test_subset = 0
  c.data.augment = True
  c.data.cutout_fill = "red"
  c.data.synthetic_train_size = 512
  c.data.synthetic_test_size = 256
  c.data.placement = "auto"
  c.data.device_memory_fraction = 0.25
  c.data.assumed_device_memory_gb = 16.0
  c.data.host_prefetch = 2

  c.model = ml_collections.ConfigDict()
  c.model.arch = "vgg16"
  c.model.variant = "ei"
  c.model.T = 4
  c.model.width_multiplier = 1.0
  c.model.dropout = 0.0
  c.model.ei_ratio = 4
  c.model.ei_init = True
  c.model.ei_stabilization = "adaptive"
  c.model.ei_ste = True
  c.model.ei_scale_wei_grad = True
  c.model.tau = 2.0
  c.model.threshold = 1.0
  c.model.surrogate = "sigmoid"
  c.model.surrogate_alpha = 4.0
  c.model.conv_dtype = "float32"
  c.model.scan_unroll = 0           # 0 = fully unrolled (fast for the paper's small T)
  c.model.static_input_once = True  # compute the first layer once for repeated static images

  c.optim = ml_collections.ConfigDict()
  c.optim.lr = 0.001
  c.optim.init_lr = 1e-7            # warmup start
  c.optim.warmup_epochs = 30
  c.optim.momentum = 0.9
  c.optim.momentum_first_step = "reference"   # EiSGD's buf_0 = 1.9 g_0 (spec §7.3); or "optax"
  c.optim.weight_decay = 5e-4

  c.train = ml_collections.ConfigDict()
  c.train.epochs = 300
  c.train.batch_size = 128
  c.train.eval_batch_size = 400     # divides 10000 test images and 1/2/4/8/16 devices
  c.train.log_every_steps = 50
  c.train.checkpoint_every_steps = 1000
  c.train.keep_checkpoints = 2
  c.train.max_steps = 0             # stop early after this many steps (0 = full schedule)
  c.train.progress_bar = True
  c.train.stop_on_dead_layer = True  # stop (exit 2) when an E-I layer dies (analysis.health)
  c.train.transfer_guard = "disallow"  # implicit host<->device transfers on ordinary steps
  c.train.num_replicas = 1          # >1: vmap independent seeds in one run (seed, seed+1, ...)

  c.parallel = ml_collections.ConfigDict()
  c.parallel.num_devices = 0        # 0 = every local device
  c.parallel.distributed = False    # call jax.distributed.initialize() (multi-host)
  c.parallel.coordinator_address = config_dict.placeholder(str)  # "host:port"; unset = auto
  c.parallel.num_processes = 1      # with coordinator_address: processes in the job
  c.parallel.process_id = 0         # with coordinator_address: this process's rank
  c.parallel.init_timeout_s = 300   # multi-host start: give up after this many seconds
  return c


def leaf_paths(cfg: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Every non-group field of ``cfg`` as a dotted path, in insertion order."""
  out = []
  for key, value in cfg.items():
    if isinstance(value, ml_collections.ConfigDict):
      out.extend(leaf_paths(value, f"{prefix}{key}."))
    else:
      out.append(prefix + key)
  return out


def unknown_key_error(key: str, cfg: ml_collections.ConfigDict | None = None) -> ConfigError:
  """The error for a field ``key`` that ``cfg`` (default the schema) lacks, with close matches."""
  paths = leaf_paths(cfg if cfg is not None else base_config())
  close = difflib.get_close_matches(key, paths, n=3, cutoff=0.6)
  by_leaf = {p.rsplit(".", 1)[-1]: p for p in paths}
  for leaf in difflib.get_close_matches(key.rsplit(".", 1)[-1], list(by_leaf), n=3, cutoff=0.75):
    if by_leaf[leaf] not in close:
      close.append(by_leaf[leaf])
  hint = f"did you mean {' or '.join(close[:3])}?" if close else "no such field"
  return ConfigError(f"unknown config key {key!r}: {hint} (every field is listed in "
                     f"ei_snn_jax.training.config.base_config)")


def type_name(t: type) -> str:
  """'an int', 'a float', ... for messages."""
  name = {bool: "bool (true/false/1/0)", int: "int", float: "float", str: "str",
          tuple: "tuple like (32,64)", list: "list like [32,64]"}.get(t, t.__name__)
  return ("an " if name[0] in "aeiou" else "a ") + name


# ------------------------------------------------------------------------------------------------
# Setting fields from text: the ``:ARG`` of a config file and ``load_config``'s overrides.


def _field(cfg: ml_collections.ConfigDict, key: str) -> tuple[ml_collections.ConfigDict, str]:
  """The ConfigDict holding the dotted field ``key`` and its last component."""
  *parents, leaf = key.split(".")
  node = cfg
  for part in parents:
    node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
  if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
    raise unknown_key_error(key, cfg)
  if isinstance(node[leaf], ml_collections.ConfigDict):
    raise ConfigError(f"{key} is a group of fields, not a value: set one of its fields, e.g. "
                      f"{key}.{next(iter(node[leaf].keys()), 'FIELD')}=VALUE")
  return node, leaf


def parse_value(cfg: ml_collections.ConfigDict, key: str, text: str) -> Any:
  """``text`` read as the type of field ``key``: bool words, int, float, str, tuple, or None
  for a placeholder; ConfigError naming the field and the expected type otherwise."""
  node, leaf = _field(cfg, key)
  t, text = node.get_type(leaf), text.strip()
  if text.lower() in _NONE and (node[leaf] is None or t is str):
    return None
  try:
    if t is bool:
      if text.lower() in _TRUE + _FALSE:
        return text.lower() in _TRUE
    elif t is int:
      return int(text)
    elif t is float:
      return float(text)
    elif t is str:
      quoted = len(text) > 1 and text[0] == text[-1] and text[0] in "'\""
      return text[1:-1] if quoted else text
    elif t in (tuple, list):
      return t(_parse_sequence(key, text, node[leaf]))
    else:
      return ast.literal_eval(text)
  except ConfigError:
    raise
  except (ValueError, SyntaxError):
    pass
  raise ConfigError(f"{key} expects {type_name(t)}, got {text!r}")


def _parse_sequence(key: str, text: str, current: Sequence[Any] | None) -> list[Any]:
  """"(32,64)", "[32,64]", "32,64", "(a,b)" or "32" as a list whose elements have the type of
  ``current``'s first element (bare strings need no quotes)."""
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    inner = text[1:-1] if text[:1] + text[-1:] in ("()", "[]") else text
    value = [v.strip().strip("'\"") for v in inner.split(",") if v.strip()]
  value = list(value) if isinstance(value, (tuple, list)) else [value]
  elem = type(current[0]) if current else None
  if elem in (int, float, str):
    try:
      if elem is int and any(isinstance(v, float) for v in value):
        raise ValueError(text)
      value = [v if isinstance(v, elem) else elem(v) for v in value]
    except ValueError:
      raise ConfigError(f"{key} expects {type_name(elem)} per element, got {text!r}") from None
  return value


def set_field(cfg: ml_collections.ConfigDict, key: str, text: str) -> None:
  """Assign the field ``key`` of ``cfg`` from its text form (see ``parse_value``)."""
  node, leaf = _field(cfg, key)
  value = parse_value(cfg, key, text)
  with node.ignore_type() if value is None else contextlib.nullcontext():
    setattr(node, leaf, value)


def _split_arg(arg: str) -> list[str]:
  """Split on commas that are not inside brackets or quotes ("a=(1,2),b=3" -> 2 items)."""
  items, depth, quote, start = [], 0, "", 0
  for i, ch in enumerate(arg):
    if quote:
      quote = "" if ch == quote else quote
    elif ch in "'\"":
      quote = ch
    elif ch in "([{":
      depth += 1
    elif ch in ")]}":
      depth -= 1
    elif ch == "," and depth == 0:
      items.append(arg[start:i])
      start = i + 1
  items.append(arg[start:])
  return [s.strip() for s in items if s.strip()]


def _expand_short_key(cfg: ml_collections.ConfigDict, key: str) -> str:
  """A unique last component ("T", "lr") -> its full path; anything else unchanged."""
  paths = leaf_paths(cfg)
  if key in paths:
    return key
  matches = [p for p in paths if p.rsplit(".", 1)[-1] == key]
  if len(matches) > 1:
    raise ConfigError(f"config argument key {key!r} is ambiguous: write one of "
                      f"{', '.join(matches)}")
  return matches[0] if matches else key


def apply_config_arg(cfg: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  """Apply a config file's ``:ARG`` (big_vision style): comma-separated flags and key=value pairs.

  Flags: ``runlocal`` (or ``runlocal=true``): a tiny debugging run (``RUNLOCAL``: 1 epoch, 4
  steps, 256 train / 256 test images of the real dataset, batch 16, width 1/8, no warmup).
  Pairs: ``model.T=8`` or, for a unique field name, ``T=8``, applied after the flags so they win.
  Returns ``cfg``.
  """
  pairs = []
  for item in _split_arg(arg or ""):
    key, sep, text = (s.strip() for s in item.partition("="))
    if key == "runlocal":
      if not sep or text.lower() in _TRUE:
        for k, v in RUNLOCAL.items():
          set_field(cfg, k, str(v))
      elif text.lower() not in _FALSE:
        raise ConfigError(f"runlocal expects a bool (true/false/1/0), got {text!r}")
      continue
    if not sep:
      raise ConfigError(f"unknown config argument {item!r}: use the flag runlocal or "
                        f"key=value pairs, e.g. configs/x.py:runlocal,model.T=8")
    pairs.append((_expand_short_key(cfg, key), text))
  for key, text in pairs:
    set_field(cfg, key, text)
  return cfg


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The config of ``spec`` (``path/to/config.py`` or ``path/to/config.py:ARG``) from Python.

  The file's ``get_config(ARG)`` is called, then ``overrides`` (``"key.path=value"``) are set.
  The command-line tools read configs through ``config_flags`` instead; this is for tests and
  notebooks. The result is not validated: call ``validate_config``.
  """
  path_str, sep, arg = spec.partition(".py:")
  path = pathlib.Path(path_str + ".py" if sep else spec).expanduser()
  if not path.is_file():
    raise ConfigError(f"config file {str(path)!r} not found: pass configs/NAME.py[:ARG]")
  module_spec = importlib.util.spec_from_file_location(
      "_ei_snn_config_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12], path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  get_config = getattr(module, "get_config", None)
  if not callable(get_config):
    raise ConfigError(f"{path} defines no get_config(): add `def get_config(arg=None)` "
                      f"returning an ml_collections.ConfigDict")
  try:
    cfg = get_config(arg or None) if inspect.signature(get_config).parameters else get_config()
  except (TypeError, AttributeError, KeyError) as e:
    raise ConfigError(f"{path}: get_config() failed: {' '.join(str(e).split())}: fix the config "
                      f"file (fields and types are those of config.base_config())") from e
  if not isinstance(cfg, ml_collections.ConfigDict):
    raise ConfigError(f"{path}: get_config() returned {type(cfg).__name__}: return an "
                      f"ml_collections.ConfigDict (start from config.base_config())")
  if arg and not inspect.signature(get_config).parameters:
    apply_config_arg(cfg, arg)
  return apply_overrides(cfg, overrides)


def apply_overrides(cfg: ml_collections.ConfigDict,
                    overrides: Sequence[str]) -> ml_collections.ConfigDict:
  """Set ``"key.path=value"`` overrides on ``cfg`` in order (see ``parse_value``); returns it."""
  for item in overrides:
    key, eq, text = str(item).partition("=")
    if not eq:
      raise ConfigError(f"override {item!r} has no value: write {key}=VALUE")
    set_field(cfg, key.strip(), text)
  return cfg


# ------------------------------------------------------------------------------------------------
# Validation.


def _check_schema(cfg: Any, base: ml_collections.ConfigDict, prefix: str,
                  problems: list[str]) -> None:
  """Unknown / missing keys and value types of ``cfg`` against ``base`` (recursively)."""
  for key in cfg.keys():
    path = prefix + key
    if key not in base:
      close = difflib.get_close_matches(key, list(base.keys()), n=1, cutoff=0.6)
      hint = f"did you mean {prefix}{close[0]}?" if close else "remove it"
      problems.append(f"unknown config field {path} (not in the schema, training.config.base_config): {hint} (a "
                      f"genuinely new field must be added to base_config() first)")
  for key in base.keys():
    path = prefix + key
    if key not in cfg:
      problems.append(f"config lacks the field {path}: build the config on "
                      f"config.base_config() and override values, do not delete fields")
      continue
    ref, value = base[key], cfg[key]
    if isinstance(ref, ml_collections.ConfigDict):
      if isinstance(value, (ml_collections.ConfigDict, Mapping)):
        _check_schema(value, ref, path + ".", problems)
      else:
        problems.append(f"{path} must be a group of fields, got {value!r}: set its fields "
                        f"({path}.FIELD=VALUE) instead")
      continue
    t = base.get_type(key)
    if value is None:
      if ref is not None:
        problems.append(f"{path} is None: give it {type_name(t)} (default {ref!r})")
      continue
    ok = {bool: lambda v: isinstance(v, bool),
          int: lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool),
          float: lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool),
          str: lambda v: isinstance(v, str),
          tuple: lambda v: isinstance(v, (tuple, list)),
          list: lambda v: isinstance(v, (tuple, list))}.get(t, lambda v: True)
    if not ok(value):
      problems.append(f"{path} must be {type_name(t)}, got {type(value).__name__} {value!r}: "
                      f"write e.g. {path} = {ref!r}")
    elif t is float and not math.isfinite(float(value)):
      problems.append(f"{path}={value!r} is not finite: give a finite number")


def _get(cfg: Any, path: str) -> Any:
  """Value at a dotted path (cfg is known to match the schema)."""
  node = cfg
  for part in path.split("."):
    node = node[part]
  return node


def _check_values(cfg: Any, num_devices: int | None, problems: list[str]) -> None:
  """Ranges, enumerations and cross-field rules (cfg is known to match the schema's types)."""
  def choice(path, allowed, what):
    """``path`` must hold one of ``allowed``."""
    value = _get(cfg, path)
    if value not in allowed:
      close = difflib.get_close_matches(str(value), allowed, n=1, cutoff=0.5)
      hint = f" (did you mean {close[0]}?)" if close else ""
      problems.append(f"{path}={value!r} is not a known {what}{hint}: use one of "
                      f"{', '.join(allowed)}")

  def at_least(path, low, strict=False):
    """``path`` must be >= ``low`` (> when ``strict``)."""
    value = _get(cfg, path)
    if value < low or (strict and value == low):
      rel = ">" if strict else ">="
      problems.append(f"{path}={value!r} is out of range: it must be {rel} {low}")

  choice("model.arch", ARCHS, "architecture")
  choice("model.variant", VARIANTS, "model variant")
  choice("data.name", DATASETS, "dataset")
  choice("data.source", DATA_SOURCES, "data source")
  choice("model.surrogate", SURROGATES, "surrogate")
  choice("model.ei_stabilization", STABILIZATIONS, "E-I stabilization")
  choice("model.conv_dtype", CONV_DTYPES, "conv dtype")
  choice("data.cutout_fill", CUTOUT_FILLS, "cutout fill")
  choice("optim.momentum_first_step", MOMENTUM_FIRST_STEPS, "momentum first step")
  choice("train.transfer_guard", TRANSFER_GUARDS, "jax.transfer_guard level of ordinary steps")
  choice("data.placement", PLACEMENTS, "data placement")
  fraction = cfg.data.device_memory_fraction
  if not 0 < fraction <= 1:
    problems.append(f"data.device_memory_fraction={fraction!r} is out of range: it must be in "
                    f"(0, 1]")
  at_least("data.assumed_device_memory_gb", 0, strict=True)
  at_least("data.host_prefetch", 1)
  if cfg.data.source == "arrays" and not cfg.data.path:
    problems.append("data.source='arrays' needs data.path: set data.path to the .npz file (or "
                    "directory of arrays), or use data.source=auto")
  if cfg.data.name == "synthetic" and cfg.data.source in ("tfds", "download"):
    problems.append(f"data.name='synthetic' cannot come from data.source={cfg.data.source!r}: "
                    f"set data.source=synthetic (or auto), or data.name to cifar10/cifar100")
  allowed = FOLDER_DATASETS.get(cfg.data.name)
  if allowed is not None and cfg.data.source in DATA_SOURCES and cfg.data.source not in allowed:
    problems.append(f"data.name={cfg.data.name!r} cannot come from data.source="
                    f"{cfg.data.source!r}: use one of {', '.join(allowed)}")
  elif allowed is None and cfg.data.source == "folder":
    problems.append(f"data.source='folder' reads Tiny-ImageNet, MNIST and the DVS sets, not "
                    f"{cfg.data.name!r}: use data.source=arrays (or auto) for CIFAR")
  if cfg.data.source == "folder" and not cfg.data.path:
    problems.append(f"data.source='folder' needs data.path: set it to the {cfg.data.name} "
                    f"folder (see ei_snn_jax.data)")
  if cfg.model.arch.startswith("mlp") and cfg.model.variant not in ("ei", "bn"):
    problems.append(f"model.arch={cfg.model.arch!r} has variants ei and bn, not "
                    f"{cfg.model.variant!r}: set model.variant to ei or bn")

  at_least("seed", 0)
  if cfg.seed > MAX_SEED:
    problems.append(f"seed={cfg.seed} is out of range: it must be <= {MAX_SEED} (a 32-bit "
                    f"PRNG seed)")
  at_least("data.train_subset", 0)
  at_least("data.test_subset", 0)
  at_least("data.synthetic_train_size", 1)
  at_least("data.synthetic_test_size", 1)
  at_least("model.T", 1)
  at_least("model.width_multiplier", 0, strict=True)
  at_least("model.ei_ratio", 1)
  at_least("model.tau", 0, strict=True)
  at_least("model.threshold", 0, strict=True)
  at_least("model.surrogate_alpha", 0, strict=True)
  at_least("model.scan_unroll", 0)
  if cfg.model.T > MAX_T:
    problems.append(f"model.T={cfg.model.T} is out of range: it must be <= {MAX_T} (every time "
                    f"step's activations are kept for the backward pass)")
  elif cfg.model.T > MAX_UNROLLED_T and cfg.model.scan_unroll == 0:
    problems.append(f"model.T={cfg.model.T} with model.scan_unroll=0 (fully unrolled) compiles "
                    f"{cfg.model.T} copies of the network (minutes to hours): set "
                    f"model.scan_unroll=1 (a rolled scan; 2-8 trade compile time for speed) or "
                    f"model.T<={MAX_UNROLLED_T}")
  if cfg.model.variant == "ei" and cfg.model.width_multiplier > 0 and cfg.model.ei_ratio >= 1:
    base = 100 if cfg.model.arch in ("mlp8", "mlp12", "mlp16") else (
        300 if cfg.model.arch in ("mlp4", "mlp6") else 500 if cfg.model.arch == "mlp2" else 64)
    narrowest = max(4, int(round(base * cfg.model.width_multiplier)))  # narrowest layer
    if narrowest // cfg.model.ei_ratio < 1:
      problems.append(f"model.ei_ratio={cfg.model.ei_ratio} leaves no inhibitory unit in the "
                      f"{narrowest}-unit narrowest layer (model.width_multiplier="
                      f"{cfg.model.width_multiplier}): raise the width or lower the ratio")
  dropout = cfg.model.dropout
  if not 0 <= dropout < 1:
    problems.append(f"model.dropout={dropout!r} is out of range: it must be in [0, 1)")
  at_least("optim.lr", 0, strict=True)
  at_least("optim.init_lr", 0)
  at_least("optim.weight_decay", 0)
  momentum = cfg.optim.momentum
  if not 0 <= momentum < 1:
    problems.append(f"optim.momentum={momentum!r} is out of range: it must be in [0, 1)")
  at_least("train.epochs", 1)
  at_least("optim.warmup_epochs", 0)
  warmup, epochs = cfg.optim.warmup_epochs, cfg.train.epochs
  if 0 < epochs <= warmup:
    problems.append(f"optim.warmup_epochs={warmup} must be < train.epochs={epochs}: lower the "
                    f"warmup (0 = none) or train longer")
  at_least("train.batch_size", 1)
  at_least("train.eval_batch_size", 1)
  at_least("train.log_every_steps", 1)
  at_least("train.checkpoint_every_steps", 1)
  at_least("train.keep_checkpoints", 1)
  at_least("train.max_steps", 0)
  at_least("train.num_replicas", 1)
  at_least("parallel.num_devices", 0)
  at_least("parallel.num_processes", 1)
  at_least("parallel.init_timeout_s", 1)
  address = cfg.parallel.coordinator_address
  if address:
    host, _, port = str(address).rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
      problems.append(f"parallel.coordinator_address={address!r} is not HOST:PORT with a port in "
                      f"1..65535: e.g. parallel.coordinator_address=10.0.0.1:1234")
  par = cfg.parallel
  if isinstance(par.process_id, int) and isinstance(par.num_processes, int) and not (
      0 <= par.process_id < max(par.num_processes, 1)):
    problems.append(f"parallel.process_id={par.process_id} is outside [0, "
                    f"{par.num_processes}): give each process its rank 0..num_processes-1")
  if par.distributed and par.num_devices:
    problems.append("parallel.num_devices must be 0 (all devices of all hosts) when "
                    "parallel.distributed=True")

  requested = cfg.parallel.num_devices
  if num_devices is not None and requested > num_devices:
    problems.append(f"parallel.num_devices={requested} exceeds the {num_devices} available "
                    f"devices: set parallel.num_devices to at most {num_devices} (0 = all)")
  n = requested if requested > 0 else num_devices
  if n is not None and n > 1:
    for path in ("train.batch_size", "train.eval_batch_size"):
      size = _get(cfg, path)
      if size >= 1 and size % n:
        below, above = (size // n) * n, (size // n + 1) * n
        options = f"{below} or {above}" if below else f"{above}"
        problems.append(f"{path}={size} is not divisible by the {n} devices: use a multiple of "
                        f"{n} (e.g. {options}) or set parallel.num_devices")


def validate_config(cfg: ml_collections.ConfigDict,
                    num_devices: int | None = None) -> ml_collections.ConfigDict:
  """Check ``cfg`` completely; raise ConfigError listing every problem (one line), else return it.

  Checks: every key exists in ``base_config()`` and none is missing; every
  value has the schema's type (ints accepted for floats, None only for placeholders); enumerated
  values (arch, variant, dataset, source, surrogate, stabilization, conv dtype, cutout fill);
  ranges (T, batch sizes, lr, init_lr, weight decay, momentum, epochs, warmup < epochs, ei_ratio,
  width, dropout, replicas, subsets, ...); data.source "arrays" needs data.path.
  ``num_devices``: the devices available to the run (e.g. ``jax.device_count()``); the batch
  sizes must divide over ``parallel.num_devices`` if set (> 0), else over ``num_devices``.
  """
  if num_devices is not None and num_devices < 1:
    raise ValueError(f"num_devices must be >= 1 or None, got {num_devices}")
  if not isinstance(cfg, (ml_collections.ConfigDict, Mapping)):
    raise ConfigError(f"expected an ml_collections.ConfigDict, got {type(cfg).__name__}: return "
                      f"one from get_config()")
  problems: list[str] = []
  _check_schema(cfg, base_config(), "", problems)
  if not problems:
    if not isinstance(cfg, ml_collections.ConfigDict):
      cfg = ml_collections.ConfigDict(cfg)
    _check_values(cfg, num_devices, problems)
  if problems:
    raise ConfigError("; ".join(problems))
  return cfg


# ------------------------------------------------------------------------------------------------
# Serialisation and fingerprints.


def _plain(value: Any) -> Any:
  """Nested dict / list / JSON scalars from a ConfigDict, Mapping, tuple or numpy scalar."""
  if isinstance(value, ml_collections.ConfigDict):
    value = value.to_dict()
  if isinstance(value, Mapping):
    return {str(k): _plain(v) for k, v in value.items()}
  if isinstance(value, (tuple, list)):
    return [_plain(v) for v in value]
  if isinstance(value, (bool, str)) or value is None:
    return value
  if isinstance(value, numbers.Integral):
    return int(value)
  if isinstance(value, numbers.Real):
    return float(value)
  if hasattr(value, "item"):  # numpy scalars and 0-d arrays
    return _plain(value.item())
  return str(value)


def config_to_json(cfg: ml_collections.ConfigDict | Mapping[str, Any]) -> str:
  """The resolved config as indented JSON, keys sorted (what the trainer saves to the workdir)."""
  return json.dumps(_plain(cfg), indent=2, sort_keys=True)


def _float_fields(base: ml_collections.ConfigDict, prefix: str = "") -> set[str]:
  """Dotted paths of the schema's float-typed fields."""
  out = set()
  for key, value in base.items():
    if isinstance(value, ml_collections.ConfigDict):
      out |= _float_fields(value, f"{prefix}{key}.")
    elif base.get_type(key) is float:
      out.add(prefix + key)
  return out


def fingerprint_dict(cfg: ml_collections.ConfigDict | Mapping[str, Any]) -> dict[str, Any]:
  """The fields that define the run (``FINGERPRINT_EXCLUDE`` removed), floats normalised."""
  data = _plain(cfg)
  for path in FINGERPRINT_EXCLUDE:
    *parents, leaf = path.split(".")
    node = data
    for part in parents:
      node = node.get(part, {}) if isinstance(node, dict) else {}
    if isinstance(node, dict):
      node.pop(leaf, None)
  for path in _float_fields(base_config()):
    *parents, leaf = path.split(".")
    node = data
    for part in parents:
      node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict) and isinstance(node.get(leaf), int) and not isinstance(
        node.get(leaf), bool):
      node[leaf] = float(node[leaf])
  return data


def config_fingerprint(cfg: ml_collections.ConfigDict | Mapping[str, Any]) -> str:
  """sha256 (hex) of the canonical JSON of ``fingerprint_dict(cfg)``.

  Equal for two configs that train the same run (logging, checkpoint cadence, max_steps,
  parallelism and data locations may differ); used to refuse a workdir holding another run.
  Accepts the dict of a saved ``config.json`` as well as a ConfigDict.
  """
  canonical = json.dumps(fingerprint_dict(cfg), sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(canonical.encode()).hexdigest()


def config_from_saved(saved: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """The ConfigDict of a run from its saved ``config.json`` "config" dict, on the current schema.

  Fields this version no longer has are skipped; lists become tuples (JSON has no tuples). The
  ``parallel`` settings keep their defaults (every local device, one process): a saved run is
  evaluated or analysed on this machine, whatever the (multi-host) setup that trained it.
  """
  cfg = base_config()
  saved = {k: v for k, v in saved.items() if k != "parallel"}

  def assign(node, values):
    for k, v in values.items():
      if k not in node:
        continue
      if isinstance(v, dict):
        assign(node[k], v)
      else:
        with node.ignore_type():
          node[k] = tuple(v) if isinstance(v, list) else v

  assign(cfg, saved)
  return cfg
