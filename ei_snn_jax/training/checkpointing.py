"""Orbax checkpoints of a run: the latest N in ``workdir/checkpoints`` and the best in
``workdir/best``.

Atomicity: orbax writes each checkpoint to ``<step>.orbax-checkpoint-tmp-<timestamp>/`` and
renames it to ``<step>/`` only when complete, so a checkpoint interrupted while being written (a
killed or pre-empted job) is never listed, hence never restored; the next training run deletes
such leftovers when it opens the folder (``cleanup_unfinished``).

Restore safety: before reading any array, the checkpoint's tree of array shapes and dtypes
(orbax metadata) is compared with the restore target, so that a checkpoint of another
architecture or optimizer raises ``CheckpointMismatchError`` naming the first differing array,
instead of failing half-way through an asynchronous read. A checkpoint whose files are damaged
(unreadable metadata, truncated arrays, broken JSON) is *not* a mismatch: ``restore_latest``
says which one and why, and falls back to the newest readable one.

Resume (``Checkpointer.resume``, the training run only): the newest readable checkpoint of
``checkpoints/`` *and* ``best/`` (a best checkpoint is a complete state of its step too, so a run
whose ``checkpoints/`` is gone continues from its best); a damaged one is never deleted but moved
aside to ``workdir/damaged/<folder>-<step>-<why>`` with one line naming it, so that the next
save of that step cannot collide with it.

Latest and best stay consistent under a kill at any point (``reconcile``): the metadata of every
checkpoint names the best step (``best_step``); a best checkpoint that was never written (a kill
between the two saves) is written from the restored state, which is that best state. A best
checkpoint is only ever replaced by a better one (orbax's ``max_to_keep=1`` on a later save).

Out of space: every save and wait raises ``runfolder.WorkdirError`` (one line naming the folder)
on a full disk: before a save when the free space is visibly too small, or when orbax's write
fails. The half-written checkpoint is a temp folder that the next run deletes, so the run folder
stays resumable from its last complete checkpoint. Orbax's writer leaves the sibling writes of a
failed one as asyncio tasks that nobody awaits; when garbage collection later finds them, asyncio
would log "Task exception was never retrieved" with a traceback, at a random point after the one
line (and on Python 3.11 formatting that traceback inside another ``ast.parse`` breaks it:
``SystemError: AST constructor recursion depth mismatch``). ``OrphanedDiskFullTasks`` drops
exactly those records.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import shutil
import pathlib
import sys
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from ei_snn_jax import errors, tree as tree_lib
from ei_snn_jax.training import runfolder


class CheckpointMismatchError(errors.UserError, ValueError):
  """The checkpoint does not fit the model/optimizer being restored (another architecture?)."""


class CheckpointCorruptError(errors.UserError, ValueError):
  """A checkpoint's files cannot be read (truncated, missing or damaged).

  ``why``: a short slug of the cause (``unreadable-metadata``, ``unreadable-arrays``,
  ``bad-meta``), used in the name of the folder the damaged checkpoint is moved to.
  """

  def __init__(self, message: str, why: str = "damaged"):
    super().__init__(message)
    self.why = why


def move_aside(folder: pathlib.Path, step: int, why: str) -> pathlib.Path:
  """Move checkpoint ``folder/step`` to ``folder/../damaged/<folder name>-<step>-<why>`` (a
  numbered suffix if taken) and return the new path; nothing is deleted."""
  target_dir = folder.parent / "damaged"
  target_dir.mkdir(exist_ok=True)
  target = target_dir / f"{folder.name}-{step}-{why}"
  n = 1
  while target.exists():
    n += 1
    target = target_dir / f"{folder.name}-{step}-{why}-{n}"
  (folder / str(step)).rename(target)
  return target


@contextlib.contextmanager
def disk_errors(folder: pathlib.Path):
  """Turn a full disk met by orbax (an OSError or a tensorstore RESOURCE_EXHAUSTED error,
  possibly from its background thread) inside the block into one ``runfolder.WorkdirError``."""
  try:
    yield
  except errors.UserError:
    raise
  except Exception as e:  # noqa: BLE001 - only a full disk is translated
    if not runfolder.is_out_of_space(e):
      raise
    raise runfolder.WorkdirError(runfolder.describe_os_error(
        OSError(errno.ENOSPC, "No space left on device"), folder)) from None


class OrphanedDiskFullTasks(logging.Filter):
  """Drop asyncio's "Task exception was never retrieved" records whose exception is a full disk.

  Such a task is one of orbax's writes that failed beside the one whose error ``disk_errors``
  already reported; any other asyncio record passes.
  """

  def filter(self, record: logging.LogRecord) -> bool:
    exc = record.exc_info[1] if record.exc_info else None
    return not (exc is not None and str(record.msg).startswith("Task exception was never retrieved")
                and runfolder.is_out_of_space(exc))


def _drop_orphaned_disk_full_tasks() -> None:
  """Install ``OrphanedDiskFullTasks`` on the asyncio logger once (a logger filter runs before
  any handler formats the record)."""
  asyncio_logger = logging.getLogger("asyncio")
  if not any(isinstance(f, OrphanedDiskFullTasks) for f in asyncio_logger.filters):
    asyncio_logger.addFilter(OrphanedDiskFullTasks())


def _nbytes(tree: Any) -> int:
  return sum(int(getattr(x, "nbytes", 0)) for x in jax.tree.leaves(tree))


@contextlib.contextmanager
def _quiet_absl(level: int = logging.ERROR):
  """Silence absl records below ``level`` inside the block (orbax announces every read-only
  manager, and logs an error per damaged checkpoint that ``Checkpointer.resume`` reports)."""
  absl_logger = logging.getLogger("absl")
  previous = absl_logger.level
  absl_logger.setLevel(level)
  try:
    yield
  finally:
    absl_logger.setLevel(previous)


def _manager(path: pathlib.Path, keep: int, cleanup: bool,
             read_only: bool = False) -> ocp.CheckpointManager:
  if read_only:
    with _quiet_absl():
      return ocp.CheckpointManager(path.absolute(), options=ocp.CheckpointManagerOptions(
          read_only=True, create=False, max_to_keep=None, save_interval_steps=0,
          cleanup_tmp_directories=False))
  with _quiet_absl(logging.CRITICAL):    # a damaged checkpoint: ``resume`` says it in one line
    return ocp.CheckpointManager(
        path.absolute(), options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, cleanup_tmp_directories=cleanup))


def abstract_like(tree: Any, sharding) -> Any:
  """ShapeDtypeStructs of ``tree`` with ``sharding`` (the restore target): one sharding for
  every leaf, or a prefix tree of them (``steps.state_sharding``)."""
  return jax.tree.map(
      lambda s, sub: jax.tree.map(
          lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), sub), sharding, tree)


def array_table(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
  """{"params.conv0.ei.w_ee": (shape, dtype name)} for every array leaf of ``tree``.

  Works on arrays, ShapeDtypeStructs and orbax's ``ArrayMetadata`` alike, so that a restore
  target and a checkpoint's metadata can be compared (dicts, dataclass fields, namedtuple fields
  and list/tuple positions all become dotted names, as orbax stores them).
  """
  table = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
      continue
    table[".".join(tree_lib.path_names(path))] = (tuple(leaf.shape), np.dtype(leaf.dtype).name)
  return table


def describe_mismatch(saved: dict, wanted: dict) -> str | None:
  """One line naming how ``saved`` (checkpoint) differs from ``wanted`` (model), or None.

  Parameters are reported before optimizer state (the same difference shows in both).
  """
  order = lambda name: (not name.startswith("params."), name)
  fmt = lambda entry: f"{entry[1]}{list(entry[0])}"
  missing = sorted((k for k in wanted if k not in saved), key=order)
  extra = sorted((k for k in saved if k not in wanted), key=order)
  changed = sorted((k for k in wanted if k in saved and saved[k] != wanted[k]), key=order)
  problems = []
  more = lambda items: f" (and {len(items) - 1} more)" if len(items) > 1 else ""
  if changed:
    k = changed[0]
    problems.append(f"{k} is {fmt(saved[k])} in the checkpoint but {fmt(wanted[k])} in this "
                    f"model{more(changed)}")
  if missing:
    problems.append(f"{missing[0]} is missing from the checkpoint{more(missing)}")
  if extra:
    problems.append(f"the checkpoint holds {extra[0]}, which this model lacks{more(extra)}")
  return "; ".join(problems) or None


def _host_copy(x: Any) -> Any:
  """A numpy copy of a fully addressable jax.Array; anything else unchanged (multi-host)."""
  if isinstance(x, jax.Array) and x.is_fully_addressable:
    return np.asarray(jax.device_get(x))
  return x


def _saved_table(manager: ocp.CheckpointManager, step: int) -> dict | None:
  """Array table of the ``state`` item of checkpoint ``step`` from its metadata (None if
  unreadable: the restore itself then reports any problem)."""
  state_dir = pathlib.Path(str(manager.directory)) / str(step) / "state"
  if not state_dir.is_dir():
    return None
  try:
    return array_table(ocp.StandardCheckpointHandler().metadata(state_dir))
  except Exception:  # noqa: BLE001 - metadata is only a pre-check
    return None


def restore_from(manager: ocp.CheckpointManager, step: int, template: Any, sharding,
                 where: str) -> tuple[Any, dict]:
  """Restore (state, meta) at ``step``.

  A checkpoint whose arrays (names, shapes, dtypes) differ from ``template`` raises
  ``CheckpointMismatchError`` before anything is read. One whose files cannot be read (no
  readable metadata, or a restore that fails although the metadata matched) raises
  ``CheckpointCorruptError``.
  """
  hint = ("It was written by another architecture or config: use a fresh --workdir (or the "
          "config that wrote it).")
  saved = _saved_table(manager, step)
  if saved is None:
    raise CheckpointCorruptError(f"checkpoint {where}/{step} is damaged (its array metadata "
                                 f"cannot be read)", "unreadable-metadata")
  problem = describe_mismatch(saved, array_table(template))
  if problem:
    raise CheckpointMismatchError(
        f"checkpoint {where} (step {step}) does not match this model/optimizer: {problem}. "
        f"{hint}")
  try:
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_like(template, sharding)),
        meta=ocp.args.JsonRestore()))
  except Exception as e:  # noqa: BLE001 - the metadata matched: the files are damaged
    first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
    raise CheckpointCorruptError(f"checkpoint {where}/{step} is damaged ({type(e).__name__}: "
                                 f"{first})", "unreadable-arrays") from None
  meta = restored["meta"]
  if not isinstance(meta, dict):
    raise CheckpointCorruptError(f"checkpoint {where}/{step} is damaged (its metadata is not a "
                                 f"JSON object)", "bad-meta")
  return restored["state"], dict(meta)


class Checkpointer:
  """Latest-N and best checkpoints of one run (state + JSON metadata).

  ``cleanup_unfinished``: delete the temp folders of checkpoints whose writing never finished
  (a killed run). Only the training process that owns the workdir may do this: a reader (e.g.
  evaluating a live run) would delete the checkpoint being written.
  ``read_only``: a reader that creates, saves and deletes nothing (e.g. ``experiments.analyze``
  on a run that may still be training).
  """

  def __init__(self, workdir: str | pathlib.Path, keep: int = 2, cleanup_unfinished: bool = False,
               read_only: bool = False):
    workdir = pathlib.Path(workdir)
    _drop_orphaned_disk_full_tasks()
    self.latest = _manager(workdir / "checkpoints", keep, cleanup_unfinished, read_only)
    self.best = _manager(workdir / "best", 1, cleanup_unfinished, read_only)

  def save(self, step: int, state: Any, meta: dict, best: bool = False) -> None:
    """Save asynchronously (and as the best checkpoint too when ``best``).

    Fully addressable arrays are copied to the host first (a blocking copy of the state, e.g.
    150 MB for VGG-16 with momentum): orbax then writes plain arrays instead of slicing one
    replica out of every device, which costs a compile per array and device (measured on the
    tiny test model: 0.3-1 s per save on 8 CPU devices, 0.07 s from the host).
    """
    state = jax.tree.map(_host_copy, state)
    args = lambda: ocp.args.Composite(state=ocp.args.StandardSave(state),
                                      meta=ocp.args.JsonSave(dict(meta)))
    self._check_space(self.latest, _nbytes(state) * (2 if best else 1))
    with disk_errors(self._dir(self.latest)):
      self.latest.save(step, args=args(), force=True)
    if best:
      with disk_errors(self._dir(self.best)):
        if jax.process_count() > 1:
          # Across hosts orbax names its barriers by step: two managers must not save one step
          # at the same time (measured: a deadlock on 2 processes without this wait).
          self.latest.wait_until_finished()
        self.best.save(step, args=args(), force=True)

  @staticmethod
  def _dir(manager: ocp.CheckpointManager) -> pathlib.Path:
    return pathlib.Path(str(manager.directory))

  def _check_space(self, manager: ocp.CheckpointManager, nbytes: int) -> None:
    """``runfolder.WorkdirError`` before a save that visibly cannot fit (the arrays plus 1 MiB
    of metadata): orbax would fail half-way in a background thread."""
    folder = self._dir(manager)
    try:
      free = shutil.disk_usage(folder).free
    except OSError:
      return
    if free < nbytes * 3 // 2 + (4 << 20):     # orbax's files take a little more than the arrays
      raise runfolder.WorkdirError(
          f"no space left on the device of {folder}: the next checkpoint needs about "
          f"{(nbytes * 3 // 2 >> 20) + 4} MiB, {free >> 10} KiB are free; free disk space (or use "
          f"another --workdir) and rerun the same command to continue from the last checkpoint")

  def latest_step(self) -> int | None:
    """Step of the latest complete checkpoint, or None."""
    return self.latest.latest_step()

  def steps(self) -> dict[int, list[str]]:
    """{step: where} of every complete checkpoint, in step order; ``where`` lists "latest"
    (``workdir/checkpoints``) and/or "best" (``workdir/best``)."""
    out: dict[int, list[str]] = {}
    for where, manager in (("latest", self.latest), ("best", self.best)):
      for step in manager.all_steps():
        out.setdefault(int(step), []).append(where)
    return dict(sorted(out.items()))

  def restore(self, step: int, template: Any, sharding,
              where: str = "latest") -> tuple[Any, dict]:
    """(state, meta) of checkpoint ``step`` in ``where`` ("latest" or "best", see ``steps``)."""
    manager = {"latest": self.latest, "best": self.best}[where]
    return restore_from(manager, step, template, sharding, str(manager.directory))

  def restore_latest(self, template: Any, sharding) -> tuple[Any, dict] | None:
    """(state, meta) of the newest readable checkpoint, or None if there is none.

    A damaged checkpoint is skipped with a warning naming it and why, falling back to the
    previous one; when every checkpoint is damaged, ``CheckpointCorruptError``.
    """
    steps = sorted(self.latest.all_steps(), reverse=True)
    damaged = []
    for step in steps:
      try:
        restored = restore_from(self.latest, step, template, sharding,
                                str(self.latest.directory))
      except CheckpointCorruptError as e:
        damaged.append(str(e))
        continue
      for message in damaged:
        print(f"warning: {message}; restoring step {step} instead", file=sys.stderr, flush=True)
      return restored
    if damaged:
      raise CheckpointCorruptError(
          f"no readable checkpoint in {self.latest.directory}: {damaged[0]}"
          f"{f' (and {len(damaged) - 1} more)' if len(damaged) > 1 else ''}; move the folder "
          f"away to start the run over")
    return None

  def restore_best(self, template: Any, sharding) -> tuple[Any, dict] | None:
    """(state, meta) of the best checkpoint, or None."""
    step = self.best.latest_step()
    return None if step is None else self.restore(step, template, sharding, "best")

  def resume(self, template: Any, sharding) -> tuple[Any, dict] | None:
    """(state, meta) of the newest readable checkpoint of ``checkpoints/`` and ``best/`` (the
    training run's restore), or None when there is none.

    A best checkpoint is a complete state of its step, so a run whose newer latest checkpoints
    are gone continues from it instead of discarding it. A damaged checkpoint is moved aside
    (``move_aside``; never deleted) with one line naming where, and the next newest is tried.
    """
    candidates = sorted([(s, "latest") for s in self.latest.all_steps()] +
                        [(s, "best") for s in self.best.all_steps()],
                        key=lambda c: (c[0], c[1] == "latest"), reverse=True)
    for step, where in candidates:
      manager = {"latest": self.latest, "best": self.best}[where]
      if step not in manager.all_steps():   # moved aside already
        continue
      try:
        with _quiet_absl(logging.CRITICAL):
          return restore_from(manager, step, template, sharding, str(manager.directory))
      except CheckpointCorruptError as e:
        moved = move_aside(self._dir(manager), step, e.why)
        with _quiet_absl(logging.CRITICAL):
          manager.reload()
        print(f"warning: {e}: moved aside to {moved} (nothing deleted); resuming from the "
              f"newest readable checkpoint", file=sys.stderr, flush=True)
    return None

  def reconcile(self, step: int, state: Any, meta: dict) -> None:
    """Make ``best/`` agree with the run restored at ``step`` (``meta`` its metadata).

    If ``meta["best_step"] == step`` but ``best/`` lacks that step (a kill between the latest
    and the best save), the restored state is saved as the best. Nothing is deleted: ``resume``
    restores the newest checkpoint of both folders, so no best checkpoint is newer than ``step``.
    """
    if step and meta.get("best_step") == step and self.best.latest_step() != step:
      self._check_space(self.best, _nbytes(state))
      with disk_errors(self._dir(self.best)):
        self.best.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(jax.tree.map(_host_copy, state)),
            meta=ocp.args.JsonSave(dict(meta))), force=True)
        self.best.wait_until_finished()

  def wait(self) -> None:
    """Block until pending asynchronous saves are complete."""
    with disk_errors(self._dir(self.latest).parent), _quiet_absl(logging.CRITICAL):
      self.latest.wait_until_finished()   # a failed save raises here (its log line is muted)
      self.best.wait_until_finished()

  def close(self) -> None:
    """Wait for pending saves, then release both managers."""
    try:
      self.wait()
    finally:
      with disk_errors(self._dir(self.latest).parent):
        self.latest.close()
        self.best.close()
