r"""Figures of one run: learning curves, firing rates, E-I balance and the weight/current
distributions at its checkpoints (spec §1.2 currents, §5 firing rates, §8.4 bimodality).

  python -m experiments.analyze --workdir=runs/default
  python -m experiments.analyze --workdir=runs/vgg16 --batch_size=128 --steps=39100,117300

Reads ``workdir/metrics.jsonl`` (the training-time probe statistics the training step logs) and
the orbax checkpoints in ``workdir/checkpoints`` and ``workdir/best``, and writes PNG figures and
an index page (index.html and index.md) into ``workdir/analysis`` (or --out):

* curves.png: training loss/accuracy per logging window, train/test loss and accuracy per epoch,
  learning rate and gradient norm.
* firing_rates.png: each LIF layer's firing rate over training, and the per-layer profile at a
  few points of training.
* ei_balance.png: mean and std of each E-I layer's excitatory (I_EE), lateral inhibition
  (I_EI = W_EI I_IE), balanced (I_bal), shunting (I_shunt) and integrated (I_int) current over
  training.
* hist_<param>.png (W_EE, W_IE, W_EI, g_I, g_E) and hist_integrated.png: per layer, the
  distribution at initialisation (E-I Init recomputed from the run's config) and at every
  available checkpoint; I_int from ``probes.probe`` on a fixed test batch (the first
  --batch_size test images) with the restored parameters. This is where bimodality emerges.
* probe_profile.png: per-layer firing rate and I_int mean/std on that batch at each checkpoint.
* the energy estimate of the last snapshot on that batch (``ei_snn_jax.analysis.energy``):
  per-layer accumulates and multiply-accumulates from the measured spikes, energy at 45 nm
  against the same layout as an ANN, as a table in the index page and in energy.json (which
  experiments/report.py reads).

A run of vmapped seeds (train.num_replicas > 1) is shown for one seed: --replica R (default 0).
Also writes probes.json (the probe statistics per checkpoint). A missing or empty workdir, a
checkpoint of another model or a missing dataset end with a one-line error (exit status 2).
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
import pathlib
from typing import Any, Sequence

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from absl import flags  # noqa: E402

from ei_snn_jax.analysis import energy as energy_lib  # noqa: E402
from ei_snn_jax.analysis import probes as probes_lib  # noqa: E402
from ei_snn_jax.training import metrics as metrics_lib  # noqa: E402
from ei_snn_jax.training.config import ConfigError  # noqa: E402
from experiments import cli  # noqa: E402

# The parameter histograms: (figure name, paper symbol, parameter names of the E-I / DANN layers).
PARAM_KINDS = (
    ("w_ee", "W_EE", ("w_ee", "w_ex")),
    ("w_ie", "W_IE", ("w_ie", "w_ix")),
    ("w_ei", "W_EI", ("w_ei",)),
    ("g_i", "g_I", ("g_i",)),
    ("g_e", "g_E", ("g_e", "g")),
)
_DPI = 90


# ------------------------------------------------------------------------------------------
# Reading a run
# ------------------------------------------------------------------------------------------

def check_workdir(workdir: pathlib.Path) -> dict:
  """The saved config of ``workdir`` (config.json); one-line ConfigError when it is not a run."""
  if not workdir.exists():
    raise ConfigError(f"workdir {workdir} does not exist: pass the --workdir of a run of "
                        "python -m experiments.train")
  if not workdir.is_dir():
    raise ConfigError(f"workdir {workdir} is not a folder: pass the --workdir of a run")
  cfg_path = workdir / "config.json"
  if not cfg_path.is_file():
    raise ConfigError(f"workdir {workdir} holds no config.json, so no run: train into it "
                        "first (python -m experiments.train --config ... --workdir "
                        f"{workdir})")
  try:
    return json.loads(cfg_path.read_text())["config"]
  except (json.JSONDecodeError, KeyError):
    raise ConfigError(f"{cfg_path} is unreadable: not written by experiments.train") from None


def restore_config(saved: dict, data_path: str | None = None):
  """The run's ConfigDict for analysis: the saved values on the current schema, on one device."""
  from ei_snn_jax.training import run_config

  cfg = run_config.config_from_saved(saved)
  cfg.parallel.num_devices = 1
  cfg.parallel.distributed = False
  cfg.train.progress_bar = False
  if data_path:
    cfg.data.path = data_path
  return cfg


