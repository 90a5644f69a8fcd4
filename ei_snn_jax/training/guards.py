"""Guards that stop a run training silently wrong (issue 24).

* ``check_divergence``: a finite loss that has grown by orders of magnitude (e.g. the BN variant
  with a far too large learning rate: 2.3 -> 4e11 while every value stays finite, so the NaN
  guard never fires) stops the run with one line.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

from ei_snn_jax import errors

# A mean cross-entropy this many times that of a chance-level model (log C) is divergence: the
# logits of the true class lag the others by hundreds to thousands (measured: a healthy run never
# exceeds ~5x, a diverged one passes 1e3x within a few windows).
DIVERGENCE_FACTOR = 1000.0


class DivergedError(errors.UserError, FloatingPointError):
  """The training loss grew by orders of magnitude although every value stayed finite."""


def check_divergence(records: Iterable[dict], num_classes: int, step: int, lr: float,
                     before_stop: Callable[[], None] = lambda: None,
                     factor: float = DIVERGENCE_FACTOR) -> None:
  """Raise ``DivergedError`` if a logging window's mean ``loss`` (``records``: one per replica)
  exceeds ``factor`` times log(num_classes), the loss of a chance-level classifier;
  ``before_stop`` runs first (the trainer waits for its pending checkpoint saves)."""
  chance = math.log(max(int(num_classes), 2))
  for replica, record in enumerate(records):
    loss = float(record.get("loss", 0.0))
    if loss > factor * chance:
      before_stop()
      who = f" (replica {replica})" if replica else ""
      raise DivergedError(
          f"training diverged by step {step}{who}: the mean training loss is {loss:.3g}, over "
          f"{factor:g}x the {chance:.2f} of a chance-level {num_classes}-class model, although "
          f"every value stayed finite: lower optim.lr (now {lr:g}) and start a new --workdir")
