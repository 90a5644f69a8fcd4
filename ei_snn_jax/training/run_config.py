"""A run's config as its workdir keeps it: the fingerprint that names the run, and reading back.

``workdir/config.json`` holds ``{"fingerprint": config_fingerprint(c), "config": c.to_dict()}``
(``metrics.MetricsLogger`` writes and checks it). Two configs that train the same run have the
same fingerprint: fields that do not change what is trained (``FINGERPRINT_EXCLUDE``) are left
out, and a float field given as an int (``optim.lr=1``) counts as the float. A run saved before
an option was added is still the same run when the new option keeps its default (``same_run``),
so adding an option never strands the run folders made before it.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any, Mapping

import ml_collections

from ei_snn_jax.training import config as config_lib

# Fields that do not change what is trained (bookkeeping, cadence, hardware, file locations).
FINGERPRINT_EXCLUDE = (
    "train.progress_bar", "train.log_every_steps", "train.checkpoint_every_steps",
    "train.keep_checkpoints", "train.max_steps", "train.stop_on_dead_layer",
    "train.transfer_guard", "parallel", "data.cache_dir", "data.path", "data.tfds_data_dir",
    "data.placement", "data.device_memory_fraction", "data.assumed_device_memory_gb",
    "data.host_prefetch")


def _json_value(v: Any) -> Any:
  """What ``json.dumps`` writes for a ConfigDict, a Mapping, a numpy scalar, anything else."""
  if isinstance(v, (ml_collections.ConfigDict, Mapping)):
    return v.to_dict() if isinstance(v, ml_collections.ConfigDict) else dict(v)
  return v.item() if hasattr(v, "item") else str(v)


def fingerprint_dict(cfg: ml_collections.ConfigDict | Mapping[str, Any]) -> dict[str, Any]:
  """The fields that define the run as plain JSON values (``FINGERPRINT_EXCLUDE`` removed,
  int values of float fields as floats)."""
  data = json.loads(json.dumps(cfg, default=_json_value))
  floats = tuple(p for p, (default, _, _) in config_lib.options().items()
                 if isinstance(default, float))
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
  cfg = config_lib.base_config()

  def assign(node, values):
    for k, v in ((k, v) for k, v in values.items() if k in node):
      if isinstance(v, dict):
        assign(node[k], v)
      else:
        with node.ignore_type():
          node[k] = tuple(v) if isinstance(v, list) else v

  assign(cfg, {k: v for k, v in saved.items() if k != "parallel"})
  return cfg


def _fields(tree: Mapping[str, Any], prefix: str = "") -> set[str]:
  return {p for k, v in tree.items() for p in (
      _fields(v, f"{prefix}{k}.") if isinstance(v, Mapping) else {prefix + k})}


def same_run(saved: Mapping[str, Any], fingerprint: str) -> bool:
  """Whether the saved ``config.json`` "config" dict ``saved`` and the config of ``fingerprint``
  train the same run: equal fingerprints, or ``saved`` lacks only fields added to the schema
  since, and the config keeps those at their defaults (a field ``saved`` has that the schema no
  longer knows never matches)."""
  known = _fields(config_lib.base_config().to_dict())
  if not _fields({k: v for k, v in saved.items() if k != "parallel"}) <= known:
    return False
  return config_fingerprint(saved) == fingerprint or (
      config_fingerprint(config_from_saved(saved)) == fingerprint)