# ------------------------------------------------------------------------------------------
# Figures from the training log
# ------------------------------------------------------------------------------------------

def _layer_colors(n: int):
  return [plt.cm.viridis(x) for x in np.linspace(0.0, 0.9, max(n, 1))]


def _series(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
  pts = [(r["step"], r[key]) for r in records if key in r and r[key] is not None]
  if not pts:
    return np.zeros(0), np.zeros(0)
  steps, vals = zip(*pts)
  return np.asarray(steps, float), np.asarray(vals, float)


def _save(fig, path: pathlib.Path) -> pathlib.Path:
  fig.savefig(path, dpi=_DPI, bbox_inches="tight")
  plt.close(fig)
  return path


def plot_curves(records: list[dict], path: pathlib.Path, title: str = "") -> pathlib.Path:
  """Loss, accuracy (train per logging window and per epoch, test per epoch/eval), learning
  rate and gradient norm against the training step."""
  train = [r for r in records if r.get("kind") == "train"]
  epochs = [r for r in records if r.get("kind") == "epoch"]
  evals = [r for r in records if r.get("kind") in ("epoch", "eval")]
  fig, axes = plt.subplots(2, 2, figsize=(10, 7))
  ax = axes[0, 0]
  ax.plot(*_series(train, "loss"), lw=0.8, alpha=0.6, label="train (window)")
  ax.plot(*_series(epochs, "train_loss"), "o-", label="train (epoch)")
  ax.plot(*_series(evals, "test_loss"), "s-", label="test")
  ax.set(title="loss", xlabel="step")
  ax = axes[0, 1]
  s, v = _series(train, "accuracy")
  ax.plot(s, 100 * v, lw=0.8, alpha=0.6, label="train (window)")
  s, v = _series(epochs, "train_accuracy")
  ax.plot(s, 100 * v, "o-", label="train (epoch)")
  s, v = _series(evals, "test_accuracy")
  ax.plot(s, 100 * v, "s-", label="test")
  ax.set(title="accuracy (%)", xlabel="step")
  ax = axes[1, 0]
  ax.plot(*_series(train, "lr"))
  ax.set(title="learning rate", xlabel="step")
  ax = axes[1, 1]
  s, v = _series(train, "grad_norm")
  ax.plot(s, v)
  if len(v) and np.all(v > 0):
    ax.set_yscale("log")
  ax.set(title="gradient norm", xlabel="step")
  for ax in axes.flat:
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=8)
  fig.suptitle(title)
  fig.tight_layout()
  return _save(fig, path)


def plot_firing_rates(records: list[dict], path: pathlib.Path, title: str = "") -> pathlib.Path:
  """Each LIF layer's firing rate over training (left) and against depth at a few points of
  training (right)."""
  train = [r for r in records if r.get("kind") == "train"]
  keys = set().union(*(r.keys() for r in train)) if train else set()
  layers = probes_lib.layer_names(keys, "firing_rate")
  fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
  for layer, color in zip(layers, _layer_colors(len(layers))):
    ax.plot(*_series(train, f"firing_rate/{layer}"), color=color, label=layer)
  ax.set(title="firing rate per LIF layer (training batches)", xlabel="step",
         ylabel="spikes / neuron / time step")
  ax.grid(alpha=0.3)
  if layers:
    ax.legend(fontsize=7, ncol=2 if len(layers) > 8 else 1)
  with_rates = [r for r in train if any(f"firing_rate/{l}" in r for l in layers)]
  if with_rates:
    picks = sorted({int(round(q * (len(with_rates) - 1))) for q in (0, 0.25, 0.5, 0.75, 1.0)})
    for i, color in zip(picks, plt.cm.plasma(np.linspace(0, 0.85, len(picks)))):
      r = with_rates[i]
      ax2.plot(range(len(layers)), [r.get(f"firing_rate/{l}", np.nan) for l in layers], "o-",
               color=color, label=f"step {r['step']}")
    ax2.set_xticks(range(len(layers)), layers, rotation=60, fontsize=7)
    ax2.legend(fontsize=8)
  ax2.set(title="firing rate vs depth", ylabel="firing rate")
  ax2.grid(alpha=0.3)
  fig.suptitle(title)
  fig.tight_layout()
  return _save(fig, path)


