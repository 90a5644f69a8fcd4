"""Loading, overriding, validating and fingerprinting experiment configs (configs/*.py).

A run is described by one config file whose ``get_config(arg=None)`` builds on
``configs/common.get_base_config()``; the command line picks the file and overrides fields:

  python -m experiments.train --config configs/ei_cifar10_vgg16.py[:ARG] --workdir runs/x \\
      --config.optim.lr=0.002 --config.model.T 8

* ``load_config("configs/x.py:ARG", overrides)``: import the file by path, call ``get_config``,
  apply the overrides.
* ``apply_config_arg(cfg, "runlocal,model.T=8")``: the big_vision-style ``ARG`` every config file
  accepts: the flag ``runlocal`` (a tiny run for debugging) and ``key=value`` pairs.
* ``apply_overrides(cfg, ["model.T=8"])``: values parsed by the type of the existing field.
* ``validate_config(cfg, num_devices)``: every field against the schema of ``get_base_config()``
  (unknown / missing keys, value types) and every value against its allowed range.
* ``config_to_json`` / ``config_fingerprint``: the resolved config for the workdir, and a hash of
  the fields that define the run (to refuse resuming a workdir that holds another run).
* ``parse_cli(argv)``: ``--config``, ``--workdir`` and the ``--config.KEY[=| ]VALUE`` overrides.

Every problem raises ``ConfigError`` with a one-line message that names the field and the fix.
This module imports no JAX, so that config handling and its tests stay fast.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import hashlib
import importlib
import importlib.util
import inspect
import json
import math
import numbers
import pathlib
import re
import sys
from typing import Any, Iterable, Mapping, Sequence

import ml_collections

from ei_snn_jax import errors

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]

ARCHS = ("vgg8", "vgg11", "vgg16", "vgg19", "resnet18")
VARIANTS = ("ei", "bn", "dann")
DATASETS = ("cifar10", "cifar100", "synthetic")
DATA_SOURCES = ("auto", "arrays", "tfds", "download", "synthetic")
SURROGATES = ("sigmoid", "atan", "triangle", "fast_sigmoid")
STABILIZATIONS = ("adaptive", "epsilon", "none")
CONV_DTYPES = ("float32", "bfloat16")
CUTOUT_FILLS = ("red", "grey")

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
FINGERPRINT_EXCLUDE = (
    "train.progress_bar",
    "train.log_every_steps",
    "train.checkpoint_every_steps",
    "train.keep_checkpoints",
    "train.max_steps",
    "parallel",
    "data.cache_dir",
    "data.path",
    "data.tfds_data_dir",
)

_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
_NONE = ("none", "null")
_BUILTINS = {"bool": bool, "int": int, "float": float, "str": str, "tuple": tuple, "list": list}


class ConfigError(errors.UserError, ValueError):
  """A config problem; the message is one line naming the field and how to fix it."""


# ------------------------------------------------------------------------------------------------
# Loading.


def _ensure_repo_importable() -> None:
  """Put the repository root on ``sys.path`` so that config files can ``from configs import ..``."""
  root = str(REPO_ROOT)
  if root not in sys.path:
    sys.path.insert(0, root)


def base_config() -> ml_collections.ConfigDict:
  """A fresh ``configs.common.get_base_config()``: the schema every run config must match."""
  _ensure_repo_importable()
  try:
    common = importlib.import_module("configs.common")
  except ImportError as e:
    raise ConfigError(f"cannot import configs/common.py ({e}): run from a checkout of the "
                      f"repository (expected it under {REPO_ROOT})") from e
  return common.get_base_config()


def config_from_saved(saved: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """The ConfigDict of a run from its saved ``config.json`` "config" dict, on the current schema.

  Fields this version no longer has are skipped; lists become tuples (JSON has no tuples).
  """
  cfg = base_config()

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


def split_config_spec(spec: str) -> tuple[str, str | None]:
  """``"configs/x.py:arg"`` -> ``("configs/x.py", "arg")``; no ``:`` after ``.py`` -> arg None."""
  path, sep, arg = spec.partition(".py:")
  if sep:
    return path + ".py", arg
  return spec, None


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """Build the config of ``spec`` (``path/to/config.py`` or ``path/to/config.py:arg``).

  The file is imported by path and its ``get_config(arg)`` called (``get_config()`` when it takes
  no argument; an ``arg`` is then applied with ``apply_config_arg``). The ``overrides``
  (``key.path=value``) are applied last. The result is not validated: call ``validate_config``.
  """
  path_str, arg = split_config_spec(spec)
  path = pathlib.Path(path_str).expanduser()
  if not path.is_file():
    hint = ""
    candidates = sorted(str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "configs").rglob("*.py")
                        if p.name not in ("__init__.py", "common.py", "sweeps.py"))
    close = difflib.get_close_matches(path_str, candidates, n=3)
    if close:
      hint = f" (did you mean {', '.join(close)}?)"
    raise ConfigError(f"config file {path_str!r} not found{hint}: pass --config "
                      f"configs/NAME.py[:ARG], relative to the current directory")
  _ensure_repo_importable()
  module_name = "_ei_snn_config_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
  module_spec = importlib.util.spec_from_file_location(module_name, path)
  if module_spec is None or module_spec.loader is None:
    raise ConfigError(f"cannot import {path_str!r} as Python: pass a .py config file")
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  get_config = getattr(module, "get_config", None)
  if not callable(get_config):
    raise ConfigError(f"{path_str} defines no get_config(): add `def get_config(arg=None)` "
                      f"returning an ml_collections.ConfigDict")
  takes_arg = bool(inspect.signature(get_config).parameters)
  try:
    cfg = get_config(arg) if takes_arg else get_config()
  except (TypeError, AttributeError, KeyError) as e:
    msg = " ".join(str(e).split())
    clash = re.search(r"override field '(\w+)' \(reference\)\. (.*) is of original type "
                      r"<class '(\w+)'> and cannot be casted to type <class '(\w+)'>", msg)
    if clash:
      field, value, got, want = clash.groups()
      msg = f"field {field} expects {_type_name(_BUILTINS.get(want, object))}, got {got} {value}"
    raise ConfigError(f"{path_str}: get_config() failed: {msg}: fix the config file (fields "
                      f"and types are those of configs/common.py)") from e
  if isinstance(cfg, Mapping) and not isinstance(cfg, ml_collections.ConfigDict):
    cfg = ml_collections.ConfigDict(cfg)
  if not isinstance(cfg, ml_collections.ConfigDict):
    raise ConfigError(f"{path_str}: get_config() returned {type(cfg).__name__}: return an "
                      f"ml_collections.ConfigDict (start from common.get_base_config())")
  if arg and not takes_arg:
    cfg = apply_config_arg(cfg, arg)
  return apply_overrides(cfg, overrides)


# ------------------------------------------------------------------------------------------------
# Overrides.


def _leaf_paths(cfg: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Every non-group field of ``cfg`` as a dotted path, in insertion order."""
  out = []
  for key, value in cfg.items():
    if isinstance(value, ml_collections.ConfigDict):
      out.extend(_leaf_paths(value, f"{prefix}{key}."))
    else:
      out.append(prefix + key)
  return out


