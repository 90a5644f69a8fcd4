"""Names of parameter-tree paths: the one place that turns a JAX key path into text.

A parameter's path in a model built by ``ei_snn_jax.models`` reads, e.g.,
``("stage1_block0", "conv1", "ei", "w_ee")``: module names, then the wrapper module that
``models.common.CurrentLayer``/``Head`` give the E-I or DANN layer they hold (``"ei"`` or
``"dann"``, see ``WRAPPERS``), then the parameter's own name. The helpers below give

* ``path_names(path)``: every component as text (``("stage1_block0", "conv1", "ei", "w_ee")``);
* ``leaf_name(path)``: the parameter's name (``"w_ee"``), what Dale's law and the optimizer
  masks select by;
* ``layer_path(path)``: the layer's name with the wrapper left out (``"stage1_block0.conv1"``),
  the name every record uses (probe statistics ``<stat>/<layer>``, analysis figures, messages).

A path may be a JAX key path (``jax.tree_util.tree_flatten_with_path``: dict keys, attribute and
dataclass fields, sequence indices) or plain strings; Flax NNX states end a path with the
variable's ``.value`` attribute, which is not part of the name. Imports nothing of the project.
"""

from __future__ import annotations

from typing import Any, Iterable

import jax

# Module names of the wrappers around an E-I / DANN layer (models.common.CurrentLayer, Head).
WRAPPERS = ("ei", "dann")


def key_name(entry: Any) -> str:
  """One path component as text: a dict key, an attribute or field name, a sequence index (or a
  plain string, returned as it is)."""
  for attr in ("key", "name", "idx"):
    if hasattr(entry, attr):
      return str(getattr(entry, attr))
  return str(entry)


def _is_nnx_value(entry: Any) -> bool:
  return isinstance(entry, jax.tree_util.GetAttrKey) and entry.name == "value"


def path_names(path: Iterable[Any]) -> tuple[str, ...]:
  """Every component of ``path`` as text, without NNX's trailing ``.value``."""
  path = list(path)
  while path and _is_nnx_value(path[-1]):
    path.pop()
  return tuple(key_name(entry) for entry in path)


def leaf_name(path: Iterable[Any]) -> str:
  """The parameter's own name: the last component of ``path`` ("" for an empty path)."""
  names = path_names(path)
  return names[-1] if names else ""


def layer_path(path: Iterable[Any]) -> str:
  """The components of ``path`` joined with "." with the wrappers "ei"/"dann" left out:
  ``("stage1_block0", "conv1", "ei")`` -> ``"stage1_block0.conv1"``. Pass a parameter's path
  without its last component (``path[:-1]``) to name its layer."""
  return ".".join(name for name in path_names(path) if name not in WRAPPERS)
