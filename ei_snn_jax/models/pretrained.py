"""The authors' released checkpoints (spec §8.2, §12): import into this project, export back.

A released model is a folder ``<Dataset>-<Arch>`` (on the Hugging Face Hub in the repository
``vwOvOwv/DeepEISNN``, e.g. ``CIFAR10-VGG16``, ``CIFAR10DVS-VGG8``) holding

* ``model.safetensors``: a PyTorch ``state_dict`` (float32; conv kernels OIHW, linear weights
  (out, in), E-I gains and biases (n, 1, 1) in convs and (1, n) in the output layer), and
* ``config.json``: the reference's training YAML as JSON (dataset, type "EI-SNN" | "BN-SNN", arch,
  num_layers, T, ei_ratio, light_classifier, dropout, neuron.tau, ...).

``load_pretrained(folder or Hub name)`` reads one into a ``Pretrained``: this project's variables
(``params`` and, for BN-SNNs, ``batch_stats``) with conv kernels turned to HWIO, linear weights to
(in, out) and gains/biases to (n,); no E-I Init runs. ``save_pretrained`` writes the inverse, so
import -> export is the identity on the state dict (keys, shapes, values bit for bit). Every key
of the file must be consumed and every parameter filled with its shape: the first key that does
not fit (missing, unexpected, wrong shape or dtype) raises ``PretrainedError``, one line naming
the key, the expected and the found shape.

One table each serves both directions: ``KEY_TABLE`` (state_dict key <-> variable path and
layout, per kind of layer) and ``CONFIG_TABLE`` (config.json key <-> this project's config field);
import reads them one way (``state_dict_to_variables``, ``config_fields``), export the other
(``variables_to_state_dict``, ``reference_config_of``). A width other than the paper's is the
extra config.json key ``width_multiplier`` (only this project reads it). Which parameters Dale's
law clamps is what the model's layers declare (``Pretrained.masks``, ``ei_snn_jax.roles``).

The project config is ``base_config()`` plus ``Pretrained.config_fields`` (dotted fields such as
``"model.arch": "vgg16"``); ``ei_snn_jax.training.pretrained.pretrained_config`` builds it
(``models`` sits below ``training`` in the import order, tests/test_layout.py).

This module holds no copy of the reference code: the key names follow spec §12, checked against
state_dicts the reference code produced.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import pathlib
import tempfile
from typing import Any, Iterator, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ei_snn_jax import errors, layers, roles
from ei_snn_jax.core import dale
from ei_snn_jax.models import common
from ei_snn_jax.models.resnet import SEWResNet, block_layout, has_downsample, resnet18_widths
from ei_snn_jax.models.vgg import VGG_LAYERS, SpikingVGG, scaled_layers

HUB_REPO = "vwOvOwv/DeepEISNN"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"

# The model cards of the reference README (spec §8.2): folder name -> reported top-1 (%).
MODEL_CARDS: dict[str, float] = {
    "CIFAR10-ResNet18": 92.06,
    "CIFAR10-VGG8": 87.03,
    "CIFAR10-VGG11": 88.43,
    "CIFAR10-VGG16": 91.01,
    "CIFAR10-VGG19": 91.36,
    "CIFAR100-VGG16": 65.90,
    "CIFAR100-VGG19": 64.06,
    "CIFAR10DVS-VGG8": 78.40,
    "CIFAR10DVS-VGG11": 78.40,
    "DVSGesture-VGG8": 95.83,
    "TinyImageNet200-ResNet18": 50.29,
}


class PretrainedError(errors.UserError, ValueError):
  """A released checkpoint that cannot be read or does not fit its model; one line with the fix."""


@dataclasses.dataclass(frozen=True)
class ReferenceDataset:
  """A dataset of the reference code as this project names and shapes it.

  Attributes:
    name: this project's ``data.name``.
    num_classes: classes (the output layer's n_E).
    frame_shape: (H, W, C) of one image or event frame at the model input (spec §6.1, §7.4).
    sequence: True for DVS event frames, fed as (T, B, H, W, C) (the reference's seq_input:
      no AddTemporalDim, so every ``layers.i`` index of a VGG is one less); False for static
      images (B, H, W, C), repeated T times (direct encoding).
  """
  name: str
  num_classes: int
  frame_shape: tuple[int, int, int]
  sequence: bool = False


# The reference's ``dataset`` values (its models/factory.py tables) -> this project's names.
REFERENCE_DATASETS: dict[str, ReferenceDataset] = {
    "CIFAR10": ReferenceDataset("cifar10", 10, (32, 32, 3)),
    "CIFAR100": ReferenceDataset("cifar100", 100, (32, 32, 3)),
    "TinyImageNet200": ReferenceDataset("tiny_imagenet", 200, (32, 32, 3)),  # trained at 32x32
    "CIFAR10DVS": ReferenceDataset("cifar10_dvs", 10, (48, 48, 2), sequence=True),
    "DVSGesture": ReferenceDataset("dvs128_gesture", 11, (48, 48, 2), sequence=True),
}

_TYPES = {"EI-SNN": "ei", "BN-SNN": "bn"}
_ARCHS = {("VGG", 8): "vgg8", ("VGG", 11): "vgg11", ("VGG", 16): "vgg16", ("VGG", 19): "vgg19",
          ("ResNet", 18): "resnet18"}
# The reference LIF's surrogates this project has, with spikingjelly's default alpha.
_SURROGATES = {"sigmoid": 4.0, "atan": 2.0}
# Reference LIF settings this project implements only at their default (spec §5).
_NEURON_DEFAULTS = {"decay_input": False, "v_reset": None, "detach_reset": True, "step_mode": "m"}
# This project's fields the released format has no key for: a model is exported only at these.
_FIXED_FIELDS = {"model.ei_stabilization": "adaptive"}


def _fmt(shape: tuple[int, ...]) -> str:
  """(64, 3, 3, 3) as text; () for a scalar."""
  return "(" + ", ".join(str(int(s)) for s in shape) + ("," if len(shape) == 1 else "") + ")"


# ---------------------------------------------------------------------------------------------
# config.json <-> this project's config fields: one table, read one way on import, the other on
# export
# ---------------------------------------------------------------------------------------------

REQUIRED = object()   # ``ConfigEntry.default`` of a key every released config.json has


@dataclasses.dataclass(frozen=True)
class ConfigEntry:
  """One config.json entry and the field of this project it is (spec §7.1, §12).

  Attributes:
    key: the config.json key; "neuron.tau" is ``tau`` inside its ``neuron`` object.
    field: this project's dotted config field (``training.config.base_config()``).
    kind: "int" (an integer >= ``low``), "float", "positive" (a float > 0), "probability" (a
      float in [0, 1)), or a {config.json value: field value} dict.
    default: the config.json value when the key is absent (import); left out on export when
      ``omit_default`` and the field has it. ``REQUIRED``: import fails without the key.
    applies: the models that have the key: "all", "ei" (E-I only), "vgg" (VGG only),
      "warmup" (with warmup epochs).
    recipe: a training-recipe key: import skips it when absent or not a number.
    omit_default: export leaves the key out when the field has the default value.
    low: the least value of an "int".
  """
  key: str
  field: str
  kind: Any
  default: Any = REQUIRED
  applies: str = "all"
  recipe: bool = False
  omit_default: bool = False
  low: int = 1


CONFIG_TABLE: tuple[ConfigEntry, ...] = (
    ConfigEntry("T", "model.T", "int"),
    ConfigEntry("ei_ratio", "model.ei_ratio", "int", applies="ei"),
    ConfigEntry("dropout", "model.dropout", "probability", default=0.0, applies="vgg"),
    # Not a key of the reference (which builds the paper's widths only): written when != 1, so a
    # narrow run of this project exports, imports back here, and fails in the reference code.
    ConfigEntry("width_multiplier", "model.width_multiplier", "positive", default=1.0,
                omit_default=True),
    ConfigEntry("neuron.tau", "model.tau", "positive", default=2.0),
    ConfigEntry("neuron.v_threshold", "model.threshold", "positive", default=1.0,
                omit_default=True),
    ConfigEntry("neuron.surrogate_function", "model.surrogate", {s: s for s in _SURROGATES},
                default="sigmoid", omit_default=True),
    ConfigEntry("epochs", "train.epochs", "int", recipe=True),
    # The reference warms up only when warmup_epochs is given (its default 0, spec §7.2).
    ConfigEntry("warmup_epochs", "optim.warmup_epochs", "int", default=0, omit_default=True,
                low=0),
    ConfigEntry("batch_size", "train.batch_size", "int", recipe=True),
    ConfigEntry("init_learning_rate", "optim.init_lr", "float", applies="warmup", recipe=True),
    ConfigEntry("learning_rate", "optim.lr", "float", recipe=True),
    ConfigEntry("momentum", "optim.momentum", "float", recipe=True),
    ConfigEntry("weight_decay", "optim.weight_decay", "float", recipe=True),
    ConfigEntry("seed", "seed", "int", recipe=True, low=0),
)

# Keys every export writes that this project has no choice for (not read on import).
_EXPORT_CONSTANTS = {"optimizer": "SGD", "scheduler": "CosALR", "loss": "CE"}


def _applies(entry: ConfigEntry, fields: Mapping[str, Any]) -> bool:
  """Whether the model of ``fields`` (variant, arch, warmup read so far) has ``entry``."""
  return {"all": True, "ei": fields.get("model.variant") == "ei",
          "vgg": str(fields.get("model.arch", "")).startswith("vgg"),
          "warmup": bool(fields.get("optim.warmup_epochs", 0))}[entry.applies]


def _lookup(tree: Mapping[str, Any], dotted: str) -> Any:
  """``tree["a"]["b"]`` of ``"a.b"``; ``REQUIRED`` where absent."""
  for part in dotted.split("."):
    if not isinstance(tree, Mapping) or part not in tree:
      return REQUIRED
    tree = tree[part]
  return tree


def _require(reference_config: Mapping[str, Any], key: str, source: str) -> Any:
  """``reference_config[key]``, or PretrainedError naming the missing key."""
  if key not in reference_config:
    raise PretrainedError(f"{source} lacks {key!r}: a released config.json holds the reference's "
                          "training YAML (dataset, type, arch, num_layers, T, ...)")
  return reference_config[key]


def _integer(value: Any, key: str, source: str, low: int = 1) -> int:
  """``value`` as an int >= low, or PretrainedError naming ``key``."""
  if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or (
      value < low):
    raise PretrainedError(f"{source}: {key}={value!r} is not an integer >= {low}")
  return int(value)


def _read(entry: ConfigEntry, value: Any, source: str) -> Any:
  """The field value of config.json's ``value`` for ``entry``; PretrainedError naming the key."""
  kind, key = entry.kind, entry.key
  if isinstance(kind, dict):
    if value not in kind:
      raise PretrainedError(f"{source}: {key}={value!r} is not one this project has: use one of "
                            f"{', '.join(map(str, kind))}")
    return kind[value]
  if kind == "int":
    return _integer(value, key, source, entry.low)
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    raise PretrainedError(f"{source}: {key}={value!r} is not a number")
  value = float(value)
  if kind == "positive" and not value > 0:
    raise PretrainedError(f"{source}: {key}={value!r} must be > 0")
  if kind == "probability" and not 0 <= value < 1:
    raise PretrainedError(f"{source}: {key}={value!r} is not a probability in [0, 1)")
  return value


def reference_dataset(reference_config: Mapping[str, Any],
                      source: str = CONFIG_FILE) -> ReferenceDataset:
  """The ``ReferenceDataset`` of a released config (its ``dataset`` key)."""
  name = _require(reference_config, "dataset", source)
  if name not in REFERENCE_DATASETS:
    raise PretrainedError(f"{source}: dataset {name!r} has no model in this project: released "
                          f"models use one of {', '.join(REFERENCE_DATASETS)}")
  return REFERENCE_DATASETS[name]


def config_fields(reference_config: Mapping[str, Any],
                  source: str = CONFIG_FILE) -> dict[str, Any]:
  """This project's config fields (dotted keys of ``training.config.base_config()``) of a released
  model's ``config.json``: ``CONFIG_TABLE`` read from config.json to the fields.

  Model: data.name, model.arch/variant/T/ei_ratio/dropout/width_multiplier/tau/threshold/
  surrogate(_alpha). Training recipe, where the file states it (spec §7.1): train.epochs/
  batch_size, optim.lr/init_lr/warmup_epochs/momentum/weight_decay, seed. Keys this project has
  no choice for (optimizer SGD, scheduler CosALR, loss CE, data_path, output_dir, num_workers,
  zero_init_residual, which only changes a fresh init) are not read. A value this project cannot
  express (another arch, the full VGG classifier, a LIF other than spec §5's) raises
  ``PretrainedError`` naming the key.
  """
  if not isinstance(reference_config, Mapping):
    raise PretrainedError(f"{source} holds {type(reference_config).__name__}, expected a JSON "
                          "object (the reference's training YAML as JSON)")
  dataset = reference_dataset(reference_config, source)
  kind = _require(reference_config, "type", source)
  if kind not in _TYPES:
    raise PretrainedError(f"{source}: type {kind!r} is not a model of this project: use EI-SNN "
                          "or BN-SNN")
  arch_name = _require(reference_config, "arch", source)
  depth = _integer(_require(reference_config, "num_layers", source), "num_layers", source)
  arch = _ARCHS.get((arch_name, depth))
  if arch is None:
    raise PretrainedError(f"{source}: arch {arch_name}{depth} is not a model of this project: "
                          "released models are VGG-8/11/16/19 and ResNet-18")
  if arch.startswith("vgg") and not reference_config.get("light_classifier", True):
    raise PretrainedError(f"{source}: light_classifier=false (the 4096-wide VGG classifier) is "
                          "not a model of this project: every released VGG uses the light one")
  neuron = reference_config.get("neuron", {})
  if not isinstance(neuron, Mapping):
    raise PretrainedError(f"{source}: neuron={neuron!r} is not an object like {{\"tau\": 2.0}}")
  for key, default in _NEURON_DEFAULTS.items():
    if key in neuron and neuron[key] != default:
      raise PretrainedError(f"{source}: neuron.{key}={neuron[key]!r} is not this project's LIF "
                            f"(spec §5: {key}={default!r})")
  fields: dict[str, Any] = {"data.name": dataset.name, "model.arch": arch,
                            "model.variant": _TYPES[kind]}
  for entry in CONFIG_TABLE:
    if not _applies(entry, fields):
      continue
    value = _lookup(reference_config, entry.key)
    if value is REQUIRED and entry.recipe:
      continue   # the file does not state it: the base config's value stays
    if value is REQUIRED:
      if entry.default is REQUIRED:
        _require(reference_config, entry.key, source)
      value = entry.default
    elif entry.recipe and (isinstance(value, bool) or not isinstance(value, (int, float))):
      continue   # a recipe value this project cannot use: the base config's stays
    fields[entry.field] = _read(entry, value, source)
  fields["model.surrogate_alpha"] = _SURROGATES[fields["model.surrogate"]]
  return fields


def exported_fields() -> tuple[str, ...]:
  """Every field of this project that ``reference_config_of`` reads."""
  return (("data.name", "model.arch", "model.variant", "model.surrogate_alpha")
          + tuple(e.field for e in CONFIG_TABLE) + tuple(_FIXED_FIELDS))


def _no_counterpart(field: str, value: Any, allowed: str) -> PretrainedError:
  """The one-line error of a field value the released format cannot hold."""
  return PretrainedError(f"{field}={value!r} has no counterpart in the released format "
                         f"({allowed})")


def reference_config_of(fields: Mapping[str, Any], dataset: str | None = None) -> dict:
  """A released model's ``config.json`` (the reference's training YAML) of this project's
  ``fields`` ({dotted field: value} for every field of ``exported_fields()``):
  ``CONFIG_TABLE`` written from the fields to config.json, the inverse of ``config_fields``.

  ``dataset``: the reference's dataset name ("CIFAR10", ...); default from ``data.name``. Raises
  ``PretrainedError`` (one line) for a value the format cannot hold: DANN or the MLP, a
  stabilization other than "adaptive", a surrogate other than sigmoid/atan or its alpha other
  than spikingjelly's default.
  """
  names = {d.name: ref for ref, d in REFERENCE_DATASETS.items()}
  if dataset is None:
    if fields["data.name"] not in names:
      raise PretrainedError(f"data.name={fields['data.name']!r} has no dataset of the "
                            f"reference: pass dataset= one of {', '.join(REFERENCE_DATASETS)}")
    dataset = names[fields["data.name"]]
  reference_dataset({"dataset": dataset}, "dataset=")
  types = {v: k for k, v in _TYPES.items()}
  archs = {v: k for k, v in _ARCHS.items()}
  for field, table, allowed in (("model.variant", types, "ei or bn"),
                                ("model.arch", archs, ", ".join(archs))):
    if fields[field] not in table:
      raise _no_counterpart(field, fields[field], allowed)
  for field, value in _FIXED_FIELDS.items():
    if fields[field] != value:
      raise _no_counterpart(field, fields[field], value)
  arch, depth = archs[fields["model.arch"]]
  out: dict[str, Any] = {"dataset": dataset, "type": types[fields["model.variant"]],
                         "arch": arch, "num_layers": depth}
  if arch == "VGG":
    out["light_classifier"] = True
  else:
    out["zero_init_residual"] = False
  for entry in CONFIG_TABLE:
    if not _applies(entry, fields):
      continue
    value = fields[entry.field]
    if isinstance(entry.kind, dict):
      inverse = {v: k for k, v in entry.kind.items()}
      if value not in inverse:
        raise _no_counterpart(entry.field, value, " or ".join(inverse))
      value = inverse[value]
    else:
      value = int(value) if entry.kind == "int" else float(value)
    if entry.omit_default and value == entry.default:
      continue
    *parents, leaf = entry.key.split(".")
    node = out
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  alpha = _SURROGATES[fields["model.surrogate"]]
  if float(fields["model.surrogate_alpha"]) != alpha:
    raise _no_counterpart("model.surrogate_alpha", fields["model.surrogate_alpha"],
                          f"{alpha:g}, spikingjelly's default for {fields['model.surrogate']}")
  out.update(_EXPORT_CONSTANTS)
  return out


# ---------------------------------------------------------------------------------------------
# The key map: reference state_dict key <-> this project's variables (spec §12)
# ---------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TensorMap:
  """One entry of a reference state_dict and its place in this project's variables.

  Attributes:
    key: the reference key, e.g. ``layers.2.conv_ee.weight``.
    torch_shape: its shape in the file.
    collection: "params" or "batch_stats"; None for a buffer with no Flax counterpart
      (BatchNorm's ``num_batches_tracked``, kept in ``Pretrained.buffers``).
    path: the leaf's path inside the collection, e.g. ("conv0", "ei", "w_ee").
    layout: "conv" (OIHW <-> HWIO), "linear" ((out, in) <-> (in, out)), "vector" ((n, 1, 1) or
      (1, n) <-> (n,)) or "same".
  """
  key: str
  torch_shape: tuple[int, ...]
  collection: str | None
  path: tuple[str, ...]
  layout: str

  @property
  def flax_shape(self) -> tuple[int, ...]:
    """The leaf's shape in this project's variables."""
    s = self.torch_shape
    if self.layout == "conv":
      return (s[2], s[3], s[1], s[0])
    if self.layout == "linear":
      return (s[1], s[0])
    if self.layout == "vector":
      return (math.prod(s),)
    return s

  def to_flax(self, array: np.ndarray) -> np.ndarray:
    """The file's array in this project's layout."""
    if self.layout == "conv":
      array = np.transpose(array, (2, 3, 1, 0))
    elif self.layout == "linear":
      array = array.T
    elif self.layout == "vector":
      array = array.reshape(-1)
    return np.ascontiguousarray(array)

  def to_torch(self, array: Any) -> np.ndarray:
    """This project's leaf in the file's layout (the inverse of ``to_flax``)."""
    array = np.asarray(array)
    if self.layout == "conv":
      array = np.transpose(array, (3, 2, 0, 1))
    elif self.layout == "linear":
      array = array.T
    elif self.layout == "vector":
      array = array.reshape(self.torch_shape)
    return np.ascontiguousarray(array)


@dataclasses.dataclass(frozen=True)
class KeyEntry:
  """One row of ``KEY_TABLE``: a tensor of one layer, in the file and in this project.

  Attributes:
    module: which reference module of the layer holds it: "conv" (EiConv2d, EiLinear, Conv2d,
      Linear) or "norm" (EiNorm, BatchNorm).
    suffix: its key after the module's name, e.g. "conv_ee.weight".
    collection: "params", "batch_stats" or None (a buffer with no Flax counterpart).
    path: the leaf's path inside the layer's module of this project, e.g. ("ei", "w_ee").
    layout: as ``TensorMap.layout``.
    shape: the shape in the file, in symbols: "E" excitatory units (``features``), "I"
      inhibitory units, "C" input channels, "K" kernel size, or a number.
  """
  module: str
  suffix: str
  collection: str | None
  path: tuple[str, ...]
  layout: str
  shape: tuple[str | int, ...]


def _rows(rows: tuple[tuple, ...]) -> tuple[KeyEntry, ...]:
  """``KeyEntry`` of each row tuple."""
  return tuple(KeyEntry(*row) for row in rows)


# THE key map (spec §12), for each kind of layer of a released model: import reads a row from the
# file to the variables, export from the variables to the file (``TensorMap.to_flax``/
# ``to_torch``). Rows in the reference's key order.
KEY_TABLE: dict[str, tuple[KeyEntry, ...]] = {
    "ei_conv": _rows((
        ("conv", "conv_ee.weight", "params", ("ei", "w_ee"), "conv", ("E", "C", "K", "K")),
        ("conv", "conv_ie.weight", "params", ("ei", "w_ie"), "conv", ("I", "C", "K", "K")),
        ("norm", "weight_ei", "params", ("ei", "w_ei"), "same", ("E", "I")),
        ("norm", "gain_i", "params", ("ei", "g_i"), "vector", ("I", 1, 1)),
        ("norm", "gain_e", "params", ("ei", "g_e"), "vector", ("E", 1, 1)),
        ("norm", "bias", "params", ("ei", "bias"), "vector", ("E", 1, 1)))),
    "ei_head": _rows((
        ("conv", "weight_ee", "params", ("ei", "w_ee"), "linear", ("E", "C")),
        ("conv", "weight_ie", "params", ("ei", "w_ie"), "linear", ("I", "C")),
        ("norm", "weight_ei", "params", ("ei", "w_ei"), "same", ("E", "I")),
        ("norm", "gain_i", "params", ("ei", "g_i"), "vector", (1, "I")),
        ("norm", "gain_e", "params", ("ei", "g_e"), "vector", (1, "E")),
        ("norm", "bias", "params", ("ei", "bias"), "vector", (1, "E")))),
    "bn_conv": _rows((
        ("conv", "conv.weight", "params", ("bn_conv", "kernel"), "conv", ("E", "C", "K", "K")),
        ("norm", "bn.weight", "params", ("bn_conv", "bn", "scale"), "same", ("E",)),
        ("norm", "bn.bias", "params", ("bn_conv", "bn", "bias"), "same", ("E",)),
        ("norm", "bn.running_mean", "batch_stats", ("bn_conv", "bn", "mean"), "same", ("E",)),
        ("norm", "bn.running_var", "batch_stats", ("bn_conv", "bn", "var"), "same", ("E",)),
        ("norm", "bn.num_batches_tracked", None, (), "same", ()))),
    "bn_head": _rows((
        ("conv", "linear.weight", "params", ("dense", "kernel"), "linear", ("E", "C")),
        ("conv", "linear.bias", "params", ("dense", "bias"), "same", ("E",)))),
}


@dataclasses.dataclass(frozen=True)
class _Layer:
  """One layer of a released model: its reference module names and this project's path."""
  kind: str                 # a key of KEY_TABLE
  conv: str                 # module holding the weights (EiConv2d/EiLinear/Conv2d/Linear)
  norm: str                 # module holding W_EI, gains and bias (EiNorm) or the BatchNorm
  path: tuple[str, ...]     # this project's module path ("conv0",), ("stage1_block0", "conv1")
  c_in: int
  features: int
  kernel_size: int = 3


def _vgg_layers(arch: str, variant: str, dataset: ReferenceDataset, num_classes: int,
                width: float) -> Iterator[_Layer]:
  """The layers of a released VGG (spec §12): ``layers`` is one nn.Sequential whose index 0 is
  AddTemporalDim (static images only) and then MergeTemporalDim; a conv entry takes 6 modules
  (E-I: conv, norm, split, LIF, dropout, merge) or 5 (BN: no dropout), a "P" one AvgPool2d; then
  Flatten and the head. Channels as ``models.vgg.scaled_layers(arch, width)``."""
  index = 1 if dataset.sequence else 2
  c_in = dataset.frame_shape[-1]
  conv = 0
  for v in scaled_layers(arch, width):
    if v == "P":
      index += 1
      continue
    yield _Layer(f"{variant}_conv", f"layers.{index}", f"layers.{index + 1}", (f"conv{conv}",),
                 c_in, v)
    index += 6 if variant == "ei" else 5
    c_in, conv = v, conv + 1
  index += 1  # Flatten
  yield _Layer(f"{variant}_head", f"layers.{index}", f"layers.{index + 1}", ("head",), c_in,
               num_classes, 1)


def _resnet_layers(variant: str, dataset: ReferenceDataset, num_classes: int,
                   width: float) -> Iterator[_Layer]:
  """The layers of a released SEW-ResNet-18 (spec §12), in the reference's module order: stem,
  then per block conv1, norm1, conv2, norm2, downsample (first block of stages 2-4), then fc.
  Channels as ``models.resnet.resnet18_widths(width)``."""
  ei = variant == "ei"
  kind = f"{variant}_conv"
  norm = lambda prefix, i: f"{prefix}norm{i}" if ei else f"{prefix}bn{i}"
  widths = resnet18_widths(width)
  yield _Layer(kind, "conv1", norm("", 1), ("stem",), dataset.frame_shape[-1], widths[0])
  c_in = widths[0]
  for stage, block, width_out, strides in block_layout((2, 2, 2, 2), widths):
    prefix = f"layer{stage + 1}.{block}."
    path = (f"stage{stage}_block{block}",)
    yield _Layer(kind, prefix + "conv1", norm(prefix, 1), path + ("conv1",), c_in, width_out)
    yield _Layer(kind, prefix + "conv2", norm(prefix, 2), path + ("conv2",), width_out, width_out)
    if has_downsample(c_in, width_out, strides):
      yield _Layer(kind, prefix + "downsample.0", prefix + "downsample.1",
                   path + ("downsample",), c_in, width_out, 1)
    c_in = width_out
  yield _Layer(f"{variant}_head", "fc", "final_ei_norm" if ei else "fc", ("head",), c_in,
               num_classes, 1)


def _tensors(layer: _Layer, ei_ratio: int) -> Iterator[TensorMap]:
  """The state_dict entries of one layer (its rows of ``KEY_TABLE``), in the reference's order."""
  sizes = {"E": layer.features, "C": layer.c_in, "K": layer.kernel_size}
  if layer.kind.startswith("ei"):
    sizes["I"] = layers.inhibitory_units(layer.features, ei_ratio,
                                         output_layer=layer.kind == "ei_head")
    if sizes["I"] < 1:
      raise PretrainedError(f"ei_ratio={ei_ratio} leaves {layer.conv} ({layer.features} "
                            "excitatory units) no inhibitory unit")
  for row in KEY_TABLE[layer.kind]:
    module = layer.conv if row.module == "conv" else layer.norm
    shape = tuple(sizes[s] if isinstance(s, str) else s for s in row.shape)
    path = layer.path + row.path if row.collection else ()
    yield TensorMap(f"{module}.{row.suffix}", shape, row.collection, path, row.layout)


def reference_layout(reference_config: Mapping[str, Any],
                     source: str = CONFIG_FILE) -> list[TensorMap]:
  """Every state_dict entry of the released model ``reference_config`` describes, in the
  reference's order (spec §12): E-I VGG-8 36 keys, BN VGG-16 80, E-I ResNet-18 126, BN 122."""
  fields = config_fields(reference_config, source)
  dataset = reference_dataset(reference_config, source)
  arch, variant = fields["model.arch"], fields["model.variant"]
  width = fields["model.width_multiplier"]
  if arch in VGG_LAYERS:
    model_layers = _vgg_layers(arch, variant, dataset, dataset.num_classes, width)
  else:
    model_layers = _resnet_layers(variant, dataset, dataset.num_classes, width)
  ei_ratio = fields.get("model.ei_ratio", 4)
  return [t for layer in model_layers for t in _tensors(layer, ei_ratio)]


def describe(reference_config: Mapping[str, Any]) -> str:
  """'E-I VGG-16 for CIFAR10, T=4': a released model in words, for messages."""
  kind = {"EI-SNN": "E-I", "BN-SNN": "BN"}.get(reference_config.get("type"), "?")
  return (f"{kind} {reference_config.get('arch')}-{reference_config.get('num_layers')} for "
          f"{reference_config.get('dataset')}, T={reference_config.get('T')}")


# ---------------------------------------------------------------------------------------------
# state_dict <-> variables
# ---------------------------------------------------------------------------------------------

def _set_leaf(tree: dict, path: tuple[str, ...], value: Any) -> None:
  """tree[path[0]]...[path[-1]] = value, creating the nested dicts."""
  for name in path[:-1]:
    tree = tree.setdefault(name, {})
  tree[path[-1]] = value


def _get_leaf(tree: Mapping, path: tuple[str, ...]) -> Any:
  """tree[path[0]]...[path[-1]], or None where the path does not exist."""
  for name in path:
    if not isinstance(tree, Mapping) or name not in tree:
      return None
    tree = tree[name]
  return tree


def state_dict_to_variables(state_dict: Mapping[str, np.ndarray],
                            reference_config: Mapping[str, Any],
                            source: str = WEIGHTS_FILE) -> tuple[dict, dict]:
  """A reference state_dict -> (variables, buffers) of this project's model.

  ``variables`` is {"params": ...} (plus "batch_stats" for BN-SNNs), numpy float32 arrays in
  this project's layouts; ``buffers`` holds the entries without a Flax counterpart (BatchNorm's
  ``num_batches_tracked``) so that ``variables_to_state_dict`` gives the file back. Raises
  ``PretrainedError`` for the first key that is missing, has another shape or dtype, or is not
  part of the model.
  """
  layout = reference_layout(reference_config)
  what = describe(reference_config)
  variables: dict[str, dict] = {}
  buffers: dict[str, np.ndarray] = {}
  for t in layout:
    if t.key not in state_dict:
      raise PretrainedError(f"{source}: missing key {t.key} (expected shape {_fmt(t.torch_shape)};"
                            f" config.json: {what})")
    array = np.asarray(state_dict[t.key])
    if tuple(array.shape) != t.torch_shape:
      raise PretrainedError(f"{source}: {t.key} has shape {_fmt(array.shape)}, expected "
                            f"{_fmt(t.torch_shape)} (config.json: {what})")
    if t.collection is None:
      if not np.issubdtype(array.dtype, np.integer):
        raise PretrainedError(f"{source}: {t.key} has dtype {array.dtype}, expected an integer")
      buffers[t.key] = array
      continue
    if array.dtype != np.float32:
      raise PretrainedError(f"{source}: {t.key} has dtype {array.dtype}, expected float32 (the "
                            "released checkpoints are float32)")
    _set_leaf(variables.setdefault(t.collection, {}), t.path, t.to_flax(array))
  expected = {t.key for t in layout}
  for key in state_dict:
    if key not in expected:
      shape = _fmt(np.shape(state_dict[key]))
      raise PretrainedError(f"{source}: unexpected key {key} (shape {shape}): no such entry in "
                            f"the {len(layout)} keys of the model (config.json: {what})")
  return variables, buffers


def variables_to_state_dict(variables: Mapping[str, Any], reference_config: Mapping[str, Any],
                            buffers: Mapping[str, Any] | None = None,
                            num_batches_tracked: int = 0) -> dict[str, np.ndarray]:
  """This project's variables -> the reference state_dict (the inverse of
  ``state_dict_to_variables``), numpy arrays in the reference's key order.

  ``buffers`` supplies ``num_batches_tracked`` entries (as imported); missing ones are
  ``num_batches_tracked`` (int64). Raises ``PretrainedError`` naming the first variable that is
  missing, has another shape or has no key in the file (nothing is dropped silently).
  """
  buffers = dict(buffers or {})
  out: dict[str, np.ndarray] = {}
  what = describe(reference_config)
  layout = reference_layout(reference_config)
  for t in layout:
    if t.collection is None:
      out[t.key] = np.asarray(buffers.get(t.key, np.array(num_batches_tracked, np.int64)))
      continue
    leaf = _get_leaf(variables.get(t.collection, {}), t.path)
    name = "/".join((t.collection,) + t.path)
    if leaf is None:
      raise PretrainedError(f"the variables lack {name} (expected shape {_fmt(t.flax_shape)}), "
                            f"needed for {t.key} ({what})")
    if tuple(np.shape(leaf)) != t.flax_shape:
      raise PretrainedError(f"{name} has shape {_fmt(np.shape(leaf))}, expected "
                            f"{_fmt(t.flax_shape)} for {t.key} ({what})")
    out[t.key] = t.to_torch(leaf)
  mapped = {(t.collection,) + t.path for t in layout}
  for collection in ("params", "batch_stats"):
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables.get(collection, {}))[0]:
      names = (collection,) + tuple(str(getattr(k, "key", k)) for k in path)
      if names not in mapped:
        raise PretrainedError(f"{'/'.join(names)} {_fmt(np.shape(leaf))} has no key in the "
                              f"released format ({what}): it would be lost, so nothing is "
                              "written")
  return out


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------