def _suggest(key: str, cfg: ml_collections.ConfigDict) -> str:
  """'did you mean a or b?' from close matches on the full path and on the last component."""
  paths = _leaf_paths(cfg)
  close = difflib.get_close_matches(key, paths, n=3, cutoff=0.6)
  last = key.rsplit(".", 1)[-1]
  by_leaf = {p.rsplit(".", 1)[-1]: p for p in paths}
  for leaf in difflib.get_close_matches(last, list(by_leaf), n=3, cutoff=0.75):
    if by_leaf[leaf] not in close:
      close.append(by_leaf[leaf])
  return f"did you mean {' or '.join(close[:3])}?" if close else "no such field"


def _resolve(cfg: ml_collections.ConfigDict, key: str) -> tuple[ml_collections.ConfigDict, str]:
  """The ConfigDict holding ``key`` (dotted) and the last component; ConfigError if unknown."""
  parts = key.split(".")
  node = cfg
  for i, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      if not isinstance(node, ml_collections.ConfigDict):
        where = ".".join(parts[:i])
        raise ConfigError(f"unknown config key {key!r}: {where} is a value, not a group of "
                          f"fields; set {where}=VALUE")
      raise ConfigError(f"unknown config key {key!r}: {_suggest(key, cfg)} (every field is "
                        f"listed in configs/common.py)")
    if i == len(parts) - 1:
      return node, part
    node = node[part]
  raise ConfigError(f"empty config key {key!r}: write key.path=value")  # pragma: no cover


