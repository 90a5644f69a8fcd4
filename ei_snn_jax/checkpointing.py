"""Orbax checkpoints of a run: the latest N in ``workdir/checkpoints`` and the best in
``workdir/best``. Orbax writes each checkpoint to a temporary folder and renames it when complete,
so a checkpoint interrupted while being written is never listed, hence never restored.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp


class CheckpointMismatchError(ValueError):
  """The checkpoint does not fit the model/optimizer being restored (another architecture?)."""


def _manager(path: pathlib.Path, keep: int) -> ocp.CheckpointManager:
  return ocp.CheckpointManager(
      path.absolute(), options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))


def abstract_like(tree: Any, sharding) -> Any:
  """ShapeDtypeStructs of ``tree`` with ``sharding`` (the restore target)."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def restore_from(manager: ocp.CheckpointManager, step: int, template: Any, sharding,
                 where: str) -> tuple[Any, dict]:
  """Restore (state, meta) at ``step``; a structure/shape mismatch raises CheckpointMismatchError."""
  try:
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_like(template, sharding)),
        meta=ocp.args.JsonRestore()))
  except (ValueError, KeyError, TypeError) as e:
    first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
    raise CheckpointMismatchError(
        f"checkpoint {where} (step {step}) does not match this model/optimizer ({first}). "
        "It was written by another architecture or config: use a fresh --workdir.") from None
  return restored["state"], dict(restored["meta"])


class Checkpointer:
  """Latest-N and best checkpoints of one run (state + JSON metadata)."""

  def __init__(self, workdir: str | pathlib.Path, keep: int = 2):
    workdir = pathlib.Path(workdir)
    self.latest = _manager(workdir / "checkpoints", keep)
    self.best = _manager(workdir / "best", 1)

  def save(self, step: int, state: Any, meta: dict, best: bool = False) -> None:
    """Save asynchronously (and as the best checkpoint too when ``best``)."""
    args = lambda: ocp.args.Composite(state=ocp.args.StandardSave(state),
                                      meta=ocp.args.JsonSave(dict(meta)))
    self.latest.save(step, args=args(), force=True)
    if best:
      self.best.save(step, args=args(), force=True)

  def restore_latest(self, template: Any, sharding) -> tuple[Any, dict] | None:
    """(state, meta) of the latest complete checkpoint, or None if there is none."""
    step = self.latest.latest_step()
    if step is None:
      return None
    return restore_from(self.latest, step, template, sharding, str(self.latest.directory))

  def restore_best(self, template: Any, sharding) -> tuple[Any, dict] | None:
    """(state, meta) of the best checkpoint, or None."""
    step = self.best.latest_step()
    if step is None:
      return None
    return restore_from(self.best, step, template, sharding, str(self.best.directory))

  def wait(self) -> None:
    """Block until pending asynchronous saves are complete."""
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.wait()
    self.latest.close()
    self.best.close()
