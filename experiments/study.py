r"""The paper's claims tested at a scale a 2-core CPU runs (spec §8.1, §8.3, §8.4, §9).

  python -m experiments.study --root=runs/study                 # run or resume everything, report
  python -m experiments.study --root=runs/study --only=ei_vgg16,no_ei_init
  python -m experiments.study --report_only                     # page and figures from the results
  python -m experiments.study --root=runs/study -- --config.data.path=/data/cifar10.npz

Every condition of ``CONDITIONS`` is one ``experiments.train`` run of ``SCALE["train.num_replicas"]``
vmapped seeds on the same CIFAR-10 subset, with the same number of epochs and the same seeds;
only the paper's recipe of each variant (learning rate, warm-up or none, weight decay) differs, as
in the paper. A run folder ``<root>/<condition>`` resumes from its checkpoints, so stopping the
study (SIGTERM or Ctrl-C: the running training saves a checkpoint) and running the command again
continues where it stopped; a finished condition is not rerun. A run that stops on a non-finite
step or a dead layer is a result ("diverged"), not an error of the study.

After each run its recorder (``record``) writes ``RESULTS_DIR/<condition>.json``: test accuracy
per epoch and seed; each LIF layer's firing rate at E-I Init and at the end, on the first
``--batch_size`` test images, and the number of silent layers (rate below ``SILENT_RATE``); the
gradient norm of the W_EI parameters against all others on that batch (the cross-entropy of the
model at init and at the end); whether training met a non-finite step; and the bimodality
coefficients of W_EE and of the integrated current I_int at init and at the end (every seed), with
their histograms (first seed). These small files are committed: ``--report_only`` rebuilds the
page ``docs/study.md`` and its figures (``docs/figures/study_*.png``) from them
(``experiments/study_report.py``) without training anything.

``--scale=tiny`` runs the same machinery for a few steps on synthetic data (a check, not a study).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Any, Sequence

import numpy as np
from absl import flags

from ei_snn_jax.training.config import ConfigError
from experiments import cli, seed_spread

REPO = pathlib.Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "experiments" / "results" / "study"
PAGE = REPO / "docs" / "study.md"
FIGURES = REPO / "docs" / "figures"

# The scale of every condition (config overrides). Measured on the 2-core CPU: at 1/8 of the
# width (2 inhibitory filters in the first layer) the full method did not learn at all (loss
# 2.303 after 3 epochs; the first layer's integrated current grew from sd 1.4 to 2,096 as its
# shunting denominator collapsed), so the study runs at 1/4 (4 inhibitory filters, as the quick
# start): a pilot of one seed reached 14.4 / 19.4 % after epochs 1-2 (280 s, with a compile
# sharing the CPU). Three seeds x 8 epochs x 5,000 images were planned at ~25 min a condition;
# E-I VGG-16 took 122 min (its result's ``wall_time_s``), so the study spans sessions.
SCALE: dict[str, Any] = {
    "model.width_multiplier": 0.25,
    "data.train_subset": 5000,
    "data.test_subset": 2000,
    "train.epochs": 8,
    "train.batch_size": 64,
    "train.eval_batch_size": 400,
    "train.num_replicas": 3,
    "train.log_every_steps": 20,
    "train.checkpoint_every_steps": 200,
    "train.keep_checkpoints": 1,
    "train.stop_on_dead_layer": False,
    "train.progress_bar": False,
    "seed": 0,
}
# A tiny mode of the whole study (synthetic data, a few steps): checks the machinery end to end.
TINY_SCALE: dict[str, Any] = {
    **SCALE,
    "model.width_multiplier": 0.0625,
    "data.source": "synthetic",
    "data.synthetic_train_size": 64,
    "data.synthetic_test_size": 32,
    "data.train_subset": 0,
    "data.test_subset": 0,
    "train.epochs": 2,
    "train.batch_size": 16,
    "train.eval_batch_size": 32,
    "train.num_replicas": 2,
    "train.log_every_steps": 2,
    "train.checkpoint_every_steps": 4,
}
SCALES = {"cpu": SCALE, "tiny": TINY_SCALE}
SILENT_RATE = 1e-3        # a LIF layer firing less than 0.1 % of the time is silent
CHANCE = 10.0             # CIFAR-10, percent


@dataclasses.dataclass(frozen=True)
class Condition:
  """One run of the study: a config file and what it changes."""
  name: str
  group: str        # "method", "ablation", "baseline", "depth" or "diagnostic"
  config: str
  overrides: tuple[tuple[str, Any], ...] = ()
  label: str = ""


# The depth series: E-I, E-I without E-I Init and BN-SNN at each depth; VGG-16's three are the
# main conditions. VGG-19 is left out: VGG-16 at this scale took 122 min of this CPU for its three
# seeds (the budget is ~30 min a condition), and VGG-19 costs about 1.2x that per
# condition, ~7 h for its three; VGG-8 -> 11 -> 16 already doubles the depth.
DEPTHS = ("vgg8", "vgg11", "vgg16")
DEPTH_KINDS = ("ei", "no_ei_init", "bn")


def depth_condition(kind: str, arch: str) -> str:
  """The condition name of ``kind`` (one of ``DEPTH_KINDS``) at depth ``arch``."""
  if arch == "vgg16":
    return {"ei": "ei_vgg16", "no_ei_init": "no_ei_init", "bn": "bn_vgg16"}[kind]
  return f"{kind}_{arch}"


def _depth_series() -> list[Condition]:
  out = []
  for arch in DEPTHS[:-1]:
    name = f"VGG-{arch[3:]}"
    out += [Condition(f"ei_{arch}", "depth", f"configs/ei_cifar10_{arch}.py", (), f"E-I {name}"),
            Condition(f"no_ei_init_{arch}", "depth", f"configs/ei_cifar10_{arch}.py",
                      (("model.ei_init", False),), f"E-I {name} without E-I Init"),
            Condition(f"bn_{arch}", "depth", "configs/bn_cifar10_vgg16.py",
                      (("model.arch", arch),), f"BN-SNN {name}")]
  return out


CONDITIONS: tuple[Condition, ...] = tuple([
    Condition("ei_vgg16", "method", "configs/ei_cifar10_vgg16.py", (), "E-I VGG-16 (full method)"),
    Condition("no_ei_init", "ablation", "configs/ablations/no_ei_init.py", (),
              "without E-I Init"),
    Condition("no_stabilization", "ablation", "configs/ablations/no_stabilization.py", (),
              "without adaptive stabilization"),
    Condition("no_ste", "ablation", "configs/ablations/no_ste.py", (),
              "without the straight-through estimator"),
    Condition("no_wei_grad_scaling", "ablation", "configs/ablations/no_wei_grad_scaling.py", (),
              "without the W_EI gradient scaling"),
    Condition("bn_vgg16", "baseline", "configs/bn_cifar10_vgg16.py", (), "BN-SNN VGG-16"),
    Condition("dann_vgg16", "baseline", "configs/dann_cifar10_vgg16.py", (),
              "spiking DANN VGG-16"),
] + _depth_series() + [
    # Not a claim: every E-I VGG-11 seed fell back to chance loss within epochs 2-4 at its
    # recipe's peak lr (0.002), reached after one warm-up epoch (79 steps; the recipe warms up
    # for 10 of 300 epochs, ~3,900 steps). Does a longer warm-up, same peak, avoid it?
    Condition("ei_vgg11_warmup3", "diagnostic", "configs/ei_cifar10_vgg11.py",
              (("optim.warmup_epochs", 3),), "E-I VGG-11, 3 warm-up epochs"),
    # ... or a lower peak: VGG-16's recipe lr, half VGG-11's.
    Condition("ei_vgg11_half_lr", "diagnostic", "configs/ei_cifar10_vgg11.py",
              (("optim.lr", 0.001),), "E-I VGG-11, peak lr 0.001"),
])
BY_NAME = {c.name: c for c in CONDITIONS}


def condition_overrides(cond: Condition, scale: dict[str, Any] | None = None) -> dict[str, Any]:
  """The ``--config.KEY=VALUE`` overrides of a condition: the study's scale, a warm-up of one
  epoch where the variant's recipe warms up (none where it does not, as BN-SNN), and the
  condition's own changes (a warm-up at most ``train.epochs`` - 1)."""
  from ei_snn_jax.training import config as config_lib
  scale = dict(SCALE if scale is None else scale)
  recipe = config_lib.load_config(cond.config)
  out = dict(scale)
  out["optim.warmup_epochs"] = 1 if recipe.optim.warmup_epochs > 0 else 0
  out.update(dict(cond.overrides))
  # A condition's longer warm-up is cut to what a shorter scale holds (tiny: 2 epochs).
  out["optim.warmup_epochs"] = min(out["optim.warmup_epochs"], out["train.epochs"] - 1)
  return out