def build_model(fields: Mapping[str, Any], num_classes: int) -> nn.Module:
  """The Flax model that ``config_fields`` describe (the paper's settings otherwise, the same
  module ``models.create_model`` builds from the full config)."""
  options = common.ModelOptions(
      variant=fields["model.variant"], T=int(fields["model.T"]),
      ei=layers.EIOptions(ei_ratio=int(fields.get("model.ei_ratio", 4))),
      neuron=layers.NeuronOptions(tau=fields["model.tau"], threshold=fields["model.threshold"],
                                  surrogate=fields["model.surrogate"],
                                  alpha=fields["model.surrogate_alpha"]),
      dropout=float(fields.get("model.dropout", 0.0)))
  arch, width = fields["model.arch"], float(fields.get("model.width_multiplier", 1.0))
  if arch in VGG_LAYERS:
    return SpikingVGG(scaled_layers(arch, width), num_classes, options)
  return SEWResNet((2, 2, 2, 2), num_classes, options, widths=resnet18_widths(width))


@dataclasses.dataclass(eq=False)
class Pretrained:
  """A released model in this project's terms.

  Attributes:
    name: the model card ("CIFAR10-VGG16") or the folder's name.
    reference_config: ``config.json`` as read.
    variables: {"params": ..., ["batch_stats": ...]} numpy arrays in this project's layouts.
    buffers: state_dict entries without a Flax counterpart (``num_batches_tracked``).
    metadata: the safetensors header metadata (written back by ``save_pretrained``).
  """
  name: str
  reference_config: dict
  variables: dict
  buffers: dict = dataclasses.field(default_factory=dict)
  metadata: dict | None = None

  @property
  def dataset(self) -> ReferenceDataset:
    """The dataset it was trained on, in this project's terms."""
    return reference_dataset(self.reference_config)

  @property
  def num_classes(self) -> int:
    """Classes of its output layer."""
    return self.dataset.num_classes

  @functools.cached_property
  def config_fields(self) -> dict[str, Any]:
    """This project's config fields (see ``config_fields``)."""
    return config_fields(self.reference_config)

  @property
  def reported_top1(self) -> float | None:
    """The top-1 test accuracy (%) of its model card in the reference README (spec §8.2)."""
    return MODEL_CARDS.get(self.name)

  @functools.cached_property
  def model(self) -> nn.Module:
    """The Flax model (``SpikingVGG`` / ``SEWResNet``) these variables belong to."""
    return build_model(self.config_fields, self.num_classes)

  def input_shape(self, batch: int) -> tuple[int, ...]:
    """The model input for ``batch`` examples: (B, H, W, C) images or (T, B, H, W, C) frames."""
    frame = self.dataset.frame_shape
    if self.dataset.sequence:
      return (int(self.config_fields["model.T"]), batch) + frame
    return (batch,) + frame

  @functools.cached_property
  def masks(self) -> roles.ParameterMasks:
    """Which parameters are sign-constrained, decayed, unused: the roles the model's layers
    declare (``roles.parameter_masks``, one abstract init)."""
    x = jax.ShapeDtypeStruct(self.input_shape(1), jnp.float32)
    return roles.parameter_masks(self.model, x, train=False)

  def model_variables(self) -> dict:
    """The variables as the model uses them: Dale's projection applied to the parameters its
    layers declare sign-constrained (the E-I weights and gains), as the reference clamps them at
    every forward pass (spec §4); ``variables`` itself stays as read."""
    out = dict(self.variables)
    out["params"] = dale.project_nonnegative(self.variables["params"], self.masks)
    return out

  @functools.cached_property
  def _apply(self):
    return jax.jit(lambda v, x: self.model.apply(v, x, train=False))

  def predict(self, x: Any) -> jax.Array:
    """Logits (B, num_classes), the mean over T of the output layer (eval mode).

    ``x``: images (B, H, W, C) in [0, 1] (no mean/std normalisation, spec §6.1) or, for DVS
    models, event frames (T, B, H, W, C) with ``H, W, C = 48, 48, 2``.
    """
    x = jnp.asarray(x, jnp.float32)
    sequence = self.dataset.sequence
    batch = x.shape[1 if sequence else 0] if x.ndim == (5 if sequence else 4) else 1
    want = self.input_shape(batch)
    if x.shape != want:
      kind = "event frames (T, B, H, W, C)" if sequence else "images (B, H, W, C)"
      raise PretrainedError(f"{self.name} takes {kind} like {_fmt(want)}, got {_fmt(x.shape)}")
    return self._apply(self.model_variables(), x)


