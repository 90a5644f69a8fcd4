"""The experiment config: assembled from the options each module declares; validation; fingerprints.

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
import json
import math
import numbers
import operator
import pathlib
from typing import Any, Mapping, Sequence

import ml_collections
from absl import flags
from ml_collections import config_dict, config_flags

from ei_snn_jax import errors

OWNERS = ("ei_snn_jax.models", "ei_snn_jax.layers", "ei_snn_jax.core.neurons", "ei_snn_jax.optim",
          "ei_snn_jax.training.rng", "ei_snn_jax.training.train", "ei_snn_jax.training.distributed")
GROUPS = ("seed", "data", "model", "optim", "train", "parallel")    # the order of base_config

# The ``runlocal`` flag of a config file's ``:ARG``: a few steps on a small real-data subset.
RUNLOCAL = {"train.epochs": 1, "train.max_steps": 4, "train.batch_size": 16,
            "train.eval_batch_size": 64, "train.log_every_steps": 1, "data.train_subset": 256,
            "data.test_subset": 256, "model.width_multiplier": 0.125, "optim.warmup_epochs": 0}

# Fields that do not change what is trained (bookkeeping, cadence, hardware, file locations).
FINGERPRINT_EXCLUDE = (
    "train.progress_bar", "train.log_every_steps", "train.checkpoint_every_steps",
    "train.keep_checkpoints", "train.max_steps", "train.stop_on_dead_layer",
    "train.transfer_guard", "parallel", "data.cache_dir", "data.path", "data.tfds_data_dir",
    "data.placement", "data.device_memory_fraction", "data.assumed_device_memory_gb",
    "data.host_prefetch")


def _data_options() -> dict[str, tuple[Any, Any, str]]:
  """The data registry's ``config.data`` options as (default, rule, meaning)."""
  from ei_snn_jax.data import registry
  return {f"data.{key}": (o.type if o.default is None else o.default, None, o.help)
          for key, o in registry.options().items()}


def _check_data(cfg: Any, problems: list[str]) -> None:
  """Every data.* rule, as the data registry states them (``registry.check``)."""
  from ei_snn_jax.data import registry
  registry.check(cfg.data, problems)


class ConfigError(errors.UserError, ValueError):
  """A config problem; the message is one line naming the field and how to fix it."""


@functools.lru_cache(maxsize=None)
def _owners() -> tuple[Any, ...]:
  """The modules that declare options (imported on first use: they import JAX)."""
  return tuple(importlib.import_module(name) for name in OWNERS)


def options() -> dict[str, tuple[Any, Any, str]]:
  """Every option: dotted field -> (default, rule, meaning), in ``GROUPS`` order."""
  merged = _data_options()
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


def leaf_paths(cfg: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  """Every non-group field of ``cfg`` as a dotted path, in insertion order."""
  return [p for k, v in cfg.items() for p in (leaf_paths(v, f"{prefix}{k}.") if isinstance(
      v, ml_collections.ConfigDict) else [prefix + k])]


def unknown_key_error(key: str, cfg: ml_collections.ConfigDict | None = None) -> ConfigError:
  """The error for a field ``key`` that ``cfg`` (default the schema) lacks, with close matches."""
  paths = leaf_paths(cfg if cfg is not None else base_config())
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


# ------------------------------------------------------------------------------------------------
# Values from text, all parsed by ml_collections.config_flags.


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
      raise unknown_key_error(key, cfg)
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
  hint = "pass --config=configs/NAME.py[:ARG], e.g. --config=configs/default.py"
  if path.is_dir():
    raise ConfigError(f"config path {str(path)!r} is a directory, not a config file: {hint}")
  if not path.is_file():
    close = difflib.get_close_matches(str(path), [str(p) for p in sorted(pathlib.Path(
        "configs").rglob("*.py")) if p.name not in ("__init__.py", "common.py", "sweeps.py")])
    raise ConfigError(f"config file {str(path)!r} not found"
                      f"{f' (did you mean {chr(44).join(close)}?)' if close else ''}: {hint}, "
                      f"relative to the current directory")
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


# ------------------------------------------------------------------------------------------------
# Validation.

_KINDS = {bool: bool, str: str, tuple: (tuple, list), list: (tuple, list),
          int: numbers.Integral, float: numbers.Real}
_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt}


def _check_schema(cfg: Any, base: ml_collections.ConfigDict, prefix: str,
                  problems: list[str]) -> None:
  """Unknown / missing keys and value types of ``cfg`` against ``base`` (recursively)."""
  for key in [k for k in cfg.keys() if k not in base]:
    close = difflib.get_close_matches(key, list(base.keys()), n=1, cutoff=0.6)
    problems.append(f"unknown config field {prefix}{key}: "
                    f"{f'did you mean {prefix}{close[0]}?' if close else 'remove it'} (a new "
                    f"field is declared in its module's CONFIG_OPTIONS first, docs/options.md)")
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


