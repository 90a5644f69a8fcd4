"""Evaluate a trained run, or one of the authors' released models, on its test set.

  python -m experiments.evaluate --workdir=runs/default                 # best (else latest)
  python -m experiments.evaluate --workdir=runs/default --which=latest
  python -m experiments.evaluate --workdir=runs/default --config.data.path=/data/cifar10.npz
  python -m experiments.evaluate --pretrained=checkpoints/CIFAR10-VGG16 \
      --config.data.path=/data/cifar10.npz          # a released model (folder or Hub name)

With --workdir: reads the run's resolved ``config.json``, restores the checkpoint (Dale's
projection re-applied). With --pretrained: imports a released model (``model.safetensors`` +
``config.json``, a folder or a Hugging Face Hub name such as vwOvOwv/DeepEISNN/CIFAR10-VGG16,
see ``ei_snn_jax.models.pretrained``) and its config. Prints the test loss and accuracy as one
JSON line. ``--config.KEY=VALUE`` overrides fields of that config, e.g. where the data is read
from.
"""

from __future__ import annotations

import json
import pathlib
import sys

from absl import flags
from ml_collections import config_flags

from experiments import cli

MISSING = ("missing --workdir: pass --workdir=DIR, the folder of a run made by experiments.train, "
           "or --pretrained=DIR_OR_NAME, a released model (a folder with model.safetensors + "
           "config.json, or a Hub name like vwOvOwv/DeepEISNN/CIFAR10-VGG16)")


def _stage(text: str, always: bool = False) -> None:
  """One progress line on stderr (stdout keeps the single JSON result line): at a terminal, or
  ``always`` (a notice the user must see, e.g. which checkpoint was taken instead)."""
  if always or sys.stderr.isatty():
    print(f"[evaluate] {text}", file=sys.stderr, flush=True)


def restore_run(workdir: str | pathlib.Path, which: str = "best", overrides: dict | None = None,
                fallback: bool = False, check=None):
  """The config, experiment and restored state of ``which`` ("best" | "latest") checkpoint of
  the run in ``workdir``; returns (config, exp, state, which).

  ``overrides``: {dotted field: value} set on the saved config; ``check(config)`` runs before
  anything is built (to refuse early). ``fallback``: when there is no best checkpoint (a run
  stopped by ``train.max_steps`` before its first evaluation), take the latest and say so on
  stderr; without it, the error names ``--which=latest``.
  """
  from ei_snn_jax.training import checkpointing, config as config_lib, run_config, train
  workdir = pathlib.Path(workdir).expanduser()
  cfg_file = workdir / "config.json"
  if not cfg_file.exists():
    raise config_lib.ConfigError(f"{workdir} holds no run (no config.json): pass the --workdir "
                                 "of a run made by experiments.train")
  config = run_config.config_from_saved(json.loads(cfg_file.read_text())["config"])
  config_lib.apply_overrides(config, [f"{k}={v}" for k, v in (overrides or {}).items()])
  if check is not None:
    check(config)
  _stage(f"loading {config.data.name} and building {config.model.variant} "
         f"{config.model.arch} (T={config.model.T})")
  exp = train.build_experiment(config)
  template = train.init_state(exp)
  ckpt = checkpointing.Checkpointer(workdir, keep=config.train.keep_checkpoints)
  try:
    restored = (ckpt.restore_best if which == "best" else ckpt.restore_latest)(
        template, exp.replicated)
    if restored is None and which == "best":
      latest = ckpt.restore_latest(template, exp.replicated)
      if latest is not None and fallback:
        _stage(f"{workdir} has no best checkpoint (no evaluation has run yet): taking the "
               f"latest, step {int(latest[0].step)}", always=True)
        restored, which = latest, "latest"
      elif latest is not None:
        raise config_lib.ConfigError(
            f"{workdir} has no best checkpoint (no evaluation has run yet); its latest is step "
            f"{int(latest[0].step)}: pass --which=latest")
  finally:
    ckpt.close()
  if restored is None:
    raise config_lib.ConfigError(f"{workdir} has no checkpoint yet: train it first "
                                 f"(python -m experiments.train --workdir={workdir} ...)")
  return config, exp, restored[0], which


