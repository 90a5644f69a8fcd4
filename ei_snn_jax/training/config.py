"""The experiment config: assembled from the options each module declares; loading; validation.

An owning module declares ``CONFIG_OPTIONS = {"group.field": (default, rule, meaning)}`` (rule:
None, a tuple of allowed values, or a range: ``"> 0"``, ``">= 1 and <= 1024"``, ``"in [0, 1)"``)
and, for rules across fields, ``check_config(cfg, problems)`` (docs/options.md). Text values are
parsed by ``ml_collections.config_flags`` only. Importing this module imports no JAX.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib
import importlib.util
import math
import numbers
import pathlib
from typing import Any, Mapping, Sequence

import ml_collections
from absl import flags
from ml_collections import config_dict, config_flags

from ei_snn_jax import errors, rules

OWNERS = ("ei_snn_jax.models", "ei_snn_jax.layers", "ei_snn_jax.core.neurons", "ei_snn_jax.optim",
          "ei_snn_jax.training.rng", "ei_snn_jax.training.train", "ei_snn_jax.training.distributed")
CONFIG_HINT = "pass --config=configs/NAME.py[:ARG], e.g. --config=configs/default.py"
GROUPS = ("seed", "data", "model", "optim", "train", "parallel")    # the order of base_config

# The ``runlocal`` flag of a config file's ``:ARG``: a few steps on a small real-data subset.
RUNLOCAL = {"train.epochs": 1, "train.max_steps": 4, "train.batch_size": 16,
            "train.eval_batch_size": 64, "train.log_every_steps": 1, "data.train_subset": 256,
            "data.test_subset": 256, "model.width_multiplier": 0.125, "optim.warmup_epochs": 0}

class ConfigError(errors.UserError, ValueError):
  """A config problem; the message is one line naming the field and how to fix it."""


@functools.lru_cache(maxsize=None)
def _owners() -> tuple[Any, ...]:
  """The modules that declare options (imported on first use: they import JAX)."""
  return tuple(importlib.import_module(name) for name in OWNERS)


def options() -> dict[str, tuple[Any, Any, str]]:
  """Every option: dotted field -> (default, rule, meaning), in ``GROUPS`` order."""
  from ei_snn_jax.data import registry                # the data registry's Option form
  merged = {f"data.{key}": (o.type if o.default is None else o.default, o.rule, o.noun or o.help)
            for key, o in registry.options().items()}
  for module in _owners():
    merged.update(module.CONFIG_OPTIONS)
  return dict(sorted(merged.items(), key=lambda kv: GROUPS.index(kv[0].split(".")[0])))


def base_config() -> ml_collections.ConfigDict:
  """Every config field with its default (the paper's E-I CIFAR-10 recipe, VGG-16 values)."""
  c = ml_collections.ConfigDict()
  for path, (default, _, _) in options().items():
    group, _, leaf = path.rpartition(".")            # fields are "seed" or "group.field"
    if group and group not in c:
      c[group] = ml_collections.ConfigDict()
    (c[group] if group else c)[leaf] = (config_dict.placeholder(default)
                                        if isinstance(default, type) else default)
  return c


def unknown_key_error(key: str) -> ConfigError:
  """The error for a field ``key`` the schema lacks, with close matches."""
  paths = list(options())
  by_leaf = {p.rsplit(".", 1)[-1]: p for p in paths}
  close = list(dict.fromkeys(difflib.get_close_matches(key, paths, n=3, cutoff=0.6) + [
      by_leaf[leaf] for leaf in difflib.get_close_matches(key.rsplit(".", 1)[-1], list(by_leaf),
                                                          n=3, cutoff=0.75)]))[:3]
  hint = f"did you mean {' or '.join(close)}?" if close else "no such field"
  return ConfigError(f"unknown config key {key!r}: {hint} (write the full field path; every "
                     f"field is listed in ei_snn_jax.training.config.options())")


def type_name(t: type) -> str:
  """'an int', 'a float', ... for messages."""
  name = {bool: "bool (true/false/1/0)", tuple: "tuple like (32,64)"}.get(t, t.__name__)
  return ("an " if name[0] in "aeiou" else "a ") + name


def apply_overrides(cfg: ml_collections.ConfigDict,
                    overrides: Sequence[str]) -> ml_collections.ConfigDict:
  """Set ``"key.path=value"`` overrides on ``cfg`` in order, each parsed by
  ``ml_collections.config_flags`` exactly as ``--config.key.path=value``; returns ``cfg``."""
  for item in overrides:
    key, eq, text = str(item).partition("=")
    *parents, leaf = key.split(".")
    node = functools.reduce(lambda n, part: n.get(part) if isinstance(
        n, ml_collections.ConfigDict) else None, parents, cfg)
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
      raise unknown_key_error(key)
    if isinstance(node[leaf], ml_collections.ConfigDict):
      raise ConfigError(f"{key} is a group of fields, not a value: set one of its fields, e.g. "
                        f"{key}.{next(iter(node[leaf].keys()), 'FIELD')}=VALUE")
    if not eq:
      raise ConfigError(f"override {item!r} has no value: write {key}=VALUE")
    argv, fv = ["override", f"--config.{key}={text}"], flags.FlagValues()
    try:
      config_flags.DEFINE_config_dict("config", cfg, flag_values=fv, lock_config=False,
                                      sys_argv=argv)
      fv(argv)
    except (flags.Error, ValueError, TypeError):
      raise ConfigError(f"{key} expects {type_name(node.get_type(leaf))}, got {text!r}") from None
  return cfg


def apply_config_arg(cfg: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  """Apply a config file's ``:ARG`` (big_vision style): comma-separated ``runlocal`` (a tiny
  debugging run: ``RUNLOCAL``) and ``key.path=value`` pairs, applied after it; returns ``cfg``."""
  first, pairs = [], []
  for item in [s.strip() for s in (arg or "").split(",") if s.strip()]:
    key, sep, text = item.partition("=")
    if key == "runlocal" and text.lower() not in ("", "true", "1", "false", "0"):
      raise ConfigError(f"runlocal expects a bool (true/false/1/0), got {text!r}")
    if key == "runlocal":
      first = [f"{k}={v}" for k, v in RUNLOCAL.items()] if text.lower() in ("", "true", "1") else []
    elif not sep:
      raise ConfigError(f"unknown config argument {item!r}: use the flag runlocal or key.path="
                        f"value pairs, e.g. configs/x.py:runlocal,model.T=8")
    else:
      pairs.append(item)
  return apply_overrides(cfg, first + pairs)


def load_config(spec: str, overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The config of ``spec`` (``path/to/config.py[:ARG]``, get_config(ARG) as config_flags calls
  it) with ``"key.path=value"`` overrides; not validated. ConfigError (one line) if it fails."""
  path = pathlib.Path(spec.split(":", 1)[0]).expanduser()
  if path.is_dir():
    raise ConfigError(f"config path {str(path)!r} is a directory, not a config file: "
                      f"{CONFIG_HINT}")
  if not path.is_file():
    close = difflib.get_close_matches(str(path), [str(p) for p in sorted(pathlib.Path(
        "configs").rglob("*.py")) if p.name not in ("__init__.py", "common.py", "sweeps.py")])
    close = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ConfigError(f"config file {str(path)!r} not found{close}: {CONFIG_HINT}, relative to "
                      f"the current directory")
  module_spec = importlib.util.spec_from_file_location(
      "_ei_snn_config_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12], path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
    if not callable(getattr(module, "get_config", None)):
      raise ConfigError(f"{path} defines no get_config(): add `def get_config(arg=None)` "
                        f"returning an ml_collections.ConfigDict")
    cfg = module.get_config(*spec.split(":", 1)[1:])
  except ConfigError:
    raise
  except Exception as e:  # noqa: BLE001 - a broken config file: say which and why
    raise ConfigError(f"{spec}: get_config() failed: {type(e).__name__}: {' '.join(str(e).split())}"
                      f": fix the config file (fields and types: config.options())") from e
  if not isinstance(cfg, ml_collections.ConfigDict):
    raise ConfigError(f"{path}: get_config() returned {type(cfg).__name__}: return an "
                      f"ml_collections.ConfigDict (start from config.base_config())")
  return apply_overrides(cfg, overrides)


_KINDS = {bool: bool, str: str, tuple: (tuple, list), list: (tuple, list),
          int: numbers.Integral, float: numbers.Real}


def _check_schema(cfg: Any, base: ml_collections.ConfigDict, prefix: str,
                  problems: list[str]) -> None:
  """Unknown / missing keys and value types of ``cfg`` against ``base`` (recursively)."""
  problems += [str(unknown_key_error(prefix + k)) for k in cfg.keys() if k not in base]
  for key, ref in base.items():
    path, t, value = prefix + key, base.get_type(key), cfg.get(key, base)
    if value is base:
      problems.append(f"config lacks the field {path}: build the config on "
                      f"config.base_config() and override values, do not delete fields")
    elif isinstance(ref, ml_collections.ConfigDict):
      if isinstance(value, (ml_collections.ConfigDict, Mapping)):
        _check_schema(value, ref, path + ".", problems)
      else:
        problems.append(f"{path} must be a group of fields, got {value!r}: set its fields "
                        f"({path}.FIELD=VALUE) instead")
    elif value is None and ref is not None:
      problems.append(f"{path} is None: give it {type_name(t)} (default {ref!r})")
    elif ref is None and value in ("None", "none"):
      problems.append(f"{path}={value!r}: config_flags reads None as text; to unset the field "
                      f"leave it out or give it an empty value ({path}=)")
    elif value is not None and (not isinstance(value, _KINDS.get(t, object)) or (
        t in (int, float) and isinstance(value, bool))):
      problems.append(f"{path} must be {type_name(t)}, got {type(value).__name__} {value!r}: "
                      f"write e.g. {path} = {ref!r}")
    elif t is float and value is not None and not math.isfinite(value):
      problems.append(f"{path}={value!r} is not finite: give a finite number")


def validate_config(cfg: ml_collections.ConfigDict,
                    num_devices: int | None = None) -> ml_collections.ConfigDict:
  """Check ``cfg`` completely; raise ConfigError listing every problem (one line), else return it.

  The schema (fields, types), every declared rule and each owner's ``check_config``; the batch
  sizes must divide over ``parallel.num_devices`` if > 0, else over ``num_devices`` (if given).
  """
  if num_devices is not None and num_devices < 1:
    raise ValueError(f"num_devices must be >= 1 or None, got {num_devices}")
  if not isinstance(cfg, (ml_collections.ConfigDict, Mapping)):
    raise ConfigError(f"expected an ml_collections.ConfigDict, got {type(cfg).__name__}: return "
                      f"one from get_config()")
  problems: list[str] = []
  _check_schema(cfg, base_config(), "", problems)
  if not problems:
    cfg = cfg if isinstance(cfg, ml_collections.ConfigDict) else ml_collections.ConfigDict(cfg)
    problems += [p for path, (_, rule, noun) in options().items()
                 for p in [rules.problem(path, cfg[path], rule, noun)] if p]
    for module in _owners() + (importlib.import_module("ei_snn_jax.data.registry"),):
      getattr(module, "check_config", lambda *_: None)(cfg, problems)
    importlib.import_module("ei_snn_jax.training.distributed").check_devices(
        cfg, num_devices, problems)
  if problems:
    raise ConfigError("; ".join(problems))
  return cfg