def check_against_model(pretrained: Pretrained) -> None:
  """Every leaf of the model's params/batch_stats (``jax.eval_shape`` of ``init``, no data) is
  filled with its shape and nothing else is; ``PretrainedError`` naming the first misfit."""
  model = pretrained.model
  x = jax.ShapeDtypeStruct(pretrained.input_shape(2), jnp.float32)
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  for collection in ("params", "batch_stats"):
    want = {jax.tree_util.keystr(p): l.shape for p, l in
            jax.tree_util.tree_flatten_with_path(shapes.get(collection, {}))[0]}
    have = {jax.tree_util.keystr(p): np.shape(l) for p, l in
            jax.tree_util.tree_flatten_with_path(pretrained.variables.get(collection, {}))[0]}
    for path, shape in want.items():
      if path not in have:
        raise PretrainedError(f"{pretrained.name}: the model's {collection}{path} "
                              f"{_fmt(shape)} is filled by no key of the file")
      if tuple(have[path]) != tuple(shape):
        raise PretrainedError(f"{pretrained.name}: {collection}{path} has shape "
                              f"{_fmt(have[path])}, the model expects {_fmt(shape)}")
    for path in have:
      if path not in want:
        raise PretrainedError(f"{pretrained.name}: {collection}{path} is not a variable of the "
                              "model")


