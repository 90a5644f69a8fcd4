"""Run a named sweep (configs/sweeps.py): every (config, seed) in turn, or print the commands.

  python -m experiments.sweep paper_cifar10 --root=runs/             # run sequentially here
  python -m experiments.sweep ablations --root=runs/ --print          # one command per line
  python -m experiments.sweep smoke --root=/tmp/smoke -- --config.data.path=/data/cifar10.npz

Each run goes to ``<root>/<name>`` and resumes if it exists, so rerunning a sweep continues it.
Arguments after ``--`` are passed to every run (e.g. the data path).
"""

from __future__ import annotations

import shlex
import subprocess
import sys

from absl import flags

from experiments import cli


def sweep_commands(sweep: str, root: str, extra: list[str]) -> list[list[str]]:
  """The training command of every run of ``sweep`` (see configs/sweeps.py)."""
  from configs import sweeps
  from ei_snn_jax.training.config import ConfigError
  if sweep not in sweeps.SWEEPS:
    raise ConfigError(f"unknown sweep {sweep!r}: choose one of {', '.join(sorted(sweeps.SWEEPS))}")
  cmds = []
  for run in sweeps.runs(sweep):
    cmd = [sys.executable, "-m", "experiments.train", f"--config={run['config']}",
           f"--workdir={root.rstrip('/')}/{run['name']}"]
    cmd += [f"--config.{o}" for o in run["overrides"]] + list(extra)
    cmds.append(cmd)
  return cmds


def define_flags(fv: flags.FlagValues, argv: list[str]) -> None:
  """--root and --print (the sweep's name is the first positional argument)."""
  del argv
  flags.DEFINE_string("root", "runs", "folder of the runs", flag_values=fv)
  flags.DEFINE_bool("print", False, "print the commands, run nothing", flag_values=fv)


def body(fv: flags.FlagValues, args: list[str]) -> None:
  """Print or run the sweep's commands; a failing run stops the sweep with its status."""
  from ei_snn_jax.training.config import ConfigError
  if not args:
    raise ConfigError("missing the sweep's name: python -m experiments.sweep NAME (a name in "
                      "configs/sweeps.py)")
  cmds = sweep_commands(args[0], fv.root, args[1:])
  for i, cmd in enumerate(cmds):
    if fv["print"].value:
      print(shlex.join(cmd))
      continue
    print(f"[{i + 1}/{len(cmds)}] {shlex.join(cmd)}", flush=True)
    status = subprocess.call(cmd)
    if status:
      print(f"run {i + 1} failed with status {status}; rerun the sweep to continue", flush=True)
      raise SystemExit(status)


def main(argv: list[str] | None = None) -> int:
  """Entry point (``argv`` without the program name); returns the exit status."""
  return cli.main(define_flags, body, argv, {}, __doc__)


if __name__ == "__main__":
  cli.run_app(main)
