"""ei_snn_jax: deep normalization-free spiking neural networks with lateral inhibition (E-I SNNs).

The public surface for composing E-I cells in your own Flax model, one import away::

  import ei_snn_jax as ei

  class Net(nn.Module):                       # any Linen model of the library's layers
    @nn.compact
    def __call__(self, x):                    # x: (T*B, H, W, C), time-major merged axis
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

from ei_snn_jax import layers, optim, roles
from ei_snn_jax.analysis import health, probes
from ei_snn_jax.analysis.health import find_dead_layers
from ei_snn_jax.analysis.probes import probe
from ei_snn_jax.core import dale
from ei_snn_jax.core.dale import dale_projection, project_nonnegative
from ei_snn_jax.core.ei_init import EIInitError
from ei_snn_jax.layers import (EIConv, EIDense, EIHead, EIOptions, LayerError, LIF,
                               NeuronOptions)
from ei_snn_jax import models
from ei_snn_jax.models import check_ei_init, streaming
from ei_snn_jax.optim import learning_rate_schedule, make_optimizer
from ei_snn_jax.roles import ParameterMasks, parameter_masks

__version__ = "0.2.0"   # = pyproject.toml's version (tests/test_public_api.py checks)

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