def train_command(cond: Condition, root: pathlib.Path, extra: Sequence[str] = (),
                  scale: dict[str, Any] | None = None) -> list[str]:
  """The ``experiments.train`` command of a condition."""
  cmd = [sys.executable, "-m", "experiments.train", f"--config={cond.config}",
         f"--workdir={root / cond.name}"]
  cmd += [f"--config.{k}={v}" for k, v in condition_overrides(cond, scale).items()]
  return cmd + list(extra)


# ------------------------------------------------------------------------------------------------
# Running


def status_path(workdir: pathlib.Path) -> pathlib.Path:
  return workdir / "study_status.json"


def read_status(workdir: pathlib.Path) -> dict[str, Any]:
  """The study's record of how a condition's training ended ({"status": "missing"} if never)."""
  p = status_path(workdir)
  return json.loads(p.read_text()) if p.is_file() else {"status": "missing"}


def classify_exit(returncode: int, output_tail: str) -> dict[str, Any]:
  """How a training run ended, from its exit status and the last lines it printed:
  "finished", "diverged" (a non-finite step or a dead layer: a result of the condition),
  "stopped" (a signal; resumable) or "failed" (anything else: the study stops)."""
  lines = [l for l in output_tail.splitlines() if l.strip()]
  error = next((l for l in reversed(lines) if l.startswith("error:")), lines[-1] if lines else "")
  if returncode == 0:
    return {"status": "finished", "line": lines[-1] if lines else ""}
  lowered = error.lower()
  if returncode == 2 and any(w in lowered for w in ("non-finite", "dead", "diverg")):
    return {"status": "diverged", "line": error}
  if returncode < 0 or returncode in (130, 143) or "stopped by signal" in lowered:
    return {"status": "stopped", "line": error}
  return {"status": "failed", "line": error, "returncode": returncode}