def _strip_quotes(text: str) -> str:
  """Remove one pair of matching surrounding quotes."""
  if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
    return text[1:-1]
  return text


def _type_name(t: type) -> str:
  """'an int', 'a float', ... for messages."""
  name = {bool: "bool (true/false/1/0)", int: "int", float: "float", str: "str",
          tuple: "tuple like (32,64)", list: "list like [32,64]"}.get(t, t.__name__)
  return ("an " if name[0] in "aeiou" else "a ") + name


def _parse_scalar(key: str, text: str, t: type) -> Any:
  """Parse ``text`` as type ``t`` (bool/int/float/str); ConfigError naming ``key`` otherwise."""
  text = text.strip()
  if t is bool:
    low = text.lower()
    if low in _TRUE:
      return True
    if low in _FALSE:
      return False
  elif t is int:
    try:
      return int(text)
    except ValueError:
      try:
        f = float(text)
      except ValueError:
        f = math.nan
      if math.isfinite(f) and f.is_integer():
        return int(f)
  elif t is float:
    try:
      return float(text)
    except ValueError:
      pass
  elif t is str:
    return _strip_quotes(text)
  else:
    try:
      return ast.literal_eval(text)
    except (ValueError, SyntaxError):
      return _strip_quotes(text)
  raise ConfigError(f"{key} expects {_type_name(t)}, got {text!r}")


def _parse_sequence(key: str, text: str, t: type, current: Sequence[Any] | None) -> Any:
  """Parse "(32,64)", "[32,64]", "32,64", "(a,b)" or "32" into a tuple/list like ``current``.

  Python literals are read with ``ast.literal_eval``; anything else is split on commas (so bare
  strings need no quotes). Elements are converted to the type of ``current``'s first element.
  """
  text = text.strip()
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    inner = text
    if len(inner) >= 2 and (inner[0], inner[-1]) in (("(", ")"), ("[", "]")):
      inner = inner[1:-1]
    value = [_strip_quotes(v.strip()) for v in inner.split(",") if v.strip()]
  if not isinstance(value, (tuple, list)):
    value = (value,)
  elem_t = type(current[0]) if current else None
  if elem_t in (bool, int, float, str):
    value = [v if isinstance(v, elem_t) and not (elem_t is int and isinstance(v, bool))
             else _parse_scalar(key, v if isinstance(v, str) else repr(v), elem_t)
             for v in value]
  return t(value)


def _is_placeholder(key: str) -> bool:
  """Whether ``key`` is a None-by-default (placeholder) field of the base config."""
  node = base_config()
  for part in key.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      return False
    node = node[part]
  return node is None


def parse_value(cfg: ml_collections.ConfigDict, key: str, text: str) -> Any:
  """``text`` parsed by the type of the existing field ``key`` of ``cfg`` (see apply_overrides)."""
  node, leaf = _resolve(cfg, key)
  current = node[leaf]
  t = node.get_type(leaf)
  if isinstance(current, ml_collections.ConfigDict) or t is ml_collections.ConfigDict:
    raise ConfigError(f"{key} is a group of fields, not a value: set one of its fields, e.g. "
                      f"{key}.{next(iter(current.keys()), 'FIELD')}=VALUE")
  if text.strip().lower() in _NONE and (current is None or _is_placeholder(key)):
    return None
  if t is type(None):
    return _parse_scalar(key, text, object)
  if t in (tuple, list):
    return _parse_sequence(key, text, t, current)
  if t in (bool, int, float, str):
    return _parse_scalar(key, text, t)
  return _parse_scalar(key, text, object)