def plot_ei_balance(records: list[dict], path: pathlib.Path, title: str = "") -> pathlib.Path:
  """Mean (left) and std (right) of each E-I layer's currents over training (spec §1.2):
  excitatory I_EE, lateral inhibition I_EI = W_EI I_IE, balanced I_bal, shunting I_shunt,
  integrated I_int."""
  train = [r for r in records if r.get("kind") == "train"]
  keys = set().union(*(r.keys() for r in train)) if train else set()
  layers = probes_lib.layer_names(keys, "integrated_mean")
  currents = [c for c in probes_lib.CURRENTS if any(f"{c}_mean/{l}" in keys for l in layers)]
  labels = {"excitatory": "excitatory  I_EE",
            "lateral_inhibition": "lateral inhibition  I_EI = W_EI I_IE",
            "balanced": "balanced  I_EE - W_EI I_IE", "shunting": "shunting  W_EI (g_I I_IE)",
            "integrated": "integrated  I_int (LIF input)"}
  fig, axes = plt.subplots(len(currents), 2, figsize=(11, 2.3 * len(currents) + 0.6),
                           squeeze=False, sharex=True)
  colors = _layer_colors(len(layers))
  for row, cur in enumerate(currents):
    for col, stat in enumerate(("mean", "std")):
      ax = axes[row, col]
      for layer, color in zip(layers, colors):
        ax.plot(*_series(train, f"{cur}_{stat}/{layer}"), color=color, lw=1.2, label=layer)
      if stat == "mean" and cur in ("balanced", "integrated"):
        ax.axhline(0.0, color="k", lw=0.6, alpha=0.5)
      ax.set_title(f"{labels[cur]}: {stat}", fontsize=9)
      ax.grid(alpha=0.3)
  for ax in axes[-1]:
    ax.set_xlabel("step")
  if layers:
    axes[0, 1].legend(fontsize=7, ncol=2 if len(layers) > 8 else 1, loc="best")
  fig.suptitle(title or "E-I balance over training (training batches)")
  fig.tight_layout()
  return _save(fig, path)


# ------------------------------------------------------------------------------------------
# Checkpoints: parameters and probes on a fixed test batch
# ------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Snapshot:
  """Parameters of the run at one point (init or a checkpoint) and its probe statistics."""
  label: str
  step: int
  params: Any
  stats: dict[str, Any]


