"""ei_snn_jax: deep normalization-free spiking neural networks with lateral inhibition (E-I SNNs).

The public surface for composing E-I cells in your own Flax model, one import away::

  import ei_snn_jax as ei

  class Net(nn.Module):                       # any Linen model of the library's layers
    @nn.compact
    def __call__(self, x):                    # x: (B*T, H, W, C), merged axis
      x = ei.LIF(4)(ei.EIConv(32, kernel_size=(3, 3))(x))
      return ei.EIHead(10)(x.mean(axis=(1, 2)))

  variables = model.init(key, images)                 # E-I Init on this batch (spec §2)
  ei.check_ei_init(variables)                         # also after a jitted init
  masks = ei.parameter_masks(model, images)           # Dale's law, weight decay, unused
  tx, schedule = ei.make_optimizer(lr, init_lr, warmup, total, wd, decay_mask=masks)
  params = ei.project_nonnegative(params, masks.sign_constrained)   # after every update
  stats = ei.probe(model, variables, images)          # per-layer currents and firing rates
  ei.find_dead_layers(model, variables, images)       # dead and mostly dead E-I layers
  ei.streaming.run(ei.streaming.one_step_model(model), variables, frames)

Names exported here (kept small and stable; everything else stays in its module):

* layers and their options (spec §1, §5): ``EIConv``, ``EIDense``, ``EIHead``, ``LIF``,
  ``EIOptions``, ``NeuronOptions``, ``LayerError``;
* E-I Init (spec §2): ``check_ei_init``, ``EIInitError``;
* Dale's law and parameter roles (spec §4, §7.3): ``project_nonnegative``, ``dale_projection``,
  ``parameter_masks``, ``ParameterMasks``;
* the optimizer for any model (spec §7.2-7.3): ``make_optimizer``, ``learning_rate_schedule``;
* analysis: ``probe`` (per-layer statistics), ``find_dead_layers`` (layer health);
* modules: ``layers``, ``streaming`` (one time step at a time), ``models`` (the paper's
  networks), ``roles``, ``dale``, ``optim``, ``probes``, ``health``;
* ``__version__``.
"""

import importlib
from typing import Any

__version__ = "0.2.0"   # = pyproject.toml's version (tests/test_public_api.py checks)

# Each public name and the module that defines it. They are imported on first use (PEP 562), so
# ``import ei_snn_jax.training.config`` (every command-line tool's config handling) and
# ``import ei_snn_jax`` itself stay free of JAX and Flax until a name is used.
_NAMES = {
    **dict.fromkeys(("EIConv", "EIDense", "EIHead", "LIF", "EIOptions", "NeuronOptions",
                     "LayerError"), "ei_snn_jax.layers"),
    "EIInitError": "ei_snn_jax.core.ei_init",
    "check_ei_init": "ei_snn_jax.models",
    "project_nonnegative": "ei_snn_jax.core.dale",
    "dale_projection": "ei_snn_jax.core.dale",
    "parameter_masks": "ei_snn_jax.roles",
    "ParameterMasks": "ei_snn_jax.roles",
    "make_optimizer": "ei_snn_jax.optim",
    "learning_rate_schedule": "ei_snn_jax.optim",
    "probe": "ei_snn_jax.analysis.probes",
    "find_dead_layers": "ei_snn_jax.analysis.health",
}
_MODULES = {"layers": "ei_snn_jax.layers", "streaming": "ei_snn_jax.models.streaming",
            "models": "ei_snn_jax.models", "roles": "ei_snn_jax.roles",
            "dale": "ei_snn_jax.core.dale", "optim": "ei_snn_jax.optim",
            "probes": "ei_snn_jax.analysis.probes", "health": "ei_snn_jax.analysis.health"}


def __getattr__(name: str) -> Any:
  """Import a public name (or module) of ``__all__`` on first use."""
  if name in _MODULES:
    value = importlib.import_module(_MODULES[name])
  elif name in _NAMES:
    value = getattr(importlib.import_module(_NAMES[name]), name)
  else:
    raise AttributeError(f"module 'ei_snn_jax' has no attribute {name!r}")
  globals()[name] = value
  return value


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(__all__))


__all__ = [
    "__version__",
    # layers and their options
    "EIConv", "EIDense", "EIHead", "LIF", "EIOptions", "NeuronOptions", "LayerError",
    # E-I Init
    "check_ei_init", "EIInitError",
    # Dale's law and parameter roles
    "project_nonnegative", "dale_projection", "parameter_masks", "ParameterMasks",
    # the optimizer for any model
    "make_optimizer", "learning_rate_schedule",
    # analysis
    "probe", "find_dead_layers",
    # modules
    "layers", "streaming", "models", "roles", "dale", "optim", "probes", "health",
]
