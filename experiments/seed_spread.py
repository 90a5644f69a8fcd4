r"""Seed-to-seed spread of a run of vmapped seeds (``train.num_replicas``), epoch by epoch.

  python -m experiments.seed_spread --workdir=runs/seeds12
  python -m experiments.seed_spread --workdir=runs/seeds12 --reference=20.4,0.8,6 --init_rates

Reads ``replica_<r>/metrics.jsonl`` of every seed of the run (seed = config.seed + r) and prints:

* per seed: test accuracy after each evaluated epoch, the last training loss of epoch 1, and
  (``--init_rates``) each LIF layer's firing rate at E-I Init on the first ``--batch_size`` test
  images (the run's E-I Init recomputed from its config, as training does);
* per epoch: mean ± sample sd, median, min and max over the seeds, and how many seeds stalled
  (test accuracy below ``--stall_below``);
* with ``--reference=MEAN,SD,N`` (percent, e.g. another implementation's seeds): the F test of
  the two variances and Welch's t test of the means at each epoch;
* where some seeds stalled: the stalled and the other seeds side by side over the logged steps
  of epoch 1 (loss, gradient norm, firing rate of each LIF layer), which shows where a stalled
  run parts from the others.

``--json=PATH`` also writes all of it as one JSON file (small; meant to be committed with the
write-up that cites it).
"""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any, Sequence

import numpy as np
from absl import flags

from ei_snn_jax.training import metrics as metrics_lib
from ei_snn_jax.training.config import ConfigError
from experiments import cli


def load_seeds(workdir: str | pathlib.Path,
               require_metrics: bool = True) -> tuple[dict, list[list[dict]]]:
  """(saved config, every seed's metric records in replica order) of a run folder.

  A run of one seed (no replica folders) gives one list. ConfigError when the folder holds no
  run, or (``require_metrics``) no metrics yet; without ``require_metrics`` a run that logged
  nothing (one that diverged at its first step) gives empty lists."""
  from experiments.analyze import check_workdir
  workdir = pathlib.Path(workdir).expanduser()
  saved = check_workdir(workdir)
  n = int(saved.get("train", {}).get("num_replicas", 1) or 1)
  folders = [workdir / f"replica_{r}" for r in range(n)] if n > 1 else [workdir]
  seeds = [metrics_lib.read_metrics(f) if (f / "metrics.jsonl").is_file() else [] for f in folders]
  if require_metrics and not any(seeds):
    raise ConfigError(f"{workdir} has no metrics yet: let the run log at least one step first")
  return saved, seeds


def epoch_accuracies(records: Sequence[dict]) -> list[float]:
  """Test accuracy (percent) after each evaluated epoch, in order."""
  return [100.0 * r["test_accuracy"] for r in records if r.get("kind") == "epoch"]


def spread(values: Sequence[float]) -> dict[str, float]:
  """n, mean, sample sd (nan for one value), median, min and max of ``values``."""
  v = np.asarray(values, np.float64)
  return {"n": int(v.size), "mean": float(v.mean()),
          "sd": float(v.std(ddof=1)) if v.size > 1 else math.nan,
          "median": float(np.median(v)), "min": float(v.min()), "max": float(v.max())}


def compare_to_reference(ours: dict[str, float], mean: float, sd: float, n: int) -> dict:
  """F test of the variances (two-sided) and Welch's t test of the means, from summaries."""
  from scipy import stats
  f = ours["sd"] ** 2 / sd ** 2
  dfn, dfd = ours["n"] - 1, n - 1
  p_f = 2 * min(stats.f.cdf(f, dfn, dfd), stats.f.sf(f, dfn, dfd))
  t, p_t = stats.ttest_ind_from_stats(ours["mean"], ours["sd"], ours["n"], mean, sd, n,
                                      equal_var=False)
  return {"F": float(f), "F_df": [dfn, dfd], "F_p": float(min(p_f, 1.0)),
          "welch_t": float(t), "welch_p": float(p_t)}