def collect_snapshots(workdir: pathlib.Path, saved_config: dict, *, batch_size: int = 64,
                      steps: Sequence[int] | None = None, include_init: bool = True,
                      data_path: str | None = None, replica: int = 0,
                      log=print) -> tuple[list[Snapshot], dict]:
  """Initial parameters (E-I Init re-run from the config, as in training) and the parameters of
  each checkpoint, with ``probes.probe`` statistics (and I_int samples) on the first
  ``batch_size`` test images. For a run of vmapped seeds (train.num_replicas > 1) the
  parameters of replica ``replica`` (seed + replica).

  Returns (snapshots in step order, info about the probe batch); ``info["energy"]`` is
  (label, per-layer ``energy.LayerEnergy`` rows) of the last snapshot on that batch.
  """
  import jax
  from ei_snn_jax.data import transforms
  from ei_snn_jax.training import checkpointing, train

  cfg = restore_config(saved_config, data_path)
  log(f"analyze: loading {cfg.data.name} and re-running E-I Init for the init snapshot")
  exp = train.build_experiment(cfg)
  n = min(batch_size, len(exp.dataset.x_test))
  x = transforms.eval_transform(cfg.data.name)(jax.numpy.asarray(exp.dataset.x_test[:n]))
  state = train.init_state(exp)
  n_rep = int(cfg.train.get("num_replicas", 1) or 1)
  if not 0 <= replica < n_rep:
    raise ConfigError(f"--replica {replica}: the run has train.num_replicas={n_rep}; pass "
                        f"0..{n_rep - 1}")
  pick = (lambda tree: jax.tree.map(lambda a: a[replica], tree)) if n_rep > 1 else (lambda t: t)
  extra = {"batch_stats": pick(state.batch_stats)} if state.batch_stats else {}

  last: dict[str, Any] = {}

  def snapshot(label, step, params, batch_stats=None):
    params, batch_stats = pick(params), (pick(batch_stats) if batch_stats else batch_stats)
    variables = {"params": params, **extra}
    if batch_stats:
      variables["batch_stats"] = batch_stats   # BN variant: the checkpoint's running statistics
    stats = probes_lib.probe(exp.model, variables, x, values=True)
    last.update(label=label, variables=variables)
    return Snapshot(label, step, jax.device_get(params), stats)

  out = []
  if include_init:
    log("analyze: probing the init snapshot (the first probe waits for the compile)")
    out.append(snapshot("init", 0, state.params))
  ckpt = checkpointing.Checkpointer(workdir, read_only=True)
  try:
    available = ckpt.steps()
    wanted = list(available) if not steps else [s for s in steps if s in available]
    missing = [s for s in (steps or ()) if s not in available]
    if missing:
      log(f"analyze: no checkpoint at step(s) {missing}; available: {list(available)}")
    for step in wanted:
      sources = available[step]
      try:
        restored, _ = ckpt.restore(step, state, exp.replicated,
                                   "latest" if "latest" in sources else "best")
      except FileNotFoundError:
        log(f"analyze: checkpoint {step} disappeared while reading (run still training?)")
        continue
      label = f"step {step}" + (" (best)" if "best" in sources else "")
      log(f"analyze: probing checkpoint {label} ({wanted.index(step) + 1} of {len(wanted)})")
      out.append(snapshot(label, step, restored.params, restored.batch_stats))
  finally:
    ckpt.close()
  info = {"batch": f"first {n} test images of {cfg.data.name}", "batch_size": n,
          "steps_per_epoch": exp.steps_per_epoch, "num_replicas": n_rep}
  if last:
    log(f"analyze: estimating energy per example at {last['label']}")
    info["energy"] = (last["label"], energy_lib.estimate(exp.model, last["variables"], x,
                                                         train=False))
  return out, info


def write_energy(path: pathlib.Path, label: str, rows: Sequence[Any], batch: str,
                 replica: int = 0) -> pathlib.Path:
  """energy.json: the per-layer rows and ``energy.totals`` of one snapshot (per example)."""
  path.write_text(json.dumps({
      "snapshot": label, "batch": batch, "replica": replica,
      "pj_per_ac": energy_lib.PJ_PER_AC, "pj_per_mac": energy_lib.PJ_PER_MAC,
      "layers": [dataclasses.asdict(r) for r in rows], "totals": energy_lib.totals(rows)},
      indent=2))
  return path


def _energy_html(markdown: str) -> list[str]:
  """The Markdown energy table (``energy.markdown_table``) as HTML lines."""
  lines = markdown.splitlines()
  table = [l for l in lines if l.startswith("|") and not l.startswith("|---")]
  cells = lambda l: [c.strip().replace("**", "") for c in l.strip().strip("|").split("|")]
  out = ["<table border=1 cellspacing=0 cellpadding=3>",
         "<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cells(table[0])) + "</tr>"]
  out += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells(l)) + "</tr>"
          for l in table[1:]]
  out.append("</table>")
  out += [f"<p>{html.escape(l)}</p>" for l in lines if l and not l.startswith("|")]
  return out


