"""What each parameter is, as the layers declare it: sign-constrained, weight-decayed, unused.

Dale's law (spec §4) constrains the E-I and DANN weights and gains to be >= 0; coupled L2 weight
decay (spec §7.3) applies to every parameter but the unused ones and a few that are not weights
(a LIF's learnable time constant and threshold); the output layer's g_I, g_E and b_E (spec §1.3,
§11.3) exist only so that parameter counts equal the reference and are never used. Which of these
holds for a parameter is a property of the *layer* that owns it (an ``EIHead`` wherever it sits
and whatever its name), not of its path: every layer of ``ei_snn_jax.layers`` answers
``parameter_roles()`` with a ``ParamRole`` per parameter name, and ``parameter_roles(model, x)``
collects them for a whole model, the library's or a user's, from one abstract ``model.init``
(``jax.eval_shape``: no computation, no E-I Init, nothing stored in the parameters, whose tree
is unchanged). Parameters of other layers (``flax.linen.Dense``, ``BatchNorm``, ...) get the
default role: unconstrained and decayed.

These declarations are the one source of what Dale's projection clamps (``core.dale``), which
parameters the optimizer decays (``optim.make_optimizer``) and what an imported checkpoint is
projected on (``models.pretrained``); none of them lists parameter names. A new layer only
declares ``parameter_roles``. (``optim.library_masks`` applies the library layers' declarations
to a parameter tree without its model, the default where no mask is passed.)

  masks = roles.parameter_masks(model, images)          # any Linen model, any sample batch
  tx, _ = optim.make_optimizer(..., decay_mask=masks.weight_decay)
  params = dale.project_nonnegative(optax.apply_updates(params, updates), masks.sign_constrained)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import flax.linen as nn
import jax

# The name of the method a layer implements to declare its parameters' roles.
ROLES_METHOD = "parameter_roles"


@dataclasses.dataclass(frozen=True)
class ParamRole:
  """The role of one parameter.

  Attributes:
    sign_constrained: Dale's law: projected onto p >= 0 after every update (spec §4).
    decayed: coupled L2 weight decay g <- g + wd * p applies (spec §7.3).
    unused: never part of the forward pass (the output layer's g_I, g_E, b_E, spec §1.3); such
      a parameter is also not decayed, so that it keeps its initial value.
  """
  sign_constrained: bool = False
  decayed: bool = True
  unused: bool = False


DEFAULT_ROLE = ParamRole()
NOT_DECAYED = ParamRole(decayed=False)


class ParameterMasks(NamedTuple):
  """Three pytrees of bools shaped like the model's ``params`` (``optax.masked`` masks)."""
  sign_constrained: Any   # True: Dale's law, p >= 0 (``dale.project_nonnegative(p, mask)``)
  weight_decay: Any       # True: coupled L2 weight decay (``optim.make_optimizer``)
  unused: Any             # True: never used in the forward pass


def _module_roles(module: nn.Module) -> dict[str, ParamRole]:
  """{parameter name: role} declared by ``module`` ({} for a layer that declares none)."""
  declare = getattr(module, ROLES_METHOD, None)
  return dict(declare()) if callable(declare) else {}


def parameter_roles(model: nn.Module, *args, method: str | Callable | None = None,
                    **kwargs) -> Any:
  """A pytree shaped like ``model.init(key, *args, **kwargs)["params"]`` of ``ParamRole``.

  Runs ``model.init`` abstractly (``jax.eval_shape``; ``args`` may be arrays or
  ``jax.ShapeDtypeStruct``) and asks every module that owns parameters for its roles.
  """
  owners: dict[tuple[str, ...], nn.Module] = {}

  def record(next_fun, call_args, call_kwargs, context):
    owners.setdefault(tuple(context.module.path), context.module)
    return next_fun(*call_args, **call_kwargs)

  def init(*a):
    return model.init(jax.random.key(0), *a, method=method, **kwargs)

  with nn.intercept_methods(record):
    shapes = jax.eval_shape(init, *args)
  params = shapes.get("params", {})

  def role(path, _):
    names = tuple(str(getattr(k, "key", k)) for k in path)
    owner = owners.get(names[:-1])
    return _module_roles(owner).get(names[-1], DEFAULT_ROLE) if owner is not None \
        else DEFAULT_ROLE

  return jax.tree_util.tree_map_with_path(role, params)


def masks_from_roles(roles: Any) -> ParameterMasks:
  """The three bool masks of a ``parameter_roles`` tree."""
  is_role = lambda x: isinstance(x, ParamRole)
  pick = lambda f: jax.tree.map(f, roles, is_leaf=is_role)
  return ParameterMasks(sign_constrained=pick(lambda r: r.sign_constrained),
                        weight_decay=pick(lambda r: r.decayed and not r.unused),
                        unused=pick(lambda r: r.unused))


def parameter_masks(model: nn.Module, *args, method: str | Callable | None = None,
                    **kwargs) -> ParameterMasks:
  """``ParameterMasks`` of ``model`` from the roles its layers declare (``parameter_roles``):
  which parameters Dale's law constrains, which are weight-decayed and which are unused."""
  return masks_from_roles(parameter_roles(model, *args, method=method, **kwargs))