# ---------------------------------------------------------------------------------------------
# Files and the Hub
# ---------------------------------------------------------------------------------------------

def _safetensors():
  """The safetensors package, or PretrainedError saying how to install it."""
  try:
    import safetensors  # noqa: F401
    import safetensors.numpy
  except ImportError:
    raise PretrainedError("released checkpoints are safetensors files: pip install safetensors "
                          "(or the extra: pip install ei-snn-jax[pretrained])") from None
  return safetensors


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict | None]:
  """(state_dict, header metadata) of a ``model.safetensors`` file, as numpy arrays."""
  st = _safetensors()
  path = pathlib.Path(path)
  try:
    with st.safe_open(str(path), framework="np") as f:
      metadata = f.metadata()
      state_dict = {key: f.get_tensor(key) for key in f.keys()}
  except Exception as e:  # noqa: BLE001 - a corrupt or foreign file: one line
    raise PretrainedError(f"{path} is not a readable safetensors file: {type(e).__name__}: "
                          f"{' '.join(str(e).split())}") from e
  return state_dict, metadata


def read_reference_config(path: str | os.PathLike) -> dict:
  """The reference training config of a released model (its ``config.json``)."""
  path = pathlib.Path(path)
  try:
    value = json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise PretrainedError(f"{path} is not readable JSON: {' '.join(str(e).split())}") from e
  if not isinstance(value, dict):
    raise PretrainedError(f"{path} holds {type(value).__name__}, expected a JSON object")
  return value