class _Forward:
  """Forwards SIGTERM/SIGINT to the running training (which checkpoints and exits)."""

  def __init__(self):
    self.child: subprocess.Popen | None = None
    self.stop = False

  def __call__(self, signum, frame):
    del frame
    self.stop = True
    if self.child is not None and self.child.poll() is None:
      self.child.send_signal(signum)


def run_condition(cond: Condition, root: pathlib.Path, extra: Sequence[str] = (),
                  forward: _Forward | None = None, log=print,
                  scale: dict[str, Any] | None = None) -> dict[str, Any]:
  """Train (or resume) one condition unless its run already ended; returns its status."""
  workdir = root / cond.name
  status = read_status(workdir)
  if status["status"] in ("finished", "diverged"):
    log(f"{cond.name}: {status['status']} earlier ({status.get('line', '')})")
    return status
  workdir.mkdir(parents=True, exist_ok=True)
  cmd = train_command(cond, root, extra, scale)
  log(f"{cond.name}: training ({' '.join(cmd[1:4])} ...), log in {workdir / 'study.log'}")
  start = time.time()
  with open(workdir / "study.log", "a") as out:
    out.write(f"\n$ {' '.join(cmd)}\n")
    out.flush()
    child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    if forward is not None:
      forward.child = child
    returncode = child.wait()
  tail = (workdir / "study.log").read_text()[-4000:]
  status = classify_exit(returncode, tail)
  status["wall_time_s"] = round(time.time() - start, 1) + float(
      read_status(workdir).get("wall_time_s", 0.0))
  if status["status"] != "stopped":
    status_path(workdir).write_text(json.dumps(status, indent=1) + "\n")
  log(f"{cond.name}: {status['status']}: {status.get('line', '')}")
  return status