def stall_trajectories(seeds: Sequence[Sequence[dict]], stalled: Sequence[int],
                       steps_per_epoch: int) -> list[dict]:
  """Per logged step of epoch 1: mean loss, gradient norm and LIF firing rates of the stalled
  seeds and of the others (keys ``<stat>/stalled`` and ``<stat>/others``)."""
  def by_step(records):
    return {r["step"]: r for r in records
            if r.get("kind") == "train" and r.get("step", 0) <= steps_per_epoch}
  per_seed = [by_step(s) for s in seeds]
  steps = sorted(set.intersection(*(set(p) for p in per_seed))) if per_seed else []
  keys = ["loss", "grad_norm"] + sorted(k for k in (per_seed[0][steps[0]] if steps else {})
                                        if k.startswith("firing_rate/"))
  rows = []
  for step in steps:
    row: dict[str, Any] = {"step": step}
    for group, members in (("stalled", stalled),
                           ("others", [i for i in range(len(seeds)) if i not in stalled])):
      for k in keys:
        vals = [per_seed[i][step][k] for i in members if k in per_seed[i][step]]
        row[f"{k}/{group}"] = float(np.mean(vals)) if vals else math.nan
    rows.append(row)
  return rows


def init_firing_rates(saved: dict, batch_size: int) -> list[dict]:
  """Each seed's LIF firing rates at E-I Init on the first ``batch_size`` test images."""
  import jax
  from ei_snn_jax.analysis import probes
  from ei_snn_jax.data import transforms
  from ei_snn_jax.training import train
  from experiments.analyze import restore_config
  cfg = restore_config(saved)
  exp = train.build_experiment(cfg)
  x = transforms.eval_transform(cfg.data.name)(
      jax.numpy.asarray(exp.dataset.x_test[:batch_size]))
  state = train.init_state(exp)
  n = int(cfg.train.num_replicas or 1)
  out = []
  for r in range(n):
    params = jax.tree.map(lambda a: a[r], state.params) if n > 1 else state.params
    stats = probes.probe(exp.model, {"params": params}, x)
    out.append({k.split("/", 1)[1]: float(v) for k, v in stats.items()
                if k.startswith("firing_rate/")})
  return out


def summarize(workdir: str | pathlib.Path, *, stall_below: float = 15.0,
              reference: tuple[float, float, int] | None = None,
              init_rates: bool = False, batch_size: int = 256) -> dict[str, Any]:
  """Everything the command prints, as one dict (see the module docstring)."""
  workdir = pathlib.Path(workdir).expanduser()
  saved, seeds = load_seeds(workdir)
  seed0 = int(saved.get("seed", 0))
  accs = [epoch_accuracies(s) for s in seeds]
  n_epochs = min(len(a) for a in accs)
  epochs = []
  for e in range(n_epochs):
    row = {"epoch": e + 1, **spread([a[e] for a in accs]),
           "stalled": sum(a[e] < stall_below for a in accs)}
    if reference and len(accs) > 1:
      row["vs_reference"] = compare_to_reference(row, *reference)
    epochs.append(row)
  steps_per_epoch = next((r["step"] for s in seeds for r in s if r.get("kind") == "epoch"), 0)
  per_seed = []
  for r, (records, a) in enumerate(zip(seeds, accs)):
    train_e1 = [x for x in records if x.get("kind") == "train" and x["step"] <= steps_per_epoch]
    per_seed.append({"seed": seed0 + r, "test_accuracy": a,
                     "epoch1_last_loss": train_e1[-1]["loss"] if train_e1 else math.nan})
  if init_rates:
    for row, rates in zip(per_seed, init_firing_rates(saved, batch_size)):
      row["init_firing_rate"] = rates
  stalled = [i for i, a in enumerate(accs) if a and a[0] < stall_below]
  out = {"workdir": str(workdir), "seeds": per_seed, "epochs": epochs,
         "stall_below": stall_below, "stalled_seeds": [seed0 + i for i in stalled],
         "steps_per_epoch": steps_per_epoch}
  if stalled and len(stalled) < len(seeds) and steps_per_epoch:
    out["epoch1_trajectories"] = stall_trajectories(seeds, stalled, steps_per_epoch)
  return out


