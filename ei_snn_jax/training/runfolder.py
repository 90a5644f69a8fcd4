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
  Before the first step (``idle``: nothing to save) a signal stops at once, even while the
  process is stuck in a long compile, where no Python signal handler can run.
* ``set_aside_summary``: a rerun that trains again moves the previous ``summary.json`` to
  ``summary.previous.json``, so that no summary claims a result the folder no longer holds.
* ``is_out_of_space``: whether an exception (or one it was raised from) is a full disk.
"""

from __future__ import annotations

import errno
import fcntl
import os
import pathlib
import signal
import sys
import tempfile
import threading
import time

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


def is_out_of_space(e: BaseException) -> bool:
  """Whether ``e`` or an exception in its cause/context chain is a full disk (ENOSPC, or the
  RESOURCE_EXHAUSTED / "No space left" text tensorstore and orbax raise it as)."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
      return True
    text = str(e)
    if "No space left on device" in text or "os_error_code='28'" in text:
      return True
    e = e.__cause__ or e.__context__
  return False


def set_aside_summary(workdir: pathlib.Path) -> None:
  """Move ``workdir/summary.json`` (a finished run's result) to ``summary.previous.json``
  before the run trains again; the new summary is written when it ends."""
  path = pathlib.Path(workdir) / "summary.json"
  if path.exists():
    os.replace(path, path.with_name("summary.previous.json"))


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
  once). While ``idle`` (set by the trainer until its first step has run: there is nothing to
  save) a signal stops the process at once with one ``error:`` line and exit status 128 +
  signal: from the handler when the main thread runs Python, else (e.g. inside a long XLA
  compile, where Python handlers wait) from a watcher thread woken by ``signal.set_wakeup_fd``
  after ``GRACE_S``. Only the main thread can install handlers; elsewhere this does nothing.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)
  GRACE_S = 1.0

  def __init__(self):
    self.received: int | None = None
    self.idle = True
    self._previous: dict[int, object] = {}
    self._pipe: tuple[int, int] | None = None
    self._old_wakeup = -1

  @staticmethod
  def _exit_now(signum: int) -> None:
    """One line and exit 128 + signum at once: no step ran, so nothing is unsaved (exiting
    without the interpreter's teardown, which XLA's compile threads may not survive)."""
    sys.stdout.flush()
    sys.stderr.write(f"error: stopped by {signal.Signals(signum).name} before the first step: "
                     f"nothing to save (the run folder is unchanged); rerun the same command to "
                     f"continue\n")
    sys.stderr.flush()
    os._exit(128 + signum)

  def _handle(self, signum, frame) -> None:
    del frame
    if self.received is not None:
      signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
      signal.raise_signal(signum)
      return
    self.received = signum
    if self.idle:
      self._exit_now(signum)
    print(f"\n{signal.Signals(signum).name} received: stopping after this step and saving a "
          "checkpoint (send it again to stop at once)", flush=True)

  def _watch(self, fd: int) -> None:
    """Stop the process when a signal arrives while idle and no Python handler runs."""
    while True:
      try:
        data = os.read(fd, 16)
      except OSError:
        data = b""
      if not data:
        os.close(fd)
        return
      for signum in data:
        if signum not in self.SIGNALS or not self.idle:
          continue
        time.sleep(self.GRACE_S)
        if self.received is None and self.idle:   # the main thread is stuck in native code
          self._exit_now(signum)

  def __enter__(self) -> "StopSignals":
    try:
      for s in self.SIGNALS:
        self._previous[s] = signal.signal(s, self._handle)
    except ValueError:          # not the main thread
      self._previous.clear()
      return self
    r, w = os.pipe()
    os.set_blocking(w, False)
    self._pipe = (r, w)
    self._old_wakeup = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    threading.Thread(target=self._watch, args=(r,), daemon=True, name="stop-signals").start()
    return self

  def __exit__(self, *exc) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous.clear()
    if self._pipe is not None:
      signal.set_wakeup_fd(self._old_wakeup)
      os.close(self._pipe[1])     # the watcher reads EOF and ends
      self._pipe = None