# ------------------------------------------------------------------------------------------------
# Recording


def bimodality_coefficient(values: np.ndarray) -> float:
  """Sarle's bimodality coefficient b = (g² + 1) / (k + 3 (n-1)² / ((n-2)(n-3))), g the sample
  skewness and k the excess kurtosis: b > 5/9 (the value of a uniform distribution) suggests a
  bimodal (or very skewed) distribution."""
  from scipy import stats
  v = np.asarray(values, np.float64).ravel()
  n = v.size
  if n < 4 or np.std(v) == 0:
    return math.nan
  g = stats.skew(v, bias=False)
  k = stats.kurtosis(v, bias=False)
  return float((g * g + 1.0) / (k + 3.0 * (n - 1) ** 2 / ((n - 2) * (n - 3))))


def histogram(values: np.ndarray, bins: int = 40) -> dict[str, list[float]]:
  """Counts over ``bins`` equal bins between the 0.5th and 99.5th percentile."""
  v = np.asarray(values, np.float64).ravel()
  v = v[np.isfinite(v)]
  if v.size == 0:
    return {"edges": [], "counts": []}
  lo, hi = np.percentile(v, [0.5, 99.5])
  hi = hi if hi > lo else lo + 1.0
  counts, edges = np.histogram(np.clip(v, lo, hi), bins=bins, range=(lo, hi))
  return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def _leaves_named(params, names: Sequence[str]) -> list[np.ndarray]:
  import jax
  out = []
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    if str(getattr(path[-1], "key", path[-1])) in names:
      out.append(np.asarray(leaf))
  return out


def _loss_gradient(model):
  """(variables, x, y) -> the cross-entropy gradient of the parameters through the training
  forward pass (E-I Prop's backward rules included), on the batch (x, y)."""
  import jax
  import optax

  def gradient(variables, x, y):
    rest = {k: v for k, v in variables.items() if k != "params"}

    def loss(params):
      out = model.apply({"params": params, **rest}, x, train=True,
                        mutable=list(rest) if rest else False,
                        rngs={"dropout": jax.random.key(0)})
      logits = out[0] if rest else out
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    return jax.grad(loss)(variables["params"])
  return gradient


def make_gradient_norms(model):
  """A jitted (variables, x, y) -> {"w_ei": norm, "other": norm}: the L2 norm of the
  cross-entropy gradient of the W_EI parameters and of every other parameter, through the
  training forward pass (E-I Prop's backward rules included), on the batch (x, y). A model
  without W_EI (BN-SNN) gets ``"w_ei": None``, not a norm of 0."""
  import jax
  import jax.numpy as jnp
  gradient = _loss_gradient(model)
  is_w_ei = lambda path: str(getattr(path[-1], "key", path[-1])) == "w_ei"

  def norms(variables, x, y):
    sq = {"w_ei": jnp.float32(0), "other": jnp.float32(0)}
    for path, g in jax.tree_util.tree_leaves_with_path(gradient(variables, x, y)):
      kind = "w_ei" if is_w_ei(path) else "other"
      sq[kind] = sq[kind] + jnp.sum(jnp.square(g.astype(jnp.float32)))
    return {k: jnp.sqrt(v) for k, v in sq.items()}

  jitted = jax.jit(norms)

  def host(variables, x, y):
    out = {k: float(v) for k, v in jitted(variables, x, y).items()}
    if not any(is_w_ei(p) for p, _ in jax.tree_util.tree_leaves_with_path(variables["params"])):
      out["w_ei"] = None
    return out

  return host