def hub_name(name: str) -> tuple[str, str] | None:
  """(repo_id, folder) of a Hub name, or None: ``vwOvOwv/DeepEISNN/CIFAR10-VGG16`` (any
  ``owner/repo/folder``, optionally ``hf://``-prefixed) or a bare model card ``CIFAR10-VGG16``."""
  name = name.removeprefix("hf://").strip("/")
  parts = name.split("/")
  if len(parts) == 1 and name in MODEL_CARDS:
    return HUB_REPO, name
  if len(parts) == 3 and all(parts):
    return "/".join(parts[:2]), parts[2]
  return None


def download(repo_id: str, folder: str,
             cache_dir: str | os.PathLike | None = None) -> tuple[pathlib.Path, pathlib.Path]:
  """(model.safetensors, config.json) of ``repo_id``/``folder`` from the Hugging Face Hub (needs
  ``huggingface_hub`` and the network; files are cached by huggingface_hub)."""
  try:
    import huggingface_hub
  except ImportError:
    raise PretrainedError(f"{repo_id}/{folder} is not a folder here, and loading it from the "
                          "Hugging Face Hub needs huggingface_hub: pip install huggingface_hub "
                          "(online), or download the folder and pass its path") from None
  try:
    files = [pathlib.Path(huggingface_hub.hf_hub_download(
        repo_id=repo_id, filename=name, subfolder=folder, cache_dir=cache_dir))
        for name in (WEIGHTS_FILE, CONFIG_FILE)]
  except Exception as e:  # noqa: BLE001 - offline, unknown repo or folder: one line
    message = " ".join(str(e).split())[:300]
    raise PretrainedError(f"downloading {repo_id}/{folder} from the Hugging Face Hub failed "
                          f"({type(e).__name__}: {message}): check the name (model cards: "
                          f"{', '.join(MODEL_CARDS)}) and the network, or pass a local "
                          "folder") from e
  return files[0], files[1]