def _param_layers(params, names: Sequence[str]) -> dict[str, np.ndarray]:
  """{layer path: values} of the leaves named in ``names`` (the head's unused parameters, spec
  §1.3, left out)."""
  import jax
  from ei_snn_jax import tree as tree_lib
  from ei_snn_jax.training import optim

  out = {}
  unused = jax.tree.leaves(optim.unused_parameter_mask(params))
  for (path, leaf), dead in zip(jax.tree_util.tree_flatten_with_path(params)[0], unused):
    if dead or tree_lib.leaf_name(path) not in names:
      continue
    out[tree_lib.layer_path(path[:-1])] = np.asarray(leaf, np.float32).reshape(-1)
  return dict(sorted(out.items(), key=lambda kv: probes_lib.layer_sort_key(kv[0])))


def _snapshot_colors(snapshots: Sequence[Snapshot]):
  colors = plt.cm.viridis(np.linspace(0.0, 0.9, max(len(snapshots), 1)))
  return [("0.35" if s.label == "init" else c) for s, c in zip(snapshots, colors)]


def plot_histograms(per_snapshot: list[dict[str, np.ndarray]], snapshots: Sequence[Snapshot],
                    path: pathlib.Path, title: str, bins: int = 60,
                    vline: tuple[float, str] | None = None) -> pathlib.Path | None:
  """One panel per layer overlaying the value distribution of every snapshot (density).

  ``per_snapshot[i]`` maps layer path -> values of snapshot i. The range clips the outer 0.1 %
  so that a few outliers do not hide the shape; the legend gives the fraction of exact zeros
  (weights clamped by Dale's projection, spec §4) when there are any. ``vline``: (x, label) of
  a reference line (e.g. the LIF threshold for I_int).
  """
  layers = list(dict.fromkeys(l for d in per_snapshot for l in d))
  if not layers:
    return None
  cols = min(4, len(layers))
  rows = -(-len(layers) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.5 * rows + 0.8), squeeze=False)
  colors = _snapshot_colors(snapshots)
  for ax, layer in zip(axes.flat, layers):
    vals = [d.get(layer) for d in per_snapshot]
    allv = np.concatenate([v[np.isfinite(v)] for v in vals if v is not None and v.size])
    lo, hi = (np.quantile(allv, [0.001, 0.999]) if allv.size else (0.0, 1.0))
    lo = min(lo, 0.0) if allv.size and allv.min() >= 0 else lo
    if hi <= lo:
      lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    for v, snap, color in zip(vals, snapshots, colors):
      if v is None or not v.size:
        continue
      v = v[np.isfinite(v)]
      zeros = float(np.mean(v == 0)) if v.size else 0.0
      label = snap.label + (f" ({100 * zeros:.0f}% = 0)" if zeros >= 0.005 else "")
      ax.hist(v[(v >= lo) & (v <= hi)], bins=edges, density=True, histtype="step", lw=1.3,
              color=color, label=label)
    if vline is not None and lo <= vline[0] <= hi:
      ax.axvline(vline[0], color="crimson", ls="--", lw=0.8, label=vline[1])
    ax.set_title(f"{layer}  (n={vals[-1].size if vals[-1] is not None else 0})", fontsize=9)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6)
  for ax in list(axes.flat)[len(layers):]:
    ax.axis("off")
  fig.suptitle(title)
  fig.tight_layout()
  return _save(fig, path)