def make_gradient_agreement(model, reference):
  """A jitted (variables, x, y) -> {"cosine", "relative_difference"}: how the parameter
  gradient of ``model`` compares with that of ``reference`` (the same parameters, another
  backward rule) on the batch (x, y): cos(g, g_ref) and |g - g_ref| / |g_ref| over every
  parameter. For the no-STE ablation, ``reference`` is the model with the straight-through
  estimator (spec §3.2): a cosine near 1 means the STE barely changes the step's direction,
  below 0 the step of one ascends the other's loss surface.

  The two differ only where I_shunt is 0 under a nonzero I_bal. With every weight positive (at
  E-I Init) a zero of I_shunt means nothing in the receptive field, so I_bal is 0 there too and
  both gradients are equal; zero weights (Dale's projection clips at 0) make the difference."""
  import jax
  import jax.numpy as jnp
  ours, theirs = _loss_gradient(model), _loss_gradient(reference)

  def agreement(variables, x, y):
    flat = lambda g: jnp.concatenate([l.astype(jnp.float32).ravel() for l in jax.tree.leaves(g)])
    g, ref = flat(ours(variables, x, y)), flat(theirs(variables, x, y))
    return {"cosine": jnp.dot(g, ref) / (jnp.linalg.norm(g) * jnp.linalg.norm(ref)),
            "relative_difference": jnp.linalg.norm(g - ref) / jnp.linalg.norm(ref)}

  jitted = jax.jit(agreement)
  return lambda variables, x, y: {k: float(v) for k, v in jitted(variables, x, y).items()}


def _snapshot(model, variables, x, y, gradient_norms, histograms: bool = True
              ) -> dict[str, Any]:
  """Firing rates, silent layers, the fraction of exactly-zero shunting currents per E-I/DANN
  layer, W_EI/other gradient norms, bimodality coefficients (and the histograms, if
  ``histograms``) of one seed's ``variables`` on the batch (x, y)."""
  from ei_snn_jax.analysis import probes
  stats = probes.probe(model, variables, x, values=True)
  rates = {k.split("/", 1)[1]: float(v) for k, v in stats.items()
           if k.startswith("firing_rate/")}
  current = np.concatenate([np.asarray(v, np.float64).ravel() for k, v in stats.items()
                            if k.startswith(probes.VALUES_STAT + "/")] or [np.zeros(0)])
  w_ee = _leaves_named(variables["params"], ("w_ee", "w_ex"))
  w_ee_flat = np.concatenate([w.ravel() for w in w_ee]) if w_ee else np.zeros(0)
  finite = all(np.isfinite(np.asarray(l)).all() for l in _leaves_named(
      variables["params"], ("w_ee", "w_ex", "w_ie", "w_ix", "w_ei", "kernel")))
  zeros = {k.split("/", 1)[1]: float(v) for k, v in stats.items()
           if k.startswith("zero_shunting_fraction/")}
  return {
      "firing_rate": rates,
      "silent_layers": sum(r < SILENT_RATE for r in rates.values()),
      "zero_shunting_fraction": zeros,
      "gradient_norm": gradient_norms(variables, x, y) if finite else None,
      "bimodality": {"w_ee": bimodality_coefficient(w_ee_flat) if w_ee_flat.size else math.nan,
                     "integrated_current": bimodality_coefficient(current)
                     if current.size else math.nan},
      **({"histogram": {"w_ee": histogram(w_ee_flat) if w_ee_flat.size else None,
                        "integrated_current": histogram(current) if current.size else None}}
         if histograms else {}),
  }


