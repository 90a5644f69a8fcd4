"""The run folder's safety: one trainer per workdir, files replaced atomically, clean stops.

* ``write_atomic(path, text)``: write a sibling temporary file, fsync it, rename it over
  ``path`` and fsync the folder, so that a kill or a full disk leaves either the old file or the
  new one, never a torn or empty one.
* ``WorkdirLock``: an exclusive ``fcntl`` lock on ``workdir/.lock`` held while a trainer runs; a
  second trainer on the same workdir stops with one line instead of corrupting the first's
  checkpoints and metrics. The kernel drops the lock when the process dies, so a killed run
  never leaves a stale lock behind.
* ``StopSignals``: SIGTERM (what schedulers send before pre-emption) and SIGINT (Ctrl-C) only
  set a flag while training; the loop finishes its step, saves a checkpoint and raises
  ``TrainingInterrupted`` (exit status 128 + signal number, like a process killed by it).
"""

from __future__ import annotations

import errno
import fcntl
import os
import pathlib
import signal
import tempfile

from ei_snn_jax import errors


class WorkdirError(errors.UserError, OSError):
  """The workdir cannot be used (in use by another trainer, not writable, disk full)."""


class TrainingInterrupted(errors.UserError):
  """Training stopped on a signal after saving a checkpoint; rerunning continues it."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.exit_code = 128 + signum


def _fsync_dir(folder: pathlib.Path) -> None:
  """Make a rename inside ``folder`` durable (no-op where directories cannot be opened)."""
  try:
    fd = os.open(folder, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def describe_os_error(e: OSError, path: pathlib.Path) -> str:
  """One line for an OSError on ``path`` naming the cause and the fix."""
  if e.errno == errno.ENOSPC:
    return f"no space left on the device of {path}: free disk space or use another --workdir"
  if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
    return f"cannot write {path} ({e.strerror}): use a writable --workdir"
  return f"cannot write {path} ({e.strerror or e}): check the folder or use another --workdir"


def write_atomic(path: str | os.PathLike, text: str) -> None:
  """Replace ``path`` by ``text`` atomically (temporary sibling, fsync, rename, fsync folder).

  Raises ``WorkdirError`` with one line (e.g. disk full, read-only folder); ``path`` is then
  unchanged.
  """
  path = pathlib.Path(path)
  tmp = None
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
    tmp = None
    _fsync_dir(path.parent)
  except OSError as e:
    raise WorkdirError(describe_os_error(e, path)) from e
  finally:
    if tmp is not None:
      try:
        os.unlink(tmp)
      except OSError:
        pass


class WorkdirLock:
  """Exclusive lock of a run folder for the lifetime of one trainer (a context manager)."""

  def __init__(self, workdir: str | os.PathLike):
    self.path = pathlib.Path(workdir) / ".lock"
    self._fd: int | None = None

  def acquire(self) -> "WorkdirLock":
    """Take the lock or raise ``WorkdirError`` naming the process that holds it."""
    try:
      self.path.parent.mkdir(parents=True, exist_ok=True)
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise WorkdirError(describe_os_error(e, self.path.parent)) from e
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
      os.close(fd)
      raise WorkdirError(
          f"workdir {self.path.parent} is in use by another trainer (pid {holder}): wait for it "
          f"to finish, or stop it, or use another --workdir") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    self._fd = fd
    return self

  def release(self) -> None:
    """Drop the lock (the file stays; it holds no state)."""
    if self._fd is not None:
      fcntl.flock(self._fd, fcntl.LOCK_UN)
      os.close(self._fd)
      self._fd = None

  def __enter__(self) -> "WorkdirLock":
    return self.acquire()

  def __exit__(self, *exc) -> None:
    self.release()


class StopSignals:
  """While active, SIGTERM and SIGINT set ``received`` instead of killing the process.

  A second signal of the same kind restores the default behaviour (a second Ctrl-C kills at
  once). Only the main thread can install handlers; elsewhere this does nothing.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.received: int | None = None
    self._previous: dict[int, object] = {}

  def _handle(self, signum, frame) -> None:
    del frame
    if self.received is not None:
      signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
      signal.raise_signal(signum)
      return
    self.received = signum
    print(f"\n{signal.Signals(signum).name} received: stopping after this step and saving a "
          "checkpoint (send it again to stop at once)", flush=True)

  def __enter__(self) -> "StopSignals":
    try:
      for s in self.SIGNALS:
        self._previous[s] = signal.signal(s, self._handle)
    except ValueError:          # not the main thread
      self._previous.clear()
    return self

  def __exit__(self, *exc) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous.clear()