def format_summary(s: dict[str, Any]) -> str:
  """The printed report of ``summarize``'s dict."""
  lines = [f"run {s['workdir']}: {len(s['seeds'])} seeds"]
  if not s["epochs"]:
    return "\n".join(lines + ["no epoch evaluated yet by every seed: nothing to compare"])
  rates = [row.get("init_firing_rate") for row in s["seeds"]]
  layers = sorted(rates[0]) if rates and rates[0] else []
  head = "seed | " + " | ".join(f"ep{e['epoch']} %" for e in s["epochs"]) + " | ep1 loss"
  lines.append(head + "".join(f" | init {l}" for l in layers))
  for row in s["seeds"]:
    cells = [f"{a:.2f}" for a in row["test_accuracy"][:len(s["epochs"])]]
    init = "".join(f" | {row['init_firing_rate'][l]:.3f}" for l in layers)
    lines.append(f"{row['seed']} | " + " | ".join(cells)
                 + f" | {row['epoch1_last_loss']:.3f}" + init)
  for e in s["epochs"]:
    text = (f"epoch {e['epoch']}: {e['mean']:.2f} ± {e['sd']:.2f} % (n {e['n']}), median "
            f"{e['median']:.2f}, range {e['min']:.2f}–{e['max']:.2f}, stalled (< "
            f"{s['stall_below']:g} %) {e['stalled']}")
    if "vs_reference" in e:
      v = e["vs_reference"]
      text += (f"; vs reference: F {v['F']:.2f} (df {v['F_df'][0]},{v['F_df'][1]}) p "
               f"{v['F_p']:.3f}, Welch t {v['welch_t']:.2f} p {v['welch_p']:.3f}")
    lines.append(text)
  if s.get("epoch1_trajectories"):
    lines.append(f"stalled seeds {s['stalled_seeds']} against the others, epoch 1 "
                 "(mean over each group):")
    for row in s["epoch1_trajectories"]:
      rate_keys = sorted(k[:-len("/stalled")] for k in row
                         if k.startswith("firing_rate/") and k.endswith("/stalled"))
      rates_text = " ".join(f"{k.split('/')[1]} {row[k + '/stalled']:.3f}/{row[k + '/others']:.3f}"
                            for k in rate_keys)
      lines.append(f"  step {row['step']}: loss {row['loss/stalled']:.3f}/"
                   f"{row['loss/others']:.3f} grad norm {row['grad_norm/stalled']:.2f}/"
                   f"{row['grad_norm/others']:.2f} {rates_text}")
  return "\n".join(lines)


def _reference(text: str | None) -> tuple[float, float, int] | None:
  if not text:
    return None
  try:
    mean, sd, n = text.split(",")
    return float(mean), float(sd), int(n)
  except ValueError:
    raise ConfigError(f"--reference={text!r}: write MEAN,SD,N in percent, e.g. "
                      f"--reference=20.4,0.8,6") from None


def define_flags(fv: flags.FlagValues, argv: list[str]) -> None:
  """--workdir, --reference, --stall_below, --init_rates, --batch_size, --json."""
  del argv
  flags.DEFINE_string("workdir", None, "a run folder of experiments.train (vmapped seeds)",
                      flag_values=fv)
  flags.DEFINE_string("reference", None, "MEAN,SD,N (percent) to test against", flag_values=fv)
  flags.DEFINE_float("stall_below", 15.0, "a seed below this test accuracy (percent) stalled",
                     flag_values=fv)
  flags.DEFINE_bool("init_rates", False, "recompute each seed's E-I Init firing rates",
                    flag_values=fv)
  flags.DEFINE_integer("batch_size", 256, "test images for --init_rates", flag_values=fv)
  flags.DEFINE_string("json", None, "also write the summary to this JSON file", flag_values=fv)


def body(fv: flags.FlagValues, args: list[str]) -> None:
  """Print the spread (and write --json)."""
  if args:
    raise ConfigError(f"unexpected arguments {' '.join(args)} (see --help)")
  s = summarize(fv.workdir, stall_below=fv.stall_below, reference=_reference(fv.reference),
                init_rates=fv.init_rates, batch_size=fv.batch_size)
  print(format_summary(s), flush=True)
  if fv.json:
    path = pathlib.Path(fv.json).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(s, indent=1) + "\n")
    print(f"wrote {path}", flush=True)


REQUIRED = {"workdir": "pass --workdir=DIR, the folder of a run made by experiments.train"}


def main(argv: list[str] | None = None) -> int:
  """Entry point (``argv`` without the program name); returns the exit status."""
  return cli.main(define_flags, body, argv, REQUIRED, __doc__)


if __name__ == "__main__":
  cli.run_app(main)