def _check_rules(cfg: Any, declared: Mapping[str, tuple[Any, Any, str]],
                 problems: list[str]) -> None:
  """The allowed values and ranges of the ``declared`` options."""
  for path, (_, rule, what) in declared.items():
    value = functools.reduce(lambda node, part: node[part], path.split("."), cfg)
    if isinstance(rule, tuple) and value not in rule:
      close = difflib.get_close_matches(str(value), rule, n=1, cutoff=0.5)
      problems.append(f"{path}={value!r} is not a known {what}"
                      f"{f' (did you mean {close[0]}?)' if close else ''}: use one of "
                      f"{', '.join(rule)}")
    elif isinstance(rule, str) and rule.startswith("in "):
      low, high = (float(x) for x in rule[4:-1].split(","))
      if not (_OPS[">=" if rule[3] == "[" else ">"](value, low) and
              _OPS["<=" if rule[-1] == "]" else "<"](value, high)):
        problems.append(f"{path}={value!r} is out of range: it must be {rule}")
    elif isinstance(rule, str):
      failed = [c for c in rule.split(" and ") if not _OPS[c.split()[0]](value,
                                                                         float(c.split()[1]))]
      if failed:
        problems.append(f"{path}={value!r} is out of range: it must be {' and '.join(failed)}")


def _check_devices(cfg: Any, num_devices: int | None, problems: list[str]) -> None:
  """``parallel.num_devices`` and the batch sizes against the devices there are."""
  par = cfg.parallel
  if num_devices is not None and par.num_devices > num_devices:
    problems.append(f"parallel.num_devices={par.num_devices} exceeds the {num_devices} available "
                    f"devices: set parallel.num_devices to at most {num_devices} (0 = all)")
  n = par.num_devices if par.num_devices > 0 else num_devices
  for path in ("train.batch_size", "train.eval_batch_size") if n and n > 1 else ():
    size = cfg.train[path[6:]]
    if size >= 1 and size % n:
      below, above = (size // n) * n, (size // n + 1) * n
      problems.append(f"{path}={size} is not divisible by the {n} devices: use a multiple of "
                      f"{n} (e.g. {f'{below} or {above}' if below else above}) or set "
                      f"parallel.num_devices")


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
    _check_data(cfg, problems)
    _check_rules(cfg, {k: v for k, v in options().items() if not k.startswith("data.")}, problems)
    for module in _owners():
      getattr(module, "check_config", lambda *_: None)(cfg, problems)
    _check_devices(cfg, num_devices, problems)
  if problems:
    raise ConfigError("; ".join(problems))
  return cfg


# ------------------------------------------------------------------------------------------------
# Serialisation and fingerprints.


def _plain(value: Any) -> Any:
  """Nested dict / list / JSON scalars from a ConfigDict, Mapping, tuple or numpy scalar."""
  def convert(v):
    if isinstance(v, (ml_collections.ConfigDict, Mapping)):
      return v.to_dict() if isinstance(v, ml_collections.ConfigDict) else dict(v)
    return v.item() if hasattr(v, "item") else str(v)
  return json.loads(json.dumps(value, default=convert))


def config_to_json(cfg: ml_collections.ConfigDict | Mapping[str, Any]) -> str:
  """The resolved config as indented JSON, keys sorted (what the trainer saves to the workdir)."""
  return json.dumps(_plain(cfg), indent=2, sort_keys=True)


def fingerprint_dict(cfg: ml_collections.ConfigDict | Mapping[str, Any]) -> dict[str, Any]:
  """The fields that define the run (``FINGERPRINT_EXCLUDE`` removed), floats normalised."""
  data = _plain(cfg)
  floats = tuple(p for p, (default, _, _) in options().items() if isinstance(default, float))
  for path in FINGERPRINT_EXCLUDE + floats:
    *parents, leaf = path.split(".")
    node = functools.reduce(lambda n, part: n.get(part) if isinstance(n, dict) else None,
                            parents, data)
    if isinstance(node, dict) and path in FINGERPRINT_EXCLUDE:
      node.pop(leaf, None)
    elif isinstance(node, dict) and type(node.get(leaf)) is int:
      node[leaf] = float(node[leaf])
  return data


def config_fingerprint(cfg: ml_collections.ConfigDict | Mapping[str, Any]) -> str:
  """sha256 (hex) of the canonical JSON of ``fingerprint_dict(cfg)``: equal for two configs that
  train the same run (a saved ``config.json`` dict or a ConfigDict); refuses a foreign workdir."""
  canonical = json.dumps(fingerprint_dict(cfg), sort_keys=True, separators=(",", ":"))
  return hashlib.sha256(canonical.encode()).hexdigest()


def config_from_saved(saved: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """The ConfigDict of a run from its saved ``config.json`` "config" dict, on the current schema:
  unknown fields skipped, lists as tuples, ``parallel`` at its defaults (this machine)."""
  cfg = base_config()

  def assign(node, values):
    for k, v in ((k, v) for k, v in values.items() if k in node):
      if isinstance(v, dict):
        assign(node[k], v)
      else:
        with node.ignore_type():
          node[k] = tuple(v) if isinstance(v, list) else v

  assign(cfg, {k: v for k, v in saved.items() if k != "parallel"})
  return cfg