def plot_probe_profile(snapshots: Sequence[Snapshot], path: pathlib.Path,
                       title: str = "") -> pathlib.Path | None:
  """Per-layer firing rate and I_int mean/std on the fixed test batch, one line per snapshot."""
  if not snapshots:
    return None
  keys = set().union(*(s.stats.keys() for s in snapshots))
  lif = probes_lib.layer_names(keys, "firing_rate")
  ei = probes_lib.layer_names(keys, "integrated_mean")
  panels = [("firing_rate", lif, "firing rate"), ("integrated_mean", ei, "I_int mean"),
            ("integrated_std", ei, "I_int std")]
  panels = [p for p in panels if p[1]]
  if not panels:
    return None
  fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4), squeeze=False)
  colors = _snapshot_colors(snapshots)
  for ax, (stat, layers, name) in zip(axes[0], panels):
    for snap, color in zip(snapshots, colors):
      ax.plot(range(len(layers)), [snap.stats.get(f"{stat}/{l}", np.nan) for l in layers], "o-",
              color=color, label=snap.label)
    ax.set_xticks(range(len(layers)), layers, rotation=60, fontsize=7)
    ax.set_title(name)
    ax.grid(alpha=0.3)
  axes[0, 0].legend(fontsize=7)
  fig.suptitle(title)
  fig.tight_layout()
  return _save(fig, path)


# ------------------------------------------------------------------------------------------
# The index page and the whole analysis
# ------------------------------------------------------------------------------------------

def _describe(saved: dict) -> str:
  m, d, t = saved.get("model", {}), saved.get("data", {}), saved.get("train", {})
  return (f"{m.get('variant')} {m.get('arch')} (width ×{m.get('width_multiplier')}, "
          f"T={m.get('T')}) on {d.get('name')}, seed {saved.get('seed')}, "
          f"{t.get('epochs')} epochs, batch {t.get('batch_size')}")


def write_index(out_dir: pathlib.Path, figures: list[tuple[str, str, pathlib.Path]],
                header: list[str], probe_table: list[list[str]] | None,
                energy: tuple[str, str] | None = None) -> tuple[pathlib.Path, pathlib.Path]:
  """index.html and index.md in ``out_dir`` linking every figure (relative links).

  ``figures``: (section, caption, path); ``header``: lines of text; ``probe_table``: rows of
  (first row = column names) or None; ``energy``: (section title, ``energy.markdown_table``)
  or None.
  """
  md = ["# Run analysis", ""] + [f"- {h}" for h in header] + [""]
  body = ["<h1>Run analysis</h1>", "<ul>"] + [f"<li>{html.escape(h)}</li>" for h in header]
  body.append("</ul>")
  if probe_table:
    md += ["## Probe statistics on the fixed test batch", "",
           "| " + " | ".join(probe_table[0]) + " |",
           "|" + "|".join("---" for _ in probe_table[0]) + "|"]
    md += ["| " + " | ".join(r) + " |" for r in probe_table[1:]] + [""]
    body.append("<h2>Probe statistics on the fixed test batch</h2><table border=1 "
                "cellspacing=0 cellpadding=3>")
    body.append("<tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in probe_table[0]) + "</tr>")
    body += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
             for r in probe_table[1:]]
    body.append("</table>")
  if energy:
    title, table = energy
    md += [f"## {title}", "", table, ""]
    body.append(f"<h2>{html.escape(title)}</h2>")
    body += _energy_html(table)
  section = None
  for sec, caption, path in figures:
    rel = path.relative_to(out_dir).as_posix()
    if sec != section:
      md += [f"## {sec}", ""]
      body.append(f"<h2>{html.escape(sec)}</h2>")
      section = sec
    md += [f"[{rel}]({rel}): {caption}", "", f"![{caption}]({rel})", ""]
    body.append(f'<p><a href="{html.escape(rel)}">{html.escape(rel)}</a>: '
                f'{html.escape(caption)}<br><img src="{html.escape(rel)}" '
                f'style="max-width:100%"></p>')
  md_path, html_path = out_dir / "index.md", out_dir / "index.html"
  md_path.write_text("\n".join(md) + "\n")
  html_path.write_text("<!doctype html><html><head><meta charset='utf-8'><title>Run analysis"
                       "</title></head><body style='font-family:sans-serif'>\n"
                       + "\n".join(body) + "\n</body></html>\n")
  return md_path, html_path


