"""The method as pure JAX functions (no Flax): what every layer, model and trainer builds on.

* ``neurons``: LIF dynamics and surrogate spike functions (spec §5).
* ``circuit``: the E-I currents, subtractive and divisive inhibition (spec §1.2–1.3).
* ``ei_prop``: E-I Prop's derivative rules (``custom_jvp``: forward and reverse mode), adaptive
  stabilisation + STE, W_EI gradient scaling (§3).
* ``ei_init``: E-I Init from input statistics (spec §2, Eq. 53/54).
* ``dale``: Dale's law as a projection onto non-negative weights (spec §4).
"""
