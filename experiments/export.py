"""Export a trained run in the authors' released format, for others to load (spec §8.2, §12).

  python -m experiments.export --workdir=runs/default --out=exported/CIFAR10-VGG8
  python -m experiments.export --workdir=runs/default --out=shared/run --which=latest

Restores the run's ``best`` checkpoint (the ``latest`` one when the run has no best yet, or with
``--which=latest``), applies Dale's projection and writes ``OUT/model.safetensors`` (the
reference's PyTorch state_dict) and ``OUT/config.json`` (the reference's training YAML), the two
files ``ei_snn_jax.models.pretrained.load_pretrained`` and ``experiments.evaluate --pretrained``
read. ``--dataset`` names the dataset for config.json when the run's ``data.name`` is not
one of the reference's (e.g. ``synthetic``). A width other than 1 (the quick start's 0.25) is written as ``width_multiplier`` in
config.json, a key only this project reads. What the format cannot hold (DANN, the MLP, another
stabilization or surrogate) is one ``error:`` line naming the option. Prints one JSON line.
``--config.KEY=VALUE`` overrides fields of the run's saved config, e.g. where the data is read
from (the restore builds the run's model from its first batch).
"""

from __future__ import annotations

import json
import pathlib

from absl import flags
from ml_collections import config_flags

from experiments import cli

MISSING = ("missing --workdir or --out: pass --workdir=DIR, the folder of a run made by "
           "experiments.train, and --out=DIR, the folder to write model.safetensors and "
           "config.json to")


def export_workdir(workdir: str | pathlib.Path, out: str | pathlib.Path, which: str = "best",
                   overrides: dict | None = None, dataset: str | None = None) -> dict:
  """Restore ``which`` checkpoint of ``workdir`` ("best" falls back to "latest" when the run has
  none) and write it to the folder ``out`` in the released format.

  The checkpoint's parameters are written as they are: training projects them onto Dale's law
  after every update, and ``load_pretrained`` users project again at every forward
  (``Pretrained.model_variables``). ``overrides``: {dotted field: value} set on the saved
  config. ``dataset``: the reference's dataset name for config.json (default from
  ``data.name``). Returns {"exported", "step", "checkpoint", "dataset", "arch"}.
  """
  from ei_snn_jax.models import pretrained as pretrained_lib
  from ei_snn_jax.training import config as config_lib, pretrained as released_lib
  from experiments import evaluate
  out = pathlib.Path(out).expanduser()

  def check(config):
    released_lib.reference_config(config, dataset)   # what the format cannot hold fails first
    if config.train.num_replicas != 1:
      raise config_lib.ConfigError(f"{workdir} trains {config.train.num_replicas} replicas: the "
                                   "released format holds one network; export a run with "
                                   "train.num_replicas=1")

  config, _, state, which = evaluate.restore_run(workdir, which, overrides, fallback=True,
                                                 check=check)
  run = released_lib.pretrained_from_run(
      config, {"params": state.params, "batch_stats": state.batch_stats}, name=out.name,
      dataset=dataset, num_batches_tracked=int(state.step))
  pretrained_lib.save_pretrained(out, run)
  ref = run.reference_config
  return {"exported": str(out), "step": int(state.step), "checkpoint": which,
          "dataset": ref["dataset"], "arch": f"{ref['arch']}{ref['num_layers']}"}


def define_flags(fv: flags.FlagValues, argv: list[str]) -> None:
  """--workdir, --out, --which, --dataset and --config.KEY=VALUE overrides of the saved
  config."""
  from ei_snn_jax.training import config as config_lib
  flags.DEFINE_string("workdir", None, "the run folder (--workdir of train)", flag_values=fv)
  flags.DEFINE_string("out", None, "the folder to write model.safetensors and config.json to",
                      flag_values=fv)
  flags.DEFINE_string("dataset", None, "the dataset name config.json records (CIFAR10, "
                      "CIFAR100, ...); default from the run's data.name", flag_values=fv)
  flags.DEFINE_enum("which", "best", ["best", "latest"], "which checkpoint to export (best "
                    "falls back to latest when the run has none)", flag_values=fv)
  config_flags.DEFINE_config_dict("config", config_lib.base_config(), "overrides of the saved "
                                  "config, e.g. --config.data.path=X", flag_values=fv,
                                  sys_argv=argv, lock_config=True)


def body(fv: flags.FlagValues, args: list[str]) -> None:
  """Export and print one JSON line."""
  from ei_snn_jax.training import config as config_lib
  if args:
    raise config_lib.ConfigError(f"unexpected arguments {' '.join(args)}: see --help")
  if not fv.workdir or not fv.out:
    raise config_lib.ConfigError(MISSING)
  overrides = config_flags.get_override_values(fv["config"])
  print(json.dumps(export_workdir(fv.workdir, fv.out, fv.which, overrides,
                                                   fv.dataset)), flush=True)


def main(argv: list[str] | None = None) -> int:
  """Entry point (``argv`` without the program name); returns the exit status."""
  return cli.main(define_flags, body, argv, doc=__doc__)


if __name__ == "__main__":
  cli.run_app(main)
