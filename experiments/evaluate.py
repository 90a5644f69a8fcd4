"""Evaluate a trained run on its test set.

  python -m experiments.evaluate --workdir runs/default            # best checkpoint
  python -m experiments.evaluate --workdir runs/default --which latest

Reads the run's resolved ``config.json``, restores the checkpoint (Dale's projection re-applied)
and prints the test loss and accuracy; ``--config.data.path=...`` style overrides change where
the data is read from (e.g. the run was trained on another machine).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys


def evaluate_workdir(workdir: str | pathlib.Path, which: str = "best",
                     overrides: tuple[str, ...] = ()) -> dict:
  """Restore ``which`` ("best" | "latest") checkpoint of ``workdir`` and evaluate it.

  Returns {"step", "test_loss", "test_accuracy", "checkpoint"}.
  """
  from ei_snn_jax import config as config_lib, dale, train
  workdir = pathlib.Path(workdir).expanduser()
  cfg_file = workdir / "config.json"
  if not cfg_file.exists():
    raise config_lib.ConfigError(f"{workdir} holds no run (no config.json): pass the --workdir "
                                 "of a run made by experiments.train")
  config = config_lib.config_from_saved(json.loads(cfg_file.read_text())["config"])
  config_lib.apply_overrides(config, overrides)
  exp = train.build_experiment(config)
  template = train.init_state(exp)
  ckpt = train.checkpointing.Checkpointer(workdir, keep=config.train.keep_checkpoints)
  restored = (ckpt.restore_best if which == "best" else ckpt.restore_latest)(
      template, exp.replicated)
  ckpt.close()
  if restored is None:
    raise config_lib.ConfigError(f"{workdir} has no {which} checkpoint yet: train it first")
  state, _ = restored
  state = state.replace(params=dale.project_nonnegative(state.params))
  result = train.evaluate(exp, state)
  return {"step": int(state.step), "checkpoint": which, **result}


def main(argv=None) -> int:
  """CLI entry point; returns the exit status."""
  from ei_snn_jax import errors
  argv = list(sys.argv[1:] if argv is None else argv)
  overrides = [a.split("--config.", 1)[1] for a in argv if a.startswith("--config.")]
  with errors.clean_errors():
    from ei_snn_jax.config import CliParser
    parser = CliParser(prog="python -m experiments.evaluate", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="the run folder (--workdir of train)")
    parser.add_argument("--which", choices=("best", "latest"), default="best",
                        help="which checkpoint to evaluate (default: best)")
    args = parser.parse_args([a for a in argv if not a.startswith("--config.")])
    result = evaluate_workdir(args.workdir, args.which, tuple(overrides))
    print(json.dumps(result), flush=True)
  return errors.exit_status()


if __name__ == "__main__":
  sys.exit(main())