def record(cond: Condition, workdir: pathlib.Path, *, batch_size: int = 256,
           data_args: Sequence[str] = (), scale: dict[str, Any] | None = None
           ) -> dict[str, Any]:
  """The small result of one condition's run (see the module docstring)."""
  import jax
  import ml_collections
  from ei_snn_jax import models
  from ei_snn_jax.data import transforms
  from ei_snn_jax.training import checkpointing, train
  from experiments.analyze import restore_config

  # A run that diverged at its first step logged nothing: its record is the status and the
  # init snapshot (no accuracies, no final state).
  saved, seeds = seed_spread.load_seeds(workdir, require_metrics=False)
  accs = [seed_spread.epoch_accuracies(s) for s in seeds]
  nonfinite = any("non-finite" in json.dumps(r) for s in seeds for r in s
                  if r.get("kind") not in ("train", "epoch"))
  status = read_status(workdir)
  data_path = next((a.split("=", 1)[1] for a in data_args if a.startswith("--config.data.path=")),
                   None)
  cfg = restore_config(saved, data_path)
  exp = train.build_experiment(cfg)
  n = min(batch_size, len(exp.dataset.x_test))
  x = transforms.eval_transform(cfg.data.name)(jax.numpy.asarray(exp.dataset.x_test[:n]))
  y = jax.numpy.asarray(exp.dataset.y_test[:n]).astype(jax.numpy.int32)
  init = train.init_state(exp)
  final, final_step = None, None
  ckpt = checkpointing.Checkpointer(workdir, read_only=True)
  try:
    step = ckpt.latest_step()
    if step is not None:
      final, _ = ckpt.restore(step, init, exp.replicated, "latest")
      final_step = int(step)
  finally:
    ckpt.close()
  n_rep = int(cfg.train.num_replicas or 1)

  def variables(state, r):
    pick = (lambda t: jax.tree.map(lambda a: a[r], t)) if n_rep > 1 else (lambda t: t)
    out = {"params": pick(state.params)}
    if state.batch_stats:
      out["batch_stats"] = pick(state.batch_stats)
    return out

  norms = make_gradient_norms(exp.model)
  # Without the STE (spec §3.2): the direction of its gradient against the STE's, same params.
  ste = None
  if cfg.model.variant == "ei" and not cfg.model.ei_ste:
    with_ste = ml_collections.ConfigDict(cfg.model.to_dict())
    with_ste.ei_ste = True
    ste = make_gradient_agreement(
        exp.model, models.create_model(with_ste, exp.dataset.num_classes))
  per_seed = []
  for r in range(n_rep):
    row = {"seed": int(saved.get("seed", 0)) + r,
           "test_accuracy": accs[r] if r < len(accs) else []}
    for when, state in (("init", init), ("final", final)):
      if state is None:
        continue
      row[when] = _snapshot(exp.model, variables(state, r), x, y, norms, histograms=r == 0)
      if ste is not None and row[when]["gradient_norm"] is not None:
        row[when]["ste_gradient"] = ste(variables(state, r), x, y)
    per_seed.append(row)
  return {"condition": cond.name, "label": cond.label, "group": cond.group,
          "config": cond.config, "overrides": condition_overrides(cond, scale),
          "arch": saved["model"]["arch"], "variant": saved["model"]["variant"],
          "status": status.get("status", "missing"), "status_line": status.get("line", ""),
          "wall_time_s": training_wall_time(workdir, status), "final_step": final_step,
          "steps_per_epoch": exp.steps_per_epoch, "nonfinite_event": bool(
              nonfinite or status.get("status") == "diverged"),
          "probe_batch": f"first {n} test images", "code": code_version(),
          "seeds": per_seed}


def training_wall_time(workdir: pathlib.Path, status: dict[str, Any]) -> float | None:
  """Seconds the condition's training ran, summed over every resumed part: the run's own
  ``summary.json`` ``wall_time`` (restored with each checkpoint), else the study's record of
  its last part."""
  summary = workdir / "summary.json"
  if summary.is_file():
    wall = json.loads(summary.read_text()).get("wall_time")
    if wall is not None:
      return round(float(wall), 1)
  return status.get("wall_time_s")


def code_version(repo: pathlib.Path = REPO) -> str:
  """The commit of the code in ``repo`` (``git rev-parse --short HEAD``), with "+changes" when
  tracked files differ from it; "unknown" outside a git checkout."""
  def git(*args):
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          timeout=30)
  head = git("rev-parse", "--short", "HEAD")
  if head.returncode != 0:
    return "unknown"
  dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
  return head.stdout.strip() + ("+changes" if dirty else "")


