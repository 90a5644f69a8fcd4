"""Train a spiking network from a config file.

  python -m experiments.train --config=configs/default.py --workdir=runs/default
  python -m experiments.train --config=configs/ei_cifar10_vgg16.py:runlocal --workdir=/tmp/smoke
  python -m experiments.train --config=configs/ei_cifar10_vgg16.py --workdir=runs/vgg16 \\
      --config.data.path=/data/cifar10.npz --config.optim.lr=0.002 --config.model.T 8

Any config field is overridden with ``--config.KEY=VALUE`` (``ml_collections.config_flags``; the
config is locked, so a misspelt key is an error, not a new field). The resolved config is saved
to WORKDIR/config.json (the console shows one line naming the model and the data). Rerunning
the same command resumes from the latest checkpoint in --workdir. Bad configs, bad data and
non-finite training steps end with one line naming the problem and the fix (exit status 2).
"""

from __future__ import annotations

from absl import flags
from ml_collections import config_flags

from ei_snn_jax.training.config import CONFIG_HINT
from experiments import cli

REQUIRED = {
    "config": CONFIG_HINT,
    "workdir": "pass --workdir=DIR (the run's checkpoints, metrics and config.json go there; an "
               "existing one is resumed)",
}


def define_flags(fv: flags.FlagValues, argv: list[str]) -> None:
  """--config (a config file, locked) and --workdir."""
  config_flags.DEFINE_config_file(
      "config", None, "config file, optionally with its argument, e.g. "
      "configs/ei_cifar10_vgg16.py:runlocal", flag_values=fv, sys_argv=argv, lock_config=True)
  flags.DEFINE_string("workdir", None, "run directory (checkpoints, metrics, config.json); "
                      "resumed if present", flag_values=fv)


def body(fv: flags.FlagValues, args: list[str]) -> None:
  """Validate, print and train the config; print the summary line."""
  from ei_snn_jax.training import config as config_lib, train
  if args:
    raise config_lib.ConfigError(f"unexpected arguments {' '.join(args)}: every setting is a "
                                 f"flag (--config.KEY=VALUE); see --help")
  config = fv.config
  m = config.model
  print(f"training {m.variant} {m.arch} (width x{m.width_multiplier:g}, T={m.T}) on "
        f"{config.data.name}, {config.train.epochs} epochs"
        + (f" (at most {config.train.max_steps} steps)" if config.train.max_steps else "")
        + f"; config -> {fv.workdir}/config.json", flush=True)
  summary = train.train_and_evaluate(config, fv.workdir)
  print(summary_line(summary, fv.workdir), flush=True)


def _accuracy(value: float | None) -> str:
  return "–" if value is None else f"{value:.4f}"


def summary_line(summary: dict, workdir: str) -> str:
  """The last console line of a run: step, best and final test accuracy, wall time.

  A run of N > 1 vmapped seeds (``train.num_replicas``) reports the mean ± sample std over its
  seeds and says so; each seed's numbers are in ``summary.json``.
  """
  head = f"done: step {summary['step']}/{summary['total_steps']}, "
  tail = f", wall time {summary['wall_time']:.1f} s -> {workdir}/summary.json"
  n = summary.get("num_replicas", 1)
  if n > 1:
    def spread(key: str) -> str:
      mean, std = summary.get(f"{key}_mean"), summary.get(f"{key}_std")
      return "–" if mean is None else f"{mean:.4f} ± {std:.4f}"
    return (head + f"test accuracy over {n} seeds (mean ± sample std): best "
            f"{spread('best_test_accuracy')}, final {spread('final_test_accuracy')}" + tail)
  return (head + f"best test accuracy {_accuracy(summary['best_test_accuracy'])}, final "
          f"{_accuracy(summary.get('final_test_accuracy'))}" + tail)


def main(argv: list[str] | None = None) -> int:
  """Entry point (``argv`` without the program name); returns the exit status."""
  return cli.main(define_flags, body, argv, REQUIRED, __doc__)


if __name__ == "__main__":
  cli.run_app(main)
