"""Run outputs: resolved config, JSONL metrics, TensorBoard events, progress bar, probe summaries.

``workdir/config.json`` holds the resolved config and its fingerprint; a workdir that holds a run
of another config is refused. ``workdir/metrics.jsonl`` has one JSON object per line with a
``kind`` ("train": means over a logging window; "epoch": train and test metrics of an epoch).
"""

from __future__ import annotations

import json
import pathlib
import shutil
import sys
import time
import weakref

import numpy as np

from ei_snn_jax.training import config as config_lib, run_config, runfolder


# The NaN guard's whole-run step metrics (no replica axis, never averaged); bad_leaf: the index a
# step returned before bad_leaves, still in the logging windows saved with older checkpoints.
WHOLE_RUN = ("finite", "bad_leaves", "bad_leaf", "bad_replica")


def mean_metrics(window: list[dict]) -> dict[str, float]:
  """Mean of each metric over a window of per-step metric dicts (host values), ``WHOLE_RUN``
  left out."""
  keys = [k for k in window[0] if k not in WHOLE_RUN]
  return {k: float(np.mean([float(m[k]) for m in window])) for k in keys}


def describe_difference(old: dict, new: dict, prefix: str = "") -> str:
  """A short 'key: old -> new' list of the fields that differ between two config dicts."""
  diffs = []
  for k in sorted(set(old) | set(new)):
    a, b = old.get(k), new.get(k)
    if isinstance(a, dict) and isinstance(b, dict):
      inner = describe_difference(a, b, f"{prefix}{k}.")
      if inner:
        diffs.append(inner)
    elif a != b:
      diffs.append(f"{prefix}{k}: {a!r} -> {b!r}")
  return ", ".join(diffs[:5]) + (", ..." if len(diffs) > 5 else "")


_OPEN: "weakref.WeakSet[MetricsLogger]" = weakref.WeakSet()


def close_all() -> None:
  """Close every open ``MetricsLogger`` (the trainer's exit path, also after an error), so that
  no TensorBoard writer flushes at interpreter exit, e.g. into a full disk."""
  for logger in list(_OPEN):
    logger.close()


class MetricsLogger:
  """Writes config.json, metrics.jsonl and (if tensorboardX is installed) TensorBoard events.

  ``metrics.jsonl`` is the record of truth: on resume ``truncate_after(step)`` rewrites it
  atomically with the records up to the restored step and rebuilds the TensorBoard events from
  them, so an interrupted run never shows a record twice.
  """

  def __init__(self, workdir: pathlib.Path, fingerprint: str, config, enabled: bool = True):
    """Check (and on first use write, atomically) ``config.json``.

    ``enabled=False`` (the non-primary processes of a multi-host run) checks the config but
    writes nothing; ``last`` then answers from the records given to ``write``. The metric files
    are opened on the first ``write`` (after ``truncate_after`` on resume).
    """
    self.workdir = pathlib.Path(workdir)
    self.enabled = enabled
    self._last: dict[str, dict] = {}
    self._file = self._tb = None
    cfg_path = self.workdir / "config.json"
    saved = None
    if cfg_path.exists():
      try:
        saved = json.loads(cfg_path.read_text())
      except (json.JSONDecodeError, UnicodeDecodeError):
        if any((self.workdir / d).is_dir() and any((self.workdir / d).iterdir())
               for d in ("checkpoints", "best")):
          raise config_lib.ConfigError(
              f"{cfg_path} is unreadable (not written completely) but the run has checkpoints: "
              f"delete config.json and rerun with the run's original config to continue") from None
    # The run's own fingerprint (its checkpoints carry it), kept when new options keep defaults.
    self.run_fingerprint = saved.get("fingerprint") if saved is not None else fingerprint
    if saved is not None:
      if saved.get("fingerprint") != fingerprint and not run_config.same_run(
          saved.get("config", {}), fingerprint):
        changed = describe_difference(saved.get("config", {}), config.to_dict())
        raise config_lib.ConfigError(
            f"workdir {self.workdir} holds a run of another config ({changed}): use a new "
            "--workdir, or delete that one to start over")
    elif enabled:
      runfolder.write_atomic(cfg_path, json.dumps(
          {"fingerprint": fingerprint, "config": config.to_dict()}, indent=2, default=str))
    self.path = self.workdir / "metrics.jsonl"

  def _open(self) -> None:
    """Open metrics.jsonl for appending and the TensorBoard writer (once)."""
    if self._file is not None or not self.enabled:
      return
    try:
      self._file = open(self.path, "a")
    except OSError as e:
      raise runfolder.WorkdirError(runfolder.describe_os_error(e, self.path)) from e
    _OPEN.add(self)
    try:
      from tensorboardX import SummaryWriter
      self._tb = SummaryWriter(str(self.workdir / "tensorboard"))
    except ImportError:
      pass

  def _add_scalars(self, record: dict) -> None:
    """A record's numbers to TensorBoard as ``kind/name`` at its step."""
    if self._tb is None:
      return
    for k, v in record.items():
      if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("step", "epoch"):
        self._tb.add_scalar(f"{record['kind']}/{k}", v, record["step"])

  def write(self, kind: str, record: dict) -> None:
    """Append one record; numbers go to TensorBoard as ``kind/name``."""
    record = {"kind": kind, **record}
    self._last[kind] = record
    if not self.enabled:
      return
    self._open()
    try:
      self._file.write(json.dumps(record) + "\n")
      self._file.flush()
    except OSError as e:
      raise runfolder.WorkdirError(runfolder.describe_os_error(e, self.path)) from e
    self._add_scalars(record)

  def truncate_after(self, step: int) -> None:
    """Keep only the records up to ``step`` (the restored checkpoint's; 0 when none), dropping
    those of a run that stopped before its next checkpoint and a line torn by a kill.

    The file is replaced atomically, and the TensorBoard events are rebuilt from the kept
    records (so no (tag, step) is ever written twice).
    """
    if not self.enabled:
      return
    self.close()
    lines = self.path.read_text().splitlines() if self.path.exists() else []
    kept = [(line, r) for line, r in _parse_lines(lines) if r.get("step", 0) <= step]
    if len(kept) != len(lines):
      runfolder.write_atomic(self.path, "".join(line + "\n" for line, _ in kept))
    tensorboard = self.workdir / "tensorboard"
    if tensorboard.is_dir() and len(kept) != len(lines):
      shutil.rmtree(tensorboard)
      self._open()
      for _, record in kept:
        self._add_scalars(record)

  def last(self, kind: str) -> dict | None:
    """The last record of ``kind``: written by this process, else the last in the file."""
    if kind in self._last:
      return self._last[kind]
    found = [r for r in read_metrics(self.workdir, kind)] if self.path.exists() else []
    return found[-1] if found else None

  def close(self) -> None:
    """Close the streams (a later ``write`` opens them again). A stream that cannot flush (a
    full disk) is closed anyway: the records of truth are the ones already in metrics.jsonl."""
    file, tb = self._file, self._tb
    self._file = self._tb = None
    _OPEN.discard(self)
    for stream in (file, tb):
      if stream is not None:
        try:
          stream.close()
        except OSError:
          pass