def evaluate_workdir(workdir: str | pathlib.Path, which: str = "best",
                     overrides: dict | None = None, fallback: bool = False) -> dict:
  """Restore ``which`` ("best" | "latest") checkpoint of ``workdir`` (``restore_run``) and
  evaluate it. Returns {"step", "checkpoint", "test_loss", "test_accuracy"}."""
  from ei_snn_jax.core import dale
  from ei_snn_jax.training import train
  _, exp, state, which = restore_run(workdir, which, overrides, fallback)
  state = state.replace(params=dale.project_nonnegative(state.params))
  _stage(f"evaluating step {int(state.step)} ({which}) on the test set (the first batch "
         "waits for the compile)")
  result = train.evaluate(exp, state)
  return {"step": int(state.step), "checkpoint": which, **result}


def evaluate_pretrained(name_or_dir: str | pathlib.Path, overrides: dict | None = None) -> dict:
  """Import a released model (folder or Hub name) and evaluate it on its test set.

  ``overrides``: {dotted field: value} set on its config
  (``training.pretrained.pretrained_config``), e.g. {"data.path": "/data/cifar10.npz"}. Returns
  {"pretrained", "test_loss", "test_accuracy"} and, for a model card of the reference README,
  "reported_test_accuracy" (spec §8.2).
  """
  from ei_snn_jax.models import pretrained as pretrained_lib
  from ei_snn_jax.training import config as config_lib, pretrained as released_lib, train
  released = pretrained_lib.load_pretrained(name_or_dir)
  config = released_lib.pretrained_config(released)
  config_lib.apply_overrides(config, [f"{k}={v}" for k, v in (overrides or {}).items()])
  released_lib.check_data(config, released)
  _stage(f"loading {config.data.name} and building {released.name}")
  exp = train.build_experiment(config)
  _stage("evaluating on the test set (the first batch waits for the compile)")
  result = train.evaluate(exp, released_lib.evaluation_state(exp, released))
  out = {"pretrained": released.name, **result}
  if released.reported_top1 is not None:
    out["reported_test_accuracy"] = released.reported_top1 / 100
  return out


def define_flags(fv: flags.FlagValues, argv: list[str]) -> None:
  """--workdir or --pretrained, --which and --config.KEY=VALUE overrides of the config."""
  from ei_snn_jax.training import config as config_lib
  flags.DEFINE_string("workdir", None, "the run folder (--workdir of train)", flag_values=fv)
  flags.DEFINE_string("pretrained", None, "instead of --workdir: a released model, a folder with "
                      "model.safetensors + config.json or a Hugging Face Hub name like "
                      "vwOvOwv/DeepEISNN/CIFAR10-VGG16", flag_values=fv)
  flags.DEFINE_enum("which", "best", ["best", "latest"], "which checkpoint to evaluate (by "
                    "default the best, else the latest when no evaluation has run yet)",
                    flag_values=fv)
  config_flags.DEFINE_config_dict("config", config_lib.base_config(), "overrides of the saved "
                                  "config, e.g. --config.data.path=X", flag_values=fv,
                                  sys_argv=argv, lock_config=True)


def body(fv: flags.FlagValues, args: list[str]) -> None:
  """Evaluate and print one JSON line."""
  from ei_snn_jax.training import config as config_lib
  if args:
    raise config_lib.ConfigError(f"unexpected arguments {' '.join(args)}: see --help")
  overrides = config_flags.get_override_values(fv["config"])
  if fv.workdir and fv.pretrained:
    raise config_lib.ConfigError("pass either --workdir (a run of experiments.train) or "
                                 "--pretrained (a released model), not both")
  if fv.pretrained:
    if fv["which"].present:
      raise config_lib.ConfigError("--which picks a checkpoint of a --workdir run: a "
                                   "--pretrained model has one, drop --which")
    print(json.dumps(evaluate_pretrained(fv.pretrained, overrides)), flush=True)
    return
  if not fv.workdir:
    raise config_lib.ConfigError(MISSING)
  print(json.dumps(evaluate_workdir(fv.workdir, fv.which, overrides,
                                    fallback=not fv["which"].present)), flush=True)


def main(argv: list[str] | None = None) -> int:
  """Entry point (``argv`` without the program name); returns the exit status."""
  return cli.main(define_flags, body, argv, doc=__doc__)


if __name__ == "__main__":
  cli.run_app(main)
