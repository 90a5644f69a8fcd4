"""Train a spiking network from a config file.

  python -m experiments.train --config configs/default.py --workdir runs/default
  python -m experiments.train --config configs/ei_cifar10_vgg16.py --workdir runs/vgg16 \
      --config.data.path=/data/cifar10.npz --config.optim.lr=0.002

Rerunning the same command resumes from the latest checkpoint in --workdir. Bad configs, bad data
and non-finite training steps end with one line naming the problem and the fix (exit status 2).
"""

from __future__ import annotations

import sys


def main(argv=None) -> int:
  """CLI entry point; returns the exit status."""
  from ei_snn_jax import errors
  with errors.clean_errors():
    from ei_snn_jax import config as config_lib
    spec, workdir, overrides, extra = config_lib.parse_cli(argv)
    if extra:
      raise config_lib.ConfigError(f"unknown arguments {' '.join(extra)}: see --help")
    config = config_lib.load_config(spec, overrides)
    print(config_lib.config_to_json(config), flush=True)
    from ei_snn_jax import train
    summary = train.train_and_evaluate(config, workdir)
    best, final = summary["best_test_accuracy"], summary.get("final_test_accuracy")
    print(f"done: step {summary['step']}/{summary['total_steps']}, best test accuracy "
          f"{best:.4f}, final {final if final is None else f'{final:.4f}'}, "
          f"wall time {summary['wall_time']:.1f} s -> {workdir}/summary.json", flush=True)
  return errors.exit_status()


if __name__ == "__main__":
  sys.exit(main())
