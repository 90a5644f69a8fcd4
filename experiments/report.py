r"""Results table of finished (or running) runs next to the paper's and the reference's numbers.

  python -m experiments.report runs/*
  python -m experiments.report runs --output runs/report.md

Each argument is a run folder (a ``--workdir`` of experiments/train.py, holding config.json and
metrics.jsonl) or a folder searched recursively for run folders. Runs whose configs differ only in
the seed form one row: best and final test accuracy as mean ± std (sample std) over the seeds,
epochs reached, mean wall time and the device, next to the published top-1 of the same
(dataset, arch, variant, T) from ``ei_snn_jax/analysis/paper_results.py`` (spec §8). A run of several
vmapped seeds (train.num_replicas > 1) contributes one run per seed (its replica_<r> folders;
wall time and device are the shared run's). The Markdown table is printed and written to
--output (default: report.md in the runs' common parent folder).

Accuracies are percent. "best" is the best test accuracy over the evaluated epochs (what the
paper and the reference README report, spec §7.4); "final" is the last evaluation (end of the
run, or of a run stopped by train.max_steps).

Energy: where ``python -m experiments.analyze`` has written ``analysis/energy.json`` in a run
folder, the row shows the estimated energy per example (mean over those seeds) and its ratio to
the same layout as an ANN, and an "Energy" section lists every such run with its synaptic
operations (``ei_snn_jax.analysis.energy.totals`` of the analysed snapshot).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import re
import sys
from typing import Any, Iterable, Sequence

from absl import flags

from ei_snn_jax.training import metrics as metrics_lib
from ei_snn_jax.training.config import ConfigError
from experiments import cli

# The first line of every report this tool writes: a default --output that exists without it
# is somebody else's file and is never overwritten.
MARKER = "<!-- written by python -m experiments.report -->"

# Folders inside a run folder that never hold runs (not searched).
_SKIP_DIRS = {"checkpoints", "best", "analysis", "tensorboard"}

COLUMNS = ("config", "dataset", "arch", "variant", "T", "notes", "seeds", "n",
           "best test acc (%)", "final test acc (%)", "epochs", "wall time", "device",
           "energy (µJ)", "SNN/ANN energy", "paper (%)", "README (%)")
ENERGY_COLUMNS = ("run", "snapshot", "ACs (M)", "MACs (M)", "energy (µJ)", "ANN energy (µJ)",
                  "SNN/ANN energy")


@dataclasses.dataclass
class Run:
  """What the report needs from one run folder."""
  path: pathlib.Path
  config: dict
  best: float | None          # best test accuracy (fraction), None before the first evaluation
  final: float | None         # last evaluated test accuracy (fraction)
  epochs_done: float          # epochs reached (fractional for a run stopped mid-epoch)
  wall_time: float | None     # seconds
  device: str
  finished: bool
  energy: dict | None = None  # analysis/energy.json of experiments/analyze.py, if written

  @property
  def seed(self) -> int:
    return int(self.config.get("seed", 0))

  def get(self, path: str, default: Any = None) -> Any:
    """A config field by dotted path ("model.arch")."""
    node: Any = self.config
    for part in path.split("."):
      if not isinstance(node, dict) or part not in node:
        return default
      node = node[part]
    return node


def is_run_folder(path: pathlib.Path) -> bool:
  """A run folder holds the config.json that experiments/train.py writes."""
  return (path / "config.json").is_file()


def replica_folders(path: pathlib.Path) -> list[pathlib.Path]:
  """The per-seed folders ``replica_<r>`` of a run with train.num_replicas > 1 (each holds the
  config.json and metrics.jsonl of one seed, see ei_snn_jax/training/replicas.py); [] for a plain run."""
  reps = [d for d in path.glob("replica_*") if d.name[8:].isdigit() and is_run_folder(d)]
  return sorted(reps, key=lambda d: int(d.name[8:]))


def _is_replica(path: pathlib.Path) -> bool:
  return path.name.startswith("replica_") and path.name[8:].isdigit() and is_run_folder(
      path.parent)


def find_runs(paths: Iterable[str | os.PathLike]) -> list[pathlib.Path]:
  """Run folders among ``paths`` (each a run folder or a folder searched recursively).

  A run of several vmapped seeds (train.num_replicas > 1) counts as one run per seed (its
  ``replica_<r>`` folders). Raises ConfigError for a path that does not exist, or when no run
  folder is found at all. Plain files (e.g. a previous report.md matched by ``runs/*``) are
  ignored.
  """
  found: list[pathlib.Path] = []
  paths = [pathlib.Path(p).expanduser() for p in paths]
  if not paths:
    raise ConfigError("no run folders given: pass run folders (--workdir of experiments/train.py), "
                 "e.g. python -m experiments.report runs/*")
  for p in paths:
    if not p.exists():
      raise ConfigError(f"{p} does not exist: pass run folders (--workdir of experiments/train.py)")
    if not p.is_dir():
      continue
    if is_run_folder(p):
      found += replica_folders(p) or [p]
      continue
    for root, dirs, _ in os.walk(p):
      dirs[:] = sorted(d for d in dirs if d not in _SKIP_DIRS)
      if is_run_folder(pathlib.Path(root)):
        found += replica_folders(pathlib.Path(root)) or [pathlib.Path(root)]
        dirs[:] = []
  if not found:
    raise ConfigError(f"no runs in {', '.join(map(str, paths))}: a run folder holds config.json and "
                 "metrics.jsonl (python -m experiments.train --config ... --workdir DIR)")
  return list(dict.fromkeys(found))


def load_energy(path: pathlib.Path) -> dict | None:
  """The energy estimate ``experiments.analyze`` wrote for this run (analysis/energy.json; for
  one seed of a vmapped run, the parent's when it analysed that replica), or None."""
  candidates = [(path / "analysis" / "energy.json", None)]
  if _is_replica(path):   # analyze writes the vmapped run's analysis for one --replica
    candidates.append((path.parent / "analysis" / "energy.json", int(path.name[8:])))
  for candidate, replica in candidates:
    try:
      record = json.loads(candidate.read_text())
    except (OSError, json.JSONDecodeError):
      continue
    if not isinstance(record, dict) or not isinstance(record.get("totals"), dict):
      continue
    if replica is None or int(record.get("replica", 0)) == replica:
      return record
  return None


def load_run(path: pathlib.Path) -> Run:
  """Read config.json, metrics.jsonl and (if the run ended) summary.json of one run folder."""
  try:
    config = json.loads((path / "config.json").read_text())["config"]
  except (OSError, json.JSONDecodeError, KeyError) as e:
    raise ConfigError(f"{path}/config.json is unreadable ({type(e).__name__}): not a run folder of "
                 "experiments/train.py") from None
  records = metrics_lib.read_metrics(path)
  evals = [r for r in records if r.get("kind") in ("epoch", "eval") and "test_accuracy" in r]
  epochs = [r for r in evals if r["kind"] == "epoch"]
  summary = {}
  summary_path = path / "summary.json"
  if _is_replica(path):   # the vmapped run's summary: wall time, device, finished
    summary_path = path.parent / "summary.json"
  if summary_path.is_file():
    try:
      summary = json.loads(summary_path.read_text())
    except json.JSONDecodeError:
      summary = {}
  best = max((r["test_accuracy"] for r in (epochs or evals)), default=None)
  last = max(evals, key=lambda r: r["step"], default=None)
  final = last["test_accuracy"] if last else None
  progress = max((r.get("epoch", 0) for r in records if r.get("kind") in ("train", "epoch",
                                                                          "eval")), default=0.0)
  wall = summary.get("wall_time")
  if wall is None and epochs:
    wall = epochs[-1].get("wall_time")
  device = "?"
  if summary.get("device_kind"):
    device = f"{summary['device_kind']} ×{summary.get('devices', 1)}"
  return Run(path, config, best, final, float(progress), wall, device,
             bool(summary.get("finished", False)), load_energy(path))


def group_key(run: Run) -> str:
  """Runs with equal keys differ only in the seed (and in bookkeeping such as log cadence)."""
  from ei_snn_jax.training import run_config
  fields = run_config.fingerprint_dict(run.config)
  fields.pop("seed", None)
  fields["max_steps"] = run.get("train.max_steps", 0)
  return json.dumps(fields, sort_keys=True, default=str)


_SEED_SUFFIX = re.compile(r"[_\-.]?(s|seed)[_\-]?\d+$")


def config_label(runs: Sequence[Run]) -> str:
  """Folder name of the group's runs without a seed suffix ("ei_cifar10_vgg16_s2025" ->
  "ei_cifar10_vgg16"); "+k" when the folder names differ."""
  folder = lambda r: r.path.parent.name if _is_replica(r.path) else r.path.name
  names = list(dict.fromkeys(_SEED_SUFFIX.sub("", folder(r)) or folder(r) for r in runs))
  return names[0] + (f" (+{len(names) - 1})" if len(names) > 1 else "")


def config_notes(run: Run) -> str:
  """What sets the run apart from a paper run of its (dataset, arch, variant, T): width,
  subsets, ablation switches (spec §8.3), dtype, step cap, synthetic data."""
  notes = []
  if run.get("model.width_multiplier", 1.0) != 1.0:
    notes.append(f"width ×{run.get('model.width_multiplier'):g}")
  if run.get("data.source") == "synthetic" or run.get("data.name") == "synthetic":
    notes.append("synthetic data")
  for field, label in (("data.train_subset", "train"), ("data.test_subset", "test")):
    if run.get(field, 0):
      notes.append(f"{label} {run.get(field)}")
  if run.get("model.variant") == "ei":
    if run.get("model.ei_init") is False:
      notes.append("no E-I Init")
    if run.get("model.ei_stabilization", "adaptive") != "adaptive":
      notes.append(f"stabilization {run.get('model.ei_stabilization')}")
    if run.get("model.ei_ste") is False:
      notes.append("no STE")
    if run.get("model.ei_scale_wei_grad") is False:
      notes.append("no W_EI grad scaling")
  if run.get("model.conv_dtype", "float32") not in ("float32", None):
    notes.append(str(run.get("model.conv_dtype")))
  if run.get("train.max_steps", 0):
    notes.append(f"max {run.get('train.max_steps')} steps")
  if _is_replica(run.path):
    n = len(replica_folders(run.path.parent))
    notes.append(f"{n} seeds vmapped in one run")
  return ", ".join(notes)


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
  """Mean and sample standard deviation (ddof 1; None for a single value)."""
  n = len(values)
  mean = sum(values) / n
  if n < 2:
    return mean, None
  return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))


def format_accuracy(values: Sequence[float | None]) -> str:
  """Fractions -> "91.01 ± 0.12" in percent (n >= 2), "91.01" (n = 1), "–" (none yet)."""
  vals = [100.0 * v for v in values if v is not None]
  if not vals:
    return "–"
  mean, std = mean_std(vals)
  text = f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"
  if len(vals) < len(values):
    text += f" ({len(vals)} of {len(values)})"
  return text


def format_duration(seconds: float | None) -> str:
  """Seconds -> "42 s", "12.5 min", "3.20 h"."""
  if seconds is None:
    return "–"
  if seconds < 120:
    return f"{seconds:.0f} s"
  if seconds < 7200:
    return f"{seconds / 60:.1f} min"
  return f"{seconds / 3600:.2f} h"


def unique_seeds(members: Sequence[Run]) -> tuple[list[Run], list[str]]:
  """One run per seed: the same seed found in several folders (a copied or restarted run) counts
  once, as the furthest of them (finished first, then most epochs, then the latest best).

  Returns (the kept runs sorted by seed, one note per seed found more than once).
  """
  by_seed: dict[int, list[Run]] = {}
  for run in members:
    by_seed.setdefault(run.seed, []).append(run)
  kept, notes = [], []
  for seed in sorted(by_seed):
    copies = sorted(by_seed[seed], key=lambda r: (r.finished, r.epochs_done,
                                                   -1.0 if r.best is None else r.best),
                    reverse=True)
    kept.append(copies[0])
    if len(copies) > 1:
      notes.append(f"seed {seed} is in {len(copies)} folders "
                   f"({', '.join(str(r.path) for r in copies)}): counted once, as {copies[0].path}")
  return kept, notes


def table_rows(runs: Sequence[Run], warn=None) -> list[dict[str, str]]:
  """One row per group of runs that differ only in the seed, in the order first seen; a seed
  found in several folders counts once (``unique_seeds``; ``warn`` gets each such note)."""
  from ei_snn_jax.analysis import paper_results

  groups: dict[str, list[Run]] = {}
  for run in runs:
    groups.setdefault(group_key(run), []).append(run)
  rows = []
  for members in groups.values():
    members, duplicates = unique_seeds(members)
    for note in duplicates:
      (warn or (lambda text: print(f"note: {text}", file=sys.stderr)))(note)
    first = members[0]
    dataset, arch = first.get("data.name", "?"), first.get("model.arch", "?")
    variant, T = first.get("model.variant", "?"), first.get("model.T")
    published = paper_results.lookup(dataset, arch, variant, T)
    total = first.get("train.epochs", "?")
    done = sorted({f"{r.epochs_done:.3g}" for r in members})
    walls = [r.wall_time for r in members if r.wall_time is not None]
    row = {
        "config": config_label(members),
        "dataset": str(dataset), "arch": str(arch), "variant": str(variant), "T": str(T),
        "notes": config_notes(first),
        "seeds": ", ".join(str(r.seed) for r in members),
        "n": str(len(members)),
        "best test acc (%)": format_accuracy([r.best for r in members]),
        "final test acc (%)": format_accuracy([r.final for r in members]),
        "epochs": f"{'/'.join(done)} of {total}" + (
            "" if all(r.finished for r in members) else " (unfinished)"),
        "wall time": format_duration(sum(walls) / len(walls) if walls else None),
        "device": ", ".join(dict.fromkeys(r.device for r in members)),
    }
    energies = [r.energy["totals"] for r in members if r.energy]
    row["energy (µJ)"] = format_mean([e["energy_uj"] for e in energies], "{:.3f}")
    row["SNN/ANN energy"] = format_mean([e["snn_over_ann"] for e in energies], "{:.3f}")
    for table, column in (("paper", "paper (%)"), ("readme", "README (%)")):
      r = published.get(table)
      row[column] = "–" if r is None else f"{r.top1:.2f}" + ("†" if r.T is None else "")
    rows.append(row)
  return rows


def format_mean(values: Sequence[float], fmt: str) -> str:
  """Mean of ``values`` in ``fmt`` ("–" when there are none)."""
  return fmt.format(sum(values) / len(values)) if values else "–"


def energy_rows(runs: Sequence[Run]) -> list[dict[str, str]]:
  """One row per run with an energy estimate: the totals of ``energy.totals`` (per example)."""
  rows = []
  for run in runs:
    if not run.energy:
      continue
    t = run.energy["totals"]
    name = (f"{run.path.parent.name}/{run.path.name}" if _is_replica(run.path)
            else run.path.name)
    rows.append({"run": name, "snapshot": str(run.energy.get("snapshot", "?")),
                 "ACs (M)": f"{t['acs'] / 1e6:.2f}", "MACs (M)": f"{t['macs'] / 1e6:.2f}",
                 "energy (µJ)": f"{t['energy_uj']:.3f}",
                 "ANN energy (µJ)": f"{t['ann_energy_uj']:.3f}",
                 "SNN/ANN energy": f"{t['snn_over_ann']:.3f}"})
  return rows


def _cell(text: str) -> str:
  return text.replace("|", "\\|")


def markdown_table(rows: Sequence[dict[str, str]], columns: Sequence[str] = COLUMNS) -> str:
  """A GitHub-flavoured Markdown table of ``rows``."""
  lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
  lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
  return "\n".join(lines)


def parse_markdown_table(text: str) -> list[dict[str, str]]:
  """The rows of the first Markdown table in ``text`` as {column: cell} (inverse of
  ``markdown_table``)."""
  lines = [l.strip() for l in text.splitlines()]
  start = next((i for i, l in enumerate(lines) if l.startswith("|")), None)
  if start is None:
    return []
  split = lambda l: [c.strip().replace("\\|", "|")
                     for c in re.split(r"(?<!\\)\|", l.strip().strip("|"))]
  header = split(lines[start])
  rows = []
  for line in lines[start + 2:]:
    if not line.startswith("|"):
      break
    rows.append(dict(zip(header, split(line))))
  return rows


def report(paths: Iterable[str | os.PathLike]) -> str:
  """The Markdown report (title, table, sources of the published numbers) of the runs in
  ``paths``."""
  from ei_snn_jax.analysis import paper_results

  runs, skipped = [], []
  for path in find_runs(paths):
    try:
      runs.append(load_run(path))
    except ConfigError as e:   # one unreadable run folder does not abort the report
      skipped.append(str(e))
      print(f"warning: skipped {path}: {e}", file=sys.stderr, flush=True)
  if not runs:
    raise ConfigError(f"no readable run among {len(skipped)} folder(s): {skipped[0]}")
  table = markdown_table(table_rows(runs))
  energy = energy_rows(runs)
  energy_section = []
  if energy:
    from ei_snn_jax.analysis import energy as energy_lib
    energy_section = [
        "## Energy", "",
        "Per example (all T time steps), from the spikes measured by `experiments.analyze` on "
        "its probe batch: accumulates for spike inputs, multiply-accumulates for analog inputs "
        f"and the E-I circuit, e_AC = {energy_lib.PJ_PER_AC} pJ, e_MAC = "
        f"{energy_lib.PJ_PER_MAC} pJ (45 nm; Horowitz, ISSCC 2014); ANN = the same layout "
        "without inhibitory units, one time step.", "",
        markdown_table(energy, ENERGY_COLUMNS), ""]
  return "\n".join([
      MARKER, "# Results", "",
      f"{len(runs)} run(s). Accuracies in percent: mean ± sample std over seeds; best = best "
      "test accuracy over the evaluated epochs (as the paper and the reference report), final = "
      "last evaluation. Published numbers are matched by (dataset, arch, variant, T); † = the "
      "source does not state T. Width, subsets and ablation switches are under notes; energy "
      "per example where experiments.analyze estimated it (see Energy).", "",
      table, "", *energy_section,
      "Sources:", "",
      f"- paper: {paper_results.PAPER_SOURCE}.",
      f"- README: {paper_results.README_SOURCE}.", ""])


def define_flags(fv: flags.FlagValues, argv: list[str]) -> None:
  """--output (the run folders are the positional arguments)."""
  del argv
  flags.DEFINE_string("output", None, "Markdown file to write (default: report.md in the runs' "
                      "common parent folder)", flag_values=fv)


def body(fv: flags.FlagValues, runs: list[str]) -> None:
  """Print the report of the run folders ``runs`` and write it to --output."""
  text = report(runs)
  if fv.output:
    out = pathlib.Path(fv.output).expanduser()
  else:
    folders = [str(pathlib.Path(p).expanduser().resolve()) for p in runs]
    parent = pathlib.Path(os.path.commonpath(folders))
    if is_run_folder(parent) or not parent.is_dir():
      parent = parent.parent
    out = parent / "report.md"
    if out.exists() and not out.read_text(errors="replace").startswith(MARKER):
      raise ConfigError(f"{out} exists and was not written by this tool: pass --output=FILE "
                        f"to choose where the report goes")
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(text)
  print(text)
  print(f"wrote {out}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point (``argv`` without the program name): the run folders, then flags."""
  return cli.main(define_flags, body, argv, {}, __doc__)


if __name__ == "__main__":
  cli.run_app(main)