def _locate(name_or_dir: str | os.PathLike,
            cache_dir: str | os.PathLike | None) -> tuple[str, pathlib.Path, pathlib.Path]:
  """(name, weights file, config file) of a folder, a model.safetensors path or a Hub name."""
  path = pathlib.Path(name_or_dir).expanduser()
  if path.is_file() and path.suffix == ".safetensors":
    path = path.parent
  if path.is_dir():
    weights, config = path / WEIGHTS_FILE, path / CONFIG_FILE
    for f in (weights, config):
      if not f.is_file():
        raise PretrainedError(f"{path} has no {f.name}: a released model is a folder with "
                              f"{WEIGHTS_FILE} and {CONFIG_FILE}")
    return path.resolve().name, weights, config
  hub = hub_name(str(name_or_dir))
  if hub is None:
    raise PretrainedError(f"{name_or_dir} is neither a folder with {WEIGHTS_FILE} + "
                          f"{CONFIG_FILE} nor a Hub name like {HUB_REPO}/CIFAR10-VGG16 (model "
                          f"cards: {', '.join(MODEL_CARDS)})")
  weights, config = download(*hub, cache_dir=cache_dir)
  return hub[1], weights, config


def load_pretrained(name_or_dir: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
                    check_model: bool = True) -> Pretrained:
  """Import a released model: a folder (or its model.safetensors), else a Hub name such as
  ``vwOvOwv/DeepEISNN/CIFAR10-VGG16`` or ``CIFAR10-VGG16`` (needs ``huggingface_hub``, online).

  ``check_model``: also check the variables against the Flax model's own (``jax.eval_shape`` of
  its init). Raises ``PretrainedError`` (one line) for anything that does not fit.
  """
  name, weights, config = _locate(name_or_dir, cache_dir)
  reference_config = read_reference_config(config)
  config_fields(reference_config, str(config))  # a config.json problem names that file
  state_dict, metadata = read_state_dict(weights)
  variables, buffers = state_dict_to_variables(state_dict, reference_config, str(weights))
  pretrained = Pretrained(name, reference_config, variables, buffers, metadata)
  if check_model:
    check_against_model(pretrained)
  return pretrained