def analyze(workdir: str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
            batch_size: int = 64, steps: Sequence[int] | None = None,
            checkpoints: bool = True, include_init: bool = True,
            data_path: str | None = None, replica: int = 0, log=print) -> dict[str, Any]:
  """Write every figure of the run in ``workdir`` and the index page; returns
  {"figures": [paths], "index": path, "index_md": path, "snapshots": [labels]}.

  A run of vmapped seeds (train.num_replicas > 1) is shown for one ``replica``: its own
  metrics (workdir/replica_<r>/metrics.jsonl) and its slice of the stacked checkpoints.
  """
  workdir = pathlib.Path(workdir).expanduser()
  saved = check_workdir(workdir)
  n_rep = int(saved.get("train", {}).get("num_replicas", 1) or 1)
  if not 0 <= replica < n_rep:
    raise ConfigError(f"--replica {replica}: the run has train.num_replicas={n_rep}; pass "
                        f"0..{n_rep - 1}")
  log_dir = workdir / f"replica_{replica}" if n_rep > 1 else workdir
  records = metrics_lib.read_metrics(log_dir if (log_dir / "metrics.jsonl").exists() else workdir)
  if not records:
    raise ConfigError(f"workdir {workdir} has no metrics yet (metrics.jsonl is missing or "
                        "empty): let the run log at least one step first")
  out = pathlib.Path(out_dir).expanduser() if out_dir else workdir / "analysis"
  out.mkdir(parents=True, exist_ok=True)
  name = workdir.resolve().name
  figures: list[tuple[str, str, pathlib.Path]] = [
      ("Training", "loss, accuracy, learning rate and gradient norm",
       plot_curves(records, out / "curves.png", f"{name}: training")),
      ("Training", "firing rate of each LIF layer (training batches)",
       plot_firing_rates(records, out / "firing_rates.png", f"{name}: firing rates")),
  ]
  if any("integrated_mean/" in k for r in records for k in r):
    figures.append(("Training", "E-I balance: mean and std of each E-I layer's currents",
                    plot_ei_balance(records, out / "ei_balance.png",
                                    f"{name}: E-I balance over training")))
  snapshots, info = [], {}
  if checkpoints:
    snapshots, info = collect_snapshots(workdir, saved, batch_size=batch_size, steps=steps,
                                        include_init=include_init, data_path=data_path,
                                        replica=replica, log=log)
  for fig_name, symbol, names in PARAM_KINDS:
    per = [_param_layers(s.params, names) for s in snapshots]
    p = plot_histograms(per, snapshots, out / f"hist_{fig_name}.png",
                        f"{name}: {symbol} per layer")
    if p is not None:
      figures.append(("Distributions at checkpoints", f"{symbol} per layer", p))
  per = [{k.split("/", 1)[1]: v for k, v in s.stats.items()
          if k.startswith(probes_lib.VALUES_STAT + "/")} for s in snapshots]
  p = plot_histograms(per, snapshots, out / "hist_integrated.png",
                      f"{name}: integrated current I_int per layer ({info.get('batch', '')})",
                      vline=(float(saved.get("model", {}).get("threshold", 1.0)), "threshold"))
  if p is not None:
    figures.append(("Distributions at checkpoints",
                    f"integrated current I_int per layer on the {info.get('batch')}", p))
  p = plot_probe_profile(snapshots, out / "probe_profile.png",
                         f"{name}: probes on the {info.get('batch', '')}")
  if p is not None:
    figures.append(("Distributions at checkpoints", "per-layer probe statistics", p))

  probe_rows = None
  if snapshots:
    keys = set().union(*(s.stats.keys() for s in snapshots))
    lif = probes_lib.layer_names(keys, "firing_rate")
    probe_rows = [["snapshot"] + [f"rate {l}" for l in lif]]
    probe_rows += [[s.label] + [f"{s.stats.get(f'firing_rate/{l}', float('nan')):.4f}"
                                for l in lif] for s in snapshots]
    (out / "probes.json").write_text(json.dumps(
        {"batch": info.get("batch"), "snapshots": [
            {"label": s.label, "step": s.step,
             "stats": {k: v for k, v in s.stats.items() if not isinstance(v, np.ndarray)}}
            for s in snapshots]}, indent=2))
  epochs = [r for r in records if r.get("kind") == "epoch"]
  best = (f"; best test accuracy {100 * max(r['test_accuracy'] for r in epochs):.2f} %"
          if epochs else "")
  header = [f"run: {workdir}", f"config: {_describe(saved)}",
            f"logged steps: {max(r.get('step', 0) for r in records)}; epochs evaluated: "
            f"{len(epochs)}{best}"]
  if n_rep > 1:
    header.append(f"replica {replica} of {n_rep} vmapped seeds (seed "
                  f"{int(saved.get('seed', 0)) + replica}); --replica R shows another")
  if snapshots:
    header.append(f"snapshots: {', '.join(s.label for s in snapshots)}; probe batch: "
                  f"{info.get('batch')}")
  elif checkpoints:
    header.append("no checkpoints found: only the training-log figures")
  energy, energy_path = None, None
  if info.get("energy"):
    label, rows = info["energy"]
    energy_path = write_energy(out / "energy.json", label, rows, info.get("batch", ""), replica)
    energy = (f"Energy estimate per example ({label}, {info.get('batch')})",
              energy_lib.markdown_table(rows))
  md_path, html_path = write_index(out, figures, header, probe_rows, energy)
  return {"figures": [f[2] for f in figures], "index": html_path, "index_md": md_path,
          "snapshots": [s.label for s in snapshots], "energy": energy_path}


