"""User-facing errors: every expected failure ends with one line naming the problem and the fix.

``UserError`` is the base of the project's own error types, each defined where it arises (a bad
config: ``training.config.ConfigError``; bad data: ``data.DataError``; E-I Init on an all-zero
or negative-mean input: ``core.ei_init.EIInitError``; a layer built or called in a way it cannot
work (options, input shapes): ``layers.LayerError``; a checkpoint of another model:
``training.checkpointing.CheckpointMismatchError``; a released checkpoint that does not fit its
model: ``models.pretrained.PretrainedError``; a non-finite training step:
``training.train.NonFiniteError``). ``clean_errors`` is the context manager the command-line tools
wrap their work in: a ``UserError`` is printed as ``error: <message>`` on stderr with exit status
2 instead of a traceback from deep inside JAX. Anything else propagates unchanged: that is a bug
and its traceback is wanted. This module imports nothing of the project (the bottom layer).
"""

from __future__ import annotations

import contextlib
import sys

_status = 0


class UserError(Exception):
  """A problem the user can fix (config, data, workdir, ...); its message is one line with the fix.

  ``exit_code`` is the status a command-line tool ends with (2; a subclass may set another, e.g.
  128 + signal number for a run stopped by a signal).
  """

  exit_code = 2


@contextlib.contextmanager
def clean_errors():
  """Print a ``UserError`` as one line on stderr and record its exit status (see ``exit_status``)."""
  global _status
  _status = 0
  try:
    yield
  except UserError as e:
    message = " ".join(str(e).split())
    print(f"error: {message}", file=sys.stderr, flush=True)
    _status = e.exit_code


def exit_status() -> int:
  """Status of the last ``clean_errors`` block: 0, or the user error's ``exit_code`` (2)."""
  return _status