def _write_atomically(path: pathlib.Path, write) -> None:
  """Call ``write(tmp_path)`` and move the result to ``path`` (no half-written file)."""
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
  os.close(fd)
  try:
    write(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def save_pretrained(folder: str | os.PathLike, pretrained: Pretrained) -> pathlib.Path:
  """Export to the released format: ``folder/model.safetensors`` (the reference state_dict) and
  ``folder/config.json`` (``pretrained.reference_config``). Returns the folder.

  The inverse of ``load_pretrained``: the state_dict written equals the one read, bit for bit,
  and so does the file when the header metadata is kept (default ``{"format": "pt"}``, what
  PyTorch's safetensors writer records).
  """
  st = _safetensors()
  folder = pathlib.Path(folder).expanduser()
  folder.mkdir(parents=True, exist_ok=True)
  state_dict = variables_to_state_dict(pretrained.variables, pretrained.reference_config,
                                       pretrained.buffers)
  metadata = pretrained.metadata if pretrained.metadata is not None else {"format": "pt"}
  _write_atomically(folder / WEIGHTS_FILE,
                    lambda tmp: st.numpy.save_file(state_dict, tmp, metadata=metadata))
  text = json.dumps(pretrained.reference_config, indent=2) + "\n"
  _write_atomically(folder / CONFIG_FILE, lambda tmp: pathlib.Path(tmp).write_text(text))
  return folder