def _normalize_key(key: str) -> str:
  """Drop a leading ``--config.`` / ``config.`` / ``--`` from an override key."""
  key = key.strip()
  for prefix in ("--config.", "-config.", "config."):
    if key.startswith(prefix):
      return key[len(prefix):]
  return key.lstrip("-")


def _set(cfg: ml_collections.ConfigDict, key: str, value: Any) -> None:
  """Assign ``value`` to the existing field ``key``; ConfigError on a type clash."""
  node, leaf = _resolve(cfg, key)
  try:
    setattr(node, leaf, value)
  except TypeError as e:
    t = node.get_type(leaf)
    raise ConfigError(f"{key} expects {_type_name(t)}, got {value!r}") from e


def apply_overrides(cfg: ml_collections.ConfigDict,
                    overrides: Iterable[str]) -> ml_collections.ConfigDict:
  """Apply ``key.path=value`` overrides in place (a leading ``config.``/``--config.`` is allowed).

  Values are parsed by the type of the existing field: int, float (ints accepted), bool
  (true/false/1/0/yes/no), str (quotes optional), tuple/list ("(32,64)"); a placeholder field
  (value None) also accepts "None". Unknown keys and unparsable values raise ConfigError.
  Returns ``cfg``.
  """
  if isinstance(overrides, str):
    overrides = [overrides]
  for item in overrides:
    key, sep, text = str(item).partition("=")
    key = _normalize_key(key)
    if not sep or not key:
      raise ConfigError(f"override {item!r} has no value: write {key or 'key.path'}=VALUE")
    _set(cfg, key, parse_value(cfg, key, text))
  return cfg


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
  paths = _leaf_paths(cfg)
  if key in paths:
    return key
  matches = [p for p in paths if p.rsplit(".", 1)[-1] == key]
  if len(matches) == 1:
    return matches[0]
  if len(matches) > 1:
    raise ConfigError(f"config argument key {key!r} is ambiguous: write one of "
                      f"{', '.join(matches)}")
  return key