REQUIRED = {"workdir": "pass --workdir=DIR, the folder of a run made by experiments.train"}


def define_flags(fv: flags.FlagValues, argv: list[str]) -> None:
  """The run folder, where to write, which checkpoints and how large a probe batch."""
  del argv
  flags.DEFINE_string("workdir", None, "the run folder (--workdir of train)", flag_values=fv)
  flags.DEFINE_string("out", None, "output folder (default WORKDIR/analysis)", flag_values=fv)
  flags.DEFINE_integer("batch_size", 64, "test images in the fixed probe batch", lower_bound=1,
                       flag_values=fv)
  flags.DEFINE_list("steps", [], "checkpoint steps to use, comma-separated (default: all "
                    "available)", flag_values=fv)
  flags.DEFINE_bool("checkpoints", True, "use the checkpoints (--nocheckpoints: only the "
                    "figures from metrics.jsonl, no dataset)", flag_values=fv)
  flags.DEFINE_bool("init", True, "include the initial (E-I Init) parameters (--noinit: leave "
                    "them out)", flag_values=fv)
  flags.DEFINE_string("data_path", None, "dataset location if it moved since training "
                      "(data.path)", flag_values=fv)
  flags.DEFINE_integer("replica", 0, "which seed of a train.num_replicas > 1 run to show",
                       lower_bound=0, flag_values=fv)


def body(fv: flags.FlagValues, args: list[str]) -> None:
  """Write the figures and the index; print where."""
  if args:
    raise ConfigError(f"unexpected arguments {' '.join(args)}: see --help")
  try:
    steps = [int(s) for s in fv.steps if s.strip()]
  except ValueError:
    raise ConfigError(f"--steps={','.join(fv.steps)}: give comma-separated integers") from None
  result = analyze(fv.workdir, fv.out, batch_size=fv.batch_size, steps=steps or None,
                   checkpoints=fv.checkpoints, include_init=fv.init, data_path=fv.data_path,
                   replica=fv.replica)
  print(f"wrote {len(result['figures'])} figures; index: {result['index']}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point (``argv`` without the program name); returns the exit status."""
  return cli.main(define_flags, body, argv, REQUIRED, __doc__)


if __name__ == "__main__":
  cli.run_app(main)