def _parse_lines(lines) -> list[tuple[str, dict]]:
  """(line, record) for every line that parses; a line torn by a kill or still being written
  by a running job is skipped."""
  out = []
  for line in lines:
    try:
      out.append((line, json.loads(line)))
    except json.JSONDecodeError:
      continue
  return out


def read_metrics(workdir: str | pathlib.Path, kind: str | None = None) -> list[dict]:
  """All records of ``workdir/metrics.jsonl`` (of one ``kind`` if given); torn lines skipped."""
  path = pathlib.Path(workdir) / "metrics.jsonl"
  if not path.exists():
    return []
  records = [r for _, r in _parse_lines(path.read_text().splitlines())]
  return [r for r in records if kind is None or r.get("kind") == kind]


class Progress:
  """A tqdm progress bar over training steps (plain lines when disabled or tqdm is missing)."""

  def __init__(self, total: int, initial: int = 0, enabled: bool = True):
    self._bar = None
    if enabled:
      try:
        from tqdm import tqdm
        self._bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                         file=sys.stderr)
      except ImportError:
        pass

  def update(self, step: int) -> None:
    """Move the bar to ``step``."""
    if self._bar is not None:
      self._bar.update(step - self._bar.n)

  def exclude_pause(self) -> None:
    """Leave the time since the bar last moved (an evaluation and its checkpoint, the first
    step's compile) out of the step-rate estimate, so that the ETA stays that of training steps
    instead of jumping to hours after each evaluation. The elapsed time still counts it."""
    if self._bar is not None:
      self._bar.last_print_t = getattr(self._bar, "_time", time.time)()   # tqdm's clock
      self._bar.last_print_n = self._bar.n

  def postfix(self, **values: float) -> None:
    """Show ``values`` after the bar (from the next refresh)."""
    if self._bar is not None:
      self._bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)

  def message(self, text: str) -> None:
    """A line above the bar (printed plainly without one)."""
    if self._bar is not None:
      self._bar.write(text)
    else:
      print(text, flush=True)

  def close(self) -> None:
    """Close the bar (idempotent)."""
    if self._bar is not None:
      self._bar.close()
