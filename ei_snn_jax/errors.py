"""User-facing errors: every expected failure ends with one line naming the problem and the fix.

``clean_errors`` is the context manager the command-line tools wrap their work in: the
project's own error types (bad config, bad data, E-I Init on an all-zero input, a checkpoint of
another model, a non-finite training step) are printed as ``error: <message>`` on stderr with
exit status 2 instead of a traceback from deep inside JAX. Anything else propagates unchanged:
that is a bug and its traceback is wanted.
"""

from __future__ import annotations

import contextlib
import sys

_status = 0


def user_error_types() -> tuple[type[BaseException], ...]:
  """The exception types that describe a user mistake (not a bug)."""
  from ei_snn_jax import checkpointing, config, data, ei_init, train
  return (config.ConfigError, data.DataError, ei_init.EIInitError,
          checkpointing.CheckpointMismatchError, train.NonFiniteError)


@contextlib.contextmanager
def clean_errors():
  """Print user errors as one line on stderr and record exit status 2 (see ``exit_status``)."""
  global _status
  _status = 0
  try:
    yield
  except Exception as e:  # noqa: BLE001 - filtered below
    if not isinstance(e, user_error_types()):
      raise
    message = " ".join(str(e).split())
    print(f"error: {message}", file=sys.stderr, flush=True)
    _status = 2


def exit_status() -> int:
  """Status of the last ``clean_errors`` block: 0, or 2 after a user error."""
  return _status
