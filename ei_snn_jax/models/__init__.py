"""The paper's models (spec §6) and ``create_model`` from a ``config.model`` ConfigDict."""

from __future__ import annotations

from typing import Any

import flax.linen as nn

from ei_snn_jax import layers, tree as tree_lib
from ei_snn_jax.models.common import ModelOptions, VARIANTS
from ei_snn_jax.models.mlp import MLP_WIDTHS, SpikingMLP, mlp_widths
from ei_snn_jax.models.resnet import (RESNET_STAGES, SEWBasicBlock, SEWResNet, block_layout,
                                      has_downsample, resnet18_widths)
from ei_snn_jax.models.vgg import VGG_LAYERS, SpikingVGG, scaled_layers

ARCHS = (tuple(sorted(VGG_LAYERS)) + tuple(RESNET_STAGES)
         + tuple(f"mlp{n}" for n in sorted(MLP_WIDTHS)))

def _reading_order(arch: str) -> tuple[int, int]:
  """vgg8 < vgg11 < ... < resnet18 < mlp2 < ...: the order messages list the archs in."""
  family = arch.rstrip("0123456789")
  return ("vgg", "resnet", "mlp").index(family), int(arch[len(family):])


# The config options this package owns: dotted field -> (default, allowed values or range,
# meaning). ``training.config.base_config`` is assembled from these (docs/options.md).
MAX_T = 1024            # every time step's activations are kept for the backward pass
MAX_UNROLLED_T = 64     # model.scan_unroll=0 writes every step out: compile time
CONFIG_OPTIONS = {
    "model.arch": ("vgg16", tuple(sorted(ARCHS, key=_reading_order)), "architecture"),
    "model.variant": ("ei", VARIANTS, "model variant"),
    "model.T": (4, f">= 1 and <= {MAX_T}", "time steps"),
    "model.width_multiplier": (1.0, "> 0", "scales every channel count (1 = the paper's)"),
    "model.dropout": (0.0, "in [0, 1)", "dropout after each E-I/DANN conv layer of a VGG"),
    "model.scan_unroll": (0, ">= 0", "lax.scan unrolling over T (0 = fully unrolled)"),
    "model.static_input_once": (True, None, "compute the first layer once for static images"),
}


def check_config(cfg, problems: list[str]) -> None:
  """Append the rules across fields of ``cfg.model`` to ``problems`` (training.config)."""
  m = cfg.model
  if m.arch.startswith("mlp") and m.variant not in ("ei", "bn"):
    problems.append(f"model.arch={m.arch!r} has variants ei and bn, not {m.variant!r}: set "
                    f"model.variant to ei or bn")
  if MAX_UNROLLED_T < m.T <= MAX_T and m.scan_unroll == 0:
    problems.append(f"model.T={m.T} with model.scan_unroll=0 (fully unrolled) compiles {m.T} "
                    f"copies of the network (minutes to hours): set model.scan_unroll=1 (a "
                    f"rolled scan; 2-8 trade compile time for speed) or model.T<={MAX_UNROLLED_T}")
  if m.variant == "ei" and m.width_multiplier > 0 and m.ei_ratio >= 1:
    base = 100 if m.arch in ("mlp8", "mlp12", "mlp16") else (
        300 if m.arch in ("mlp4", "mlp6") else 500 if m.arch == "mlp2" else 64)
    narrowest = max(4, int(round(base * m.width_multiplier)))  # narrowest layer
    if narrowest // m.ei_ratio < 1:
      problems.append(f"model.ei_ratio={m.ei_ratio} leaves no inhibitory unit in the "
                      f"{narrowest}-unit narrowest layer (model.width_multiplier="
                      f"{m.width_multiplier}): raise the width or lower the ratio")

__all__ = ["ARCHS", "VARIANTS", "ModelOptions", "SpikingVGG", "SEWResNet", "SEWBasicBlock",
           "SpikingMLP", "create_model", "model_options", "VGG_LAYERS", "RESNET_STAGES",
           "MLP_WIDTHS", "mlp_widths", "scaled_layers",
           "resnet18_widths", "block_layout", "has_downsample", "check_ei_init"]


def model_options(model_cfg: Any) -> ModelOptions:
  """``ModelOptions`` from a ``config.model`` ConfigDict (see configs/common.py)."""
  conv_dtype = None if model_cfg.conv_dtype in (None, "float32") else model_cfg.conv_dtype
  unroll = True if int(model_cfg.scan_unroll) == 0 else int(model_cfg.scan_unroll)
  return ModelOptions(
      variant=model_cfg.variant,
      T=int(model_cfg.T),
      ei=layers.EIOptions(ei_ratio=int(model_cfg.ei_ratio), ei_init=bool(model_cfg.ei_init),
                          stabilization=model_cfg.ei_stabilization, ste=bool(model_cfg.ei_ste),
                          scale_wei_grad=bool(model_cfg.ei_scale_wei_grad),
                          conv_dtype=conv_dtype),
      neuron=layers.NeuronOptions(tau=float(model_cfg.tau), threshold=float(model_cfg.threshold),
                                  surrogate=model_cfg.surrogate,
                                  alpha=float(model_cfg.surrogate_alpha), unroll=unroll),
      dropout=float(model_cfg.dropout),
      static_input_once=bool(model_cfg.static_input_once),
  )


def create_model(model_cfg: Any, num_classes: int) -> nn.Module:
  """Build the model a config describes: ``model_cfg`` is ``config.model`` (configs/common.py).

  Any number of classes >= 1: an E-I head has max(1, num_classes // ei_ratio) inhibitory units
  (``layers.inhibitory_units``; 2 for 10 classes and 25 for 100, as the paper's)."""
  if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
    raise layers.LayerError(f"num_classes={num_classes!r} must be an integer >= 1")
  options = model_options(model_cfg)
  arch = model_cfg.arch
  width = float(model_cfg.width_multiplier)
  if arch in VGG_LAYERS:
    return SpikingVGG(scaled_layers(arch, width), num_classes, options)
  if arch.startswith("mlp") and arch[3:].isdigit() and int(arch[3:]) in MLP_WIDTHS:
    return SpikingMLP(mlp_widths(int(arch[3:]), width), num_classes, options)
  if arch in RESNET_STAGES:
    return SEWResNet(RESNET_STAGES[arch], num_classes, options, widths=resnet18_widths(width))
  raise ValueError(f"unknown arch {arch!r}; choose one of {ARCHS}")


def check_ei_init(variables: Any) -> None:
  """Verify the E-I Init statistics recorded by ``model.init`` (works after a jitted init, and
  on variables of layers stacked by ``nn.scan`` or of a vmapped ``init``: each copy is checked).

  Raises ``ei_init.EIInitError`` naming the first layer (``layer[i]`` for copy i of a stacked
  one) whose input was all zero or had a negative mean (E_x <= 0, so g_I = inf or < 0) or was
  non-finite.
  """
  import jax
  import numpy as np
  from ei_snn_jax.core import ei_init

  stats = variables.get("ei_init_stats", {})
  for path, leaf in jax.tree_util.tree_flatten_with_path(stats)[0]:
    names = tree_lib.path_names(path)        # (..., "ei", "input", "mean")
    if names[-1] != "mean":
      continue
    node = stats
    for n in names[:-1]:
      node = node[n]
    ei_init.check_statistics(ei_init.InputStatistics(
        np.asarray(node["mean"]), np.asarray(node["var"]), np.asarray(node["mean_sq"])),
        tree_lib.layer_path(names[:-2]))
