"""Released checkpoints as runs of this project (spec §8.2, §12), and runs in the released format.

``models.pretrained`` reads and writes the authors' files (``model.safetensors`` + ``config.json``)
and gives a released model's config as dotted fields; this module (above ``models`` in the import
order) turns them into a config of this project and back:

* ``pretrained_config(pretrained)``: ``base_config()`` + the released model's fields (data.name,
  model.arch/variant/T/..., the training recipe of its config.json).
* ``evaluation_state(exp, pretrained)``: the ``TrainState`` that ``train.evaluate`` takes, after
  checking that the experiment's data fit the model (``check_data``).
* ``reference_config(config)`` / ``pretrained_from_run(config, variables)``: a run of this project
  as a released model, for ``models.pretrained.save_pretrained`` (``experiments.export``), by
  the same tables the import reads.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections

from ei_snn_jax.models import pretrained as pretrained_lib
from ei_snn_jax.data import registry as data_registry
from ei_snn_jax.models.pretrained import Pretrained, PretrainedError
from ei_snn_jax.training import config as config_lib, train

__all__ = ["pretrained_config", "check_data", "evaluation_state", "reference_config",
           "pretrained_from_run", "Pretrained", "PretrainedError"]


def pretrained_config(pretrained: Pretrained,
                      overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """This project's config of a released model: ``base_config()`` with its
  ``config_fields`` set, then ``overrides`` ("data.path=/data/cifar10.npz", ...) applied."""
  cfg = config_lib.base_config()
  for key, value in pretrained.config_fields.items():
    *parents, leaf = key.split(".")
    node = cfg
    for part in parents:
      node = node[part]
    node[leaf] = value
  return config_lib.apply_overrides(cfg, overrides)


def check_data(config: ml_collections.ConfigDict, pretrained: Pretrained, dataset=None) -> None:
  """The test data of ``config`` fit the released model, else ``PretrainedError`` (one line).

  Without ``dataset`` only ``data.name`` is checked (a dataset this version reads); with the
  loaded ``data.Dataset`` also its classes and, for static images, the image shape.
  """
  name = config.data.name
  if name not in data_registry.dataset_names():
    shape = pretrained.input_shape(2)
    raise PretrainedError(
        f"{pretrained.name} was trained on {pretrained.reference_config.get('dataset')} "
        f"(data.name={name!r}), which this version of ei_snn_jax does not read (data.name: "
        f"{', '.join(data_registry.dataset_names())}): its model and parameters import all the "
        f"same, evaluate them with Pretrained.predict on inputs like {shape}")
  if dataset is None:
    return
  if dataset.num_classes != pretrained.num_classes:
    raise PretrainedError(f"{pretrained.name} has {pretrained.num_classes} classes but "
                          f"data.name={name!r} has {dataset.num_classes}: evaluate it on "
                          f"data.name={pretrained.dataset.name!r}")
  frame = tuple(dataset.x_test.shape[1:])
  if not pretrained.dataset.sequence and frame != pretrained.dataset.frame_shape:
    raise PretrainedError(f"{pretrained.name} takes {pretrained.dataset.frame_shape} images but "
                          f"data.name={name!r} has {frame}: evaluate it on "
                          f"data.name={pretrained.dataset.name!r}")


def evaluation_state(exp: Any, pretrained: Pretrained) -> Any:
  """The ``train.TrainState`` of a released model for ``train.evaluate(exp, state)``: its
  variables with Dale's projection on what the layers declare sign-constrained (the reference
  clamps at every forward, spec §4), on the experiment's devices; no optimizer state. Checks the
  data first (``check_data``)."""
  check_data(exp.config, pretrained, exp.dataset)
  if exp.num_replicas != 1:
    raise PretrainedError("a released model is one network: set train.num_replicas=1")
  state = train.TrainState(step=jnp.zeros((), jnp.int32),
                           params=pretrained.model_variables()["params"],
                           batch_stats=pretrained.variables.get("batch_stats", {}),
                           opt_state=None, sums={})
  return jax.device_put(state, exp.replicated)


def reference_config(config: ml_collections.ConfigDict, dataset: str | None = None) -> dict:
  """A run's config as a released model's ``config.json`` (the reference's training YAML):
  ``models.pretrained.reference_config_of`` of its fields, the one table import reads too.

  ``dataset``: the reference's dataset name ("CIFAR10", ...); default from ``data.name`` (which
  must be one the reference has: not "synthetic"). Raises ``PretrainedError`` for a model the
  format cannot express (DANN or the MLP, a stabilization other than "adaptive", a surrogate
  other than sigmoid/atan at spikingjelly's alpha). A width other than 1 is written as
  ``width_multiplier``, a key only this project reads.
  """
  fields = {}
  for field in pretrained_lib.exported_fields():
    node = config
    for part in field.split("."):
      node = node[part]
    fields[field] = node
  return pretrained_lib.reference_config_of(fields, dataset)


def pretrained_from_run(config: ml_collections.ConfigDict, variables: Mapping[str, Any],
                        name: str | None = None, dataset: str | None = None,
                        num_batches_tracked: int = 0) -> Pretrained:
  """A run of this project (its config and {"params", "batch_stats"}) as a released model, for
  ``models.pretrained.save_pretrained``. BatchNorm's ``num_batches_tracked`` (no Flax
  counterpart) is written as ``num_batches_tracked`` (e.g. the run's step)."""
  ref = reference_config(config, dataset)
  variables = {k: jax.device_get(v) for k, v in variables.items()
               if k in ("params", "batch_stats") and v}
  state_dict = pretrained_lib.variables_to_state_dict(variables, ref,
                                                      num_batches_tracked=num_batches_tracked)
  variables, buffers = pretrained_lib.state_dict_to_variables(state_dict, ref)
  name = name or f"{ref['dataset']}-{ref['arch']}{ref['num_layers']}"
  return Pretrained(name, ref, variables, buffers, {"format": "pt"})
