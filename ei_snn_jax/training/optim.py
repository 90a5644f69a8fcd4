"""The reference optimizer (spec §7.2-7.3): moved to ``ei_snn_jax.optim`` (it serves any model,
not only the trainer); this name stays for existing imports."""

from ei_snn_jax.optim import (MOMENTUM_FIRST_STEPS, ReferenceMomentumState, learning_rate_schedule,
                              library_masks, make_optimizer, reference_momentum,
                              unused_parameter_mask, weight_decay_mask)

__all__ = ["MOMENTUM_FIRST_STEPS", "ReferenceMomentumState", "learning_rate_schedule",
           "library_masks", "make_optimizer", "reference_momentum", "unused_parameter_mask",
           "weight_decay_mask"]
