"""Run a named sweep (configs/sweeps.py): every (config, seed) in turn, or print the commands.

  python -m experiments.sweep paper_cifar10 --root runs/             # run sequentially here
  python -m experiments.sweep ablations --root runs/ --print          # one command per line
  python -m experiments.sweep smoke --root /tmp/smoke -- --config.data.path=/data/cifar10.npz

Each run goes to ``<root>/<name>`` and resumes if it exists, so rerunning a sweep continues it.
Arguments after ``--`` are passed to every run (e.g. the data path).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys


def sweep_commands(sweep: str, root: str, extra: list[str]) -> list[list[str]]:
  """The training command of every run of ``sweep`` (see configs/sweeps.py)."""
  from configs import sweeps
  from ei_snn_jax.config import ConfigError
  if sweep not in sweeps.SWEEPS:
    raise ConfigError(f"unknown sweep {sweep!r}: choose one of {sorted(sweeps.SWEEPS)}")
  cmds = []
  for run in sweeps.runs(sweep):
    cmd = [sys.executable, "-m", "experiments.train", "--config", run["config"],
           "--workdir", f"{root.rstrip('/')}/{run['name']}"]
    cmd += [f"--config.{o}" for o in run["overrides"]] + list(extra)
    cmds.append(cmd)
  return cmds


def main(argv=None) -> int:
  """CLI entry point; returns the exit status (the first failing run's, if any)."""
  from ei_snn_jax import errors
  argv = list(sys.argv[1:] if argv is None else argv)
  extra = []
  if "--" in argv:
    extra = argv[argv.index("--") + 1:]
    argv = argv[:argv.index("--")]
  with errors.clean_errors():
    from ei_snn_jax.config import CliParser
    parser = CliParser(prog="python -m experiments.sweep", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", help="a name in configs/sweeps.py SWEEPS")
    parser.add_argument("--root", default="runs", help="folder of the runs (default: runs)")
    parser.add_argument("--print", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)
    cmds = sweep_commands(args.sweep, args.root, extra)
  if errors.exit_status():
    return errors.exit_status()
  for i, cmd in enumerate(cmds):
    if args.print:
      print(shlex.join(cmd))
      continue
    print(f"[{i + 1}/{len(cmds)}] {shlex.join(cmd)}", flush=True)
    status = subprocess.call(cmd)
    if status:
      print(f"run {i + 1} failed with status {status}; rerun the sweep to continue", flush=True)
      return status
  return 0


if __name__ == "__main__":
  sys.exit(main())