def apply_config_arg(cfg: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  """Apply a config file's ``:ARG`` (big_vision style): comma-separated flags and key=value pairs.

  Flags: ``runlocal`` (or ``runlocal=true``): a tiny debugging run (``RUNLOCAL``: 1 epoch, 4
  steps, 256 train / 256 test images of the real dataset, batch 16, width 1/8, no warmup).
  Pairs: ``model.T=8`` or, for a unique field name, ``T=8``; parsed like ``apply_overrides`` and
  applied after the flags, so they win. Returns ``cfg``.
  """
  if not arg:
    return cfg
  pairs = []
  for item in _split_arg(arg):
    key, sep, text = item.partition("=")
    key = key.strip()
    if key == "runlocal":
      if not sep or _parse_scalar("runlocal", text, bool):
        apply_overrides(cfg, [f"{k}={v}" for k, v in RUNLOCAL.items()])
      continue
    if not sep:
      raise ConfigError(f"unknown config argument {item!r}: use the flag runlocal or "
                        f"key=value pairs, e.g. configs/x.py:runlocal,model.T=8")
    pairs.append(f"{_expand_short_key(cfg, key)}={text}")
  return apply_overrides(cfg, pairs)


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
      problems.append(f"unknown config field {path} (not in configs/common.py): {hint} (a "
                      f"genuinely new field must be added to get_base_config() first)")
  for key in base.keys():
    path = prefix + key
    if key not in cfg:
      problems.append(f"config lacks the field {path}: build the config on "
                      f"common.get_base_config() and override values, do not delete fields")
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
        problems.append(f"{path} is None: give it {_type_name(t)} (default {ref!r})")
      continue
    ok = {bool: lambda v: isinstance(v, bool),
          int: lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool),
          float: lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool),
          str: lambda v: isinstance(v, str),
          tuple: lambda v: isinstance(v, (tuple, list)),
          list: lambda v: isinstance(v, (tuple, list))}.get(t, lambda v: True)
    if not ok(value):
      problems.append(f"{path} must be {_type_name(t)}, got {type(value).__name__} {value!r}: "
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
  if cfg.data.source == "arrays" and not cfg.data.path:
    problems.append("data.source='arrays' needs data.path: set data.path to the .npz file (or "
                    "directory of arrays), or use data.source=auto")
  if cfg.data.name == "synthetic" and cfg.data.source in ("tfds", "download"):
    problems.append(f"data.name='synthetic' cannot come from data.source={cfg.data.source!r}: "
                    f"set data.source=synthetic (or auto), or data.name to cifar10/cifar100")

  at_least("seed", 0)
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
  if cfg.model.variant == "ei" and cfg.model.width_multiplier > 0 and cfg.model.ei_ratio >= 1:
    narrowest = max(4, int(round(64 * cfg.model.width_multiplier)))  # models' first layer
    if narrowest // cfg.model.ei_ratio < 1:
      problems.append(f"model.ei_ratio={cfg.model.ei_ratio} leaves no inhibitory unit in the "
                      f"{narrowest}-channel first layer (model.width_multiplier="
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

  Checks: every key exists in ``configs/common.get_base_config()`` and none is missing; every
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


# ------------------------------------------------------------------------------------------------
# Command line.


class CliParser(argparse.ArgumentParser):
  """ArgumentParser whose errors raise ConfigError (with the fix) instead of exiting; the
  experiments' command-line tools all use it, so a usage mistake is one ``error:`` line."""

  def error(self, message: str):
    """Raise ConfigError with a hint for the common mistakes."""
    if "--config" in message and "required" in message:
      raise ConfigError("missing --config: pass --config configs/NAME.py[:ARG], e.g. --config "
                        "configs/default.py")
    if "--workdir" in message and "required" in message:
      raise ConfigError("missing --workdir: pass --workdir DIR (the run's checkpoints, metrics "
                        "and config.json go there; an existing one is resumed)")
    raise ConfigError(f"{message} (see {self.prog} --help)")


def parse_cli(argv: Sequence[str] | None = None) -> tuple[str, str, list[str], list[str]]:
  """Parse ``--config FILE[:ARG] --workdir DIR [--config.KEY=VALUE | --config.KEY VALUE]...``.

  ``argv`` is the argument list without the program name (default ``sys.argv[1:]``). Returns
  ``(config_spec, workdir, overrides, extra)``: overrides as ``"key.path=value"`` strings in
  command-line order, ``extra`` the arguments not understood here (for the caller to parse).
  Raises ConfigError for a missing --config/--workdir or an override without a value.
  """
  argv = list(sys.argv[1:] if argv is None else argv)
  overrides, rest = [], []
  i = 0
  while i < len(argv):
    token = argv[i]
    if token.startswith("--config."):
      key, sep, value = token[len("--config."):].partition("=")
      if not sep:
        if i + 1 >= len(argv) or argv[i + 1].startswith("--"):
          raise ConfigError(f"{token} needs a value: write {token}=VALUE")
        value = argv[i + 1]
        i += 1
      if not key:
        raise ConfigError(f"{token!r} names no field: write --config.key.path=VALUE")
      overrides.append(f"{key}={value}")
    else:
      rest.append(token)
    i += 1
  parser = CliParser(prog="python -m experiments.train", allow_abbrev=False,
                   description="Train an E-I / BN / DANN spiking network from a config file.",
                   epilog="Override any config field with --config.KEY=VALUE or --config.KEY VALUE "
                          "(e.g. --config.optim.lr=0.002 --config.model.T 8).")
  parser.add_argument("--config", required=True, metavar="FILE[:ARG]",
                      help="config file, optionally with its argument, e.g. "
                           "configs/ei_cifar10_vgg16.py:runlocal")
  parser.add_argument("--workdir", required=True, metavar="DIR",
                      help="run directory (checkpoints, metrics, config.json); resumed if present")
  args, extra = parser.parse_known_args(rest)
  return args.config, args.workdir, overrides, list(extra)