def write_result(result: dict[str, Any], results_dir: pathlib.Path = RESULTS_DIR) -> pathlib.Path:
  """``results_dir/<condition>.json`` (NaN written as null)."""
  def clean(v):
    if isinstance(v, float) and not math.isfinite(v):
      return None
    if isinstance(v, dict):
      return {k: clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
      return [clean(x) for x in v]
    return v
  results_dir.mkdir(parents=True, exist_ok=True)
  path = results_dir / f"{result['condition']}.json"
  path.write_text(json.dumps(clean(result), indent=1) + "\n")
  return path


def load_results(results_dir: pathlib.Path = RESULTS_DIR) -> dict[str, dict[str, Any]]:
  """Every recorded condition: {name: result}."""
  if not results_dir.is_dir():
    return {}
  return {p.stem: json.loads(p.read_text()) for p in sorted(results_dir.glob("*.json"))}


# ------------------------------------------------------------------------------------------------
# The command


def define_flags(fv: flags.FlagValues, argv: list[str]) -> None:
  """--root, --only, --report_only, --batch_size, --results_dir, --page, --scale."""
  del argv
  flags.DEFINE_string("root", "runs/study", "folder of the condition's run folders",
                      flag_values=fv)
  flags.DEFINE_list("only", [], "run only these conditions (names of experiments.study."
                    "CONDITIONS)", flag_values=fv)
  flags.DEFINE_bool("report_only", False, "train nothing: rebuild the page from the results",
                    flag_values=fv)
  flags.DEFINE_integer("batch_size", 256, "test images the recorder probes", flag_values=fv)
  flags.DEFINE_string("results_dir", str(RESULTS_DIR), "where the small result files go",
                      flag_values=fv)
  flags.DEFINE_string("page", str(PAGE), "the results page to write (figures beside it, in "
                      "figures/)", flag_values=fv)
  flags.DEFINE_enum("scale", "cpu", list(SCALES), "cpu: the study; tiny: a few steps on "
                    "synthetic data (checks the machinery)", flag_values=fv)


def body(fv: flags.FlagValues, args: list[str]) -> None:
  """Run (or resume) and record each condition, then write the page."""
  unknown = [n for n in fv.only if n not in BY_NAME]
  if unknown:
    raise ConfigError(f"--only: unknown condition(s) {', '.join(unknown)}: choose from "
                      f"{', '.join(BY_NAME)}")
  extra = [a for a in args if a.startswith("--config.")]
  if len(extra) != len(args):
    raise ConfigError(f"unexpected arguments {' '.join(a for a in args if a not in extra)}: "
                      "after -- only --config.KEY=VALUE overrides for every run")
  results_dir = pathlib.Path(fv.results_dir).expanduser()
  scale = SCALES[fv.scale]
  if not fv.report_only:
    root = pathlib.Path(fv.root).expanduser().resolve()
    forward = _Forward()
    old = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
      for i, cond in enumerate([BY_NAME[n] for n in fv.only] if fv.only else CONDITIONS):
        print(f"[{i + 1}/{len(fv.only or CONDITIONS)}] {cond.name}", flush=True)
        load_before = os.getloadavg()[0]
        status = run_condition(cond, root, extra, forward, scale=scale)
        if forward.stop or status["status"] == "stopped":
          print("study stopped: run the same command again to resume", flush=True)
          return
        if status["status"] == "failed":
          raise ConfigError(f"{cond.name}: training failed ({status['line']}); see "
                            f"{root / cond.name / 'study.log'}")
        result = record(cond, root / cond.name, batch_size=fv.batch_size, data_args=extra,
                        scale=scale)
        result["load"] = f"{load_before:.1f}–{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        print(f"{cond.name}: recorded {write_result(result, results_dir)}", flush=True)
    finally:
      for s, h in old.items():
        signal.signal(s, h)
  from experiments import study_report
  results = load_results(results_dir)
  page = pathlib.Path(fv.page).expanduser()
  page = study_report.write_page(results, page, page.parent / "figures", results_dir)
  for v in study_report.verdicts(results):
    print(f"{v['verdict']}: {v['claim']} ({v['evidence']})", flush=True)
  print(f"wrote {page}", flush=True)


def main(argv: list[str] | None = None) -> int:
  """Entry point (``argv`` without the program name); returns the exit status."""
  return cli.main(define_flags, body, argv, {}, __doc__)


if __name__ == "__main__":
  cli.run_app(main)
