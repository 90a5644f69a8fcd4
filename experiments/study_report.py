r"""The results page of the study (experiments/study.py): one verdict per claim, the table of
conditions and the figures, all computed from the recorded result files (pure functions of
their dicts), so the page rebuilds without training anything:

  python -m experiments.study --report_only

Decision rules (stated on the page): an accuracy difference counts when it exceeds two pooled
seed standard deviations and at least 2 points (``noise_floor``); a LIF layer is silent below a
firing rate of ``study.SILENT_RATE``; a bimodality coefficient above 5/9 (+0.05) that rose during
training counts as bimodal; the no-STE gradient is reversed when its cosine with the STE's
gradient (same parameters and batch; mean over the seeds, the lower of init and the end) is
below 0, and agrees from ``STE_AGREES`` up.
"""

from __future__ import annotations

import math
import os
import pathlib
from typing import Any, Sequence

import numpy as np

from ei_snn_jax.analysis.probes import layer_sort_key
from experiments import seed_spread
from experiments.study import (CHANCE, CONDITIONS, DEPTHS, FIGURES, PAGE, REPO, RESULTS_DIR,
                               SCALE, SILENT_RATE, depth_condition)


# cos(no-STE gradient, STE gradient) from which the two count as pointing the same way.
STE_AGREES = 0.9

# ------------------------------------------------------------------------------------------------
# Verdicts: one per claim, from the recorded results (pure functions of the result dicts)


def final_accuracies(result: dict[str, Any]) -> list[float]:
  """Each seed's last evaluated test accuracy (percent); a seed with no evaluation (its run
  diverged before the first epoch ended) counts as chance."""
  return [s["test_accuracy"][-1] if s.get("test_accuracy") else CHANCE
          for s in result["seeds"]]


def accuracy(result: dict[str, Any]) -> dict[str, float]:
  """mean, sd, ... of the final test accuracies over the seeds."""
  return seed_spread.spread(final_accuracies(result))


def zero_shunting(result: dict[str, Any], when: str) -> list[tuple[str, float]]:
  """The layers with exactly-zero shunting currents in the ``when`` snapshot, with their
  fraction of zero entries (seed mean), largest first; [] when not recorded."""
  per_seed = [s[when].get("zero_shunting_fraction") or {} for s in result["seeds"]
              if s.get(when)]
  layers = sorted({k for z in per_seed for k in z})
  means = [(k, float(np.mean([z[k] for z in per_seed if k in z]))) for k in layers]
  return sorted([m for m in means if m[1] > 0], key=lambda m: -m[1])


def stalled_seeds(result: dict[str, Any], within: float = 2.0) -> list[tuple[int, float, str]]:
  """(seed, final accuracy, what its layers do at the end) for each seed that ends within
  ``within`` points of chance: its silent LIF layers (rate < SILENT_RATE) and saturated ones
  (rate > 1 - SILENT_RATE, firing at every time step), if any."""
  out = []
  for s, acc in zip(result["seeds"], final_accuracies(result)):
    if acc > CHANCE + within:
      continue
    rates = (s.get("final") or {}).get("firing_rate", {})
    silent = sorted((k for k, r in rates.items() if r < SILENT_RATE), key=layer_sort_key)
    saturated = sorted((k for k, r in rates.items() if r > 1 - SILENT_RATE), key=layer_sort_key)
    why = [f"{k} saturated ({rates[k]:.3f})" for k in saturated]
    why += [f"{len(silent)} silent layers ({silent[0]}–{silent[-1]})"] if len(silent) > 1 else \
        [f"{k} silent" for k in silent]
    out.append((s["seed"], acc, ", ".join(why)))
  return out


def depth_pairs(results: dict[str, dict[str, Any]], archs: Sequence[str] = DEPTHS
                ) -> list[tuple[str, dict[str, float], dict[str, float]]]:
  """(arch, E-I accuracy, without-E-I-Init accuracy) for each depth of ``archs`` with both
  conditions recorded."""
  out = []
  for arch in archs:
    e, o = depth_condition("ei", arch), depth_condition("no_ei_init", arch)
    if e in results and o in results:
      out.append((arch, accuracy(results[e]), accuracy(results[o])))
  return out


def noise_floor(a: dict[str, float], b: dict[str, float]) -> float:
  """The smallest accuracy difference (points) read as real here: two pooled seed sds, and at
  least 2 points."""
  sd = [x for x in (a["sd"], b["sd"]) if x is not None and math.isfinite(x)]
  pooled = math.sqrt(sum(x * x for x in sd) / len(sd)) if sd else 0.0
  return max(2.0, 2.0 * pooled)


def _mean_of(result: dict[str, Any], when: str, fn) -> float:
  vals = [fn(s[when]) for s in result["seeds"] if s.get(when)]
  vals = [v for v in vals if v is not None and math.isfinite(v)]
  return float(np.mean(vals)) if vals else math.nan


def silent_layers(result: dict[str, Any], when: str) -> float:
  """Mean number of silent LIF layers over the seeds at "init" or "final"."""
  return _mean_of(result, when, lambda s: s["silent_layers"])


def wei_gradient_ratio(result: dict[str, Any], when: str = "init") -> float:
  """Mean over seeds of |dL/dW_EI| / |dL/d(every other parameter)|; nan for a model without
  W_EI (a BN-SNN: its record holds None, or a norm of 0 in records written before)."""
  if result.get("variant") == "bn":   # records written before None
    return math.nan
  def ratio(s):
    g = s.get("gradient_norm")
    return (g["w_ei"] / g["other"] if g and g.get("other") and g.get("w_ei") is not None
            else math.nan)
  return _mean_of(result, when, ratio)


def ste_cosine(result: dict[str, Any], when: str = "init") -> float:
  """Mean over the seeds of cos(gradient without, gradient with the STE) at ``when`` (the
  no-STE condition's ``ste_gradient``); nan where it was not recorded."""
  values = [s[when]["ste_gradient"]["cosine"] for s in result["seeds"]
            if (s.get(when) or {}).get("ste_gradient")]
  return float(np.mean(values)) if values else math.nan


def bimodality(result: dict[str, Any], when: str, what: str) -> float:
  """Mean over seeds of the bimodality coefficient of W_EE or the integrated current."""
  return _mean_of(result, when, lambda s: s["bimodality"].get(what))


Verdict = dict[str, str]


def _verdict(claim: str, verdict: str, evidence: str) -> Verdict:
  return {"claim": claim, "verdict": verdict, "evidence": evidence}


def _pair(results, base: str, other: str):
  if base not in results or other not in results:
    return None
  a, b = accuracy(results[base]), accuracy(results[other])
  return a, b, a["mean"] - b["mean"], noise_floor(a, b)


def _fmt(s: dict[str, float]) -> str:
  sd = f" ± {s['sd']:.1f}" if s["sd"] is not None and math.isfinite(s["sd"]) else ""
  return f"{s['mean']:.1f}{sd} %"


NOT_LEARNING = ("the full method itself barely learns at this scale ({}; needs >= chance + 10 "
                "points): a larger scale is needed to judge accuracy")


def verdicts(results: dict[str, dict[str, Any]]) -> list[Verdict]:
  """Reproduced / not reproduced / inconclusive for each claim, with the numbers deciding it.
  Conditions not yet recorded make their claim "not run yet"."""
  out: list[Verdict] = []
  full = results.get("ei_vgg16")
  trains = full is not None and accuracy(full)["mean"] >= CHANCE + 10

  def need(claim, *names, mechanism: bool = False):
    """Whether the claim can be judged: its conditions ran, and the full method learns (a claim
    with a ``mechanism`` measured directly, at init or as an event, is judged either way)."""
    missing = [n for n in names if n not in results]
    if missing:
      out.append(_verdict(claim, "not run yet", f"missing: {', '.join(missing)}"))
      return False
    if not trains and not mechanism:
      others = "".join(f"{n} {_fmt(accuracy(results[n]))}; " for n in names if n != "ei_vgg16")
      out.append(_verdict(claim, "inconclusive",
                          others + NOT_LEARNING.format(_fmt(accuracy(full)))))
      return False
    return True

  claim = "Without E-I Init, training fails (firing-rate collapse)"
  if need(claim, "ei_vgg16", "no_ei_init", mechanism=True):
    a, b, gap, noise = _pair(results, "ei_vgg16", "no_ei_init")
    silent = (silent_layers(results["no_ei_init"], "init"),
              silent_layers(results["no_ei_init"], "final"))
    ev = (f"full {_fmt(a)}, without {_fmt(b)} (gap {gap:.1f}, noise {noise:.1f}); silent layers "
          f"without E-I Init: {silent[0]:.1f} at init, {silent[1]:.1f} at the end "
          f"(full: {silent_layers(full, 'init'):.1f} / {silent_layers(full, 'final'):.1f})")
    if trains:
      fails = b["mean"] <= CHANCE + 5 or (gap > noise and max(silent) > 0)
      verdict = "reproduced" if fails else ("not reproduced" if gap <= noise else "inconclusive")
    else:   # the collapse is measured at init; whether training fails needs a learning baseline
      collapse = silent[0] >= silent_layers(full, "init") + 1
      # Shallower networks of the depth series still tell whether training fails without it.
      shallower = depth_pairs(results, DEPTHS[:-1])
      trains_without = [arch for arch, e, o in shallower
                        if o["mean"] >= CHANCE + 10 and o["mean"] >= e["mean"] - noise_floor(e, o)]
      verdict = ("reproduced for the firing-rate collapse; " if collapse else
                 "not reproduced for the firing rates; ") + "training inconclusive"
      if trains_without:
        verdict += (f" at VGG-16; without E-I Init it trains as well or better at "
                    f"{', '.join(trains_without)}")
      ev += "; " + NOT_LEARNING.format(_fmt(a))
      ev += "".join(f"; {arch}: full {_fmt(e)}, without {_fmt(o)}" for arch, e, o in shallower)
    out.append(_verdict(claim, verdict, ev))

  claim = "Without adaptive stabilization, numerical explosion"
  if need(claim, "ei_vgg16", "no_stabilization", mechanism=True):
    a, b, gap, noise = _pair(results, "ei_vgg16", "no_stabilization")
    r = results["no_stabilization"]
    ev = (f"full {_fmt(a)}, without {_fmt(b)}; non-finite step: "
          f"{'yes' if r['nonfinite_event'] else 'no'} ({r['status']}"
          f"{': ' + r['status_line'] if r['status'] == 'diverged' else ''})")
    if r["nonfinite_event"]:   # the explosion itself, whether or not the full method learns
      verdict = "reproduced"
    elif trains:
      verdict = ("reproduced" if b["mean"] <= CHANCE + 5 else
                 "not reproduced" if gap <= noise else "inconclusive")
    else:
      verdict = "inconclusive"
      ev += "; " + NOT_LEARNING.format(_fmt(a))
    out.append(_verdict(claim, verdict, ev))

  claim = "Without the straight-through estimator, wrong gradient direction (worse training)"
  # The lower of init and the end: at init every weight is positive and the STE changes nothing
  # (``study.make_gradient_agreement``); it can once Dale's projection has zeroed weights.
  cosines = ([c for c in (ste_cosine(results["no_ste"], w) for w in ("init", "final"))
              if math.isfinite(c)] if "no_ste" in results else [])
  cosine = min(cosines) if cosines else math.nan
  if need(claim, "ei_vgg16", "no_ste", mechanism=math.isfinite(cosine)):
    a, b, gap, noise = _pair(results, "ei_vgg16", "no_ste")
    ev = f"full {_fmt(a)}, without {_fmt(b)} (gap {gap:.1f}, noise {noise:.1f})"
    worse = ("worse training" if gap > noise else "no accuracy cost at this scale") if trains \
        else "accuracy inconclusive"
    if not math.isfinite(cosine):   # recorded before the gradients were compared
      verdict = "reproduced" if gap > noise else "not reproduced"
    else:
      final = ste_cosine(results["no_ste"], "final")
      ev = (f"cos(gradient without, with the STE) at init {cosine:.3f}"
            + (f", at the end {final:.3f}" if math.isfinite(final) else "") + "; " + ev)
      if not trains:
        ev += "; " + NOT_LEARNING.format(_fmt(a))
      verdict = (f"reproduced for the gradient direction; {worse}" if cosine < 0 else
                 f"direction changed, not reversed; {worse}" if cosine < STE_AGREES else
                 f"not reproduced for the gradient direction; {worse}")
    out.append(_verdict(claim, verdict, ev))

  claim = "Without the W_EI gradient scaling, excessively large inhibitory-path gradients"
  if need(claim, "ei_vgg16", "no_wei_grad_scaling", mechanism=True):
    a, b, gap, noise = _pair(results, "ei_vgg16", "no_wei_grad_scaling")
    r_full = wei_gradient_ratio(full)
    r_no = wei_gradient_ratio(results["no_wei_grad_scaling"])
    factor = r_no / r_full if r_full else math.nan
    ev = (f"|dL/dW_EI| / |dL/d(rest)| at init: {r_no:.3g} without, {r_full:.3g} with the "
          f"scaling ({factor:.0f}x); accuracy full {_fmt(a)}, without {_fmt(b)} "
          f"(gap {gap:.1f}, noise {noise:.1f})")
    if factor >= 10:
      verdict = ("reproduced" if trains and gap > noise else
                 "reproduced for the gradients; " + ("no accuracy cost at this scale" if trains
                                                      else "accuracy inconclusive"))
    else:
      verdict = "not reproduced"
    out.append(_verdict(claim, verdict, ev))

  claim = "Weights and activity become bimodal during training"
  if need(claim, "ei_vgg16", mechanism=True):
    w0, w1 = bimodality(full, "init", "w_ee"), bimodality(full, "final", "w_ee")
    c0 = bimodality(full, "init", "integrated_current")
    c1 = bimodality(full, "final", "integrated_current")
    ev = (f"bimodality coefficient (> 0.555 suggests two modes) of W_EE {w0:.3f} -> {w1:.3f}, "
          f"of I_int {c0:.3f} -> {c1:.3f} (init -> end)")
    rises = [(b0, b1) for b0, b1 in ((w0, w1), (c0, c1)) if math.isfinite(b0 + b1)]
    bimodal = any(b1 > 5 / 9 + 0.05 and b1 > b0 + 0.05 for b0, b1 in rises)
    if not bimodal and not trains:   # too little training to tell
      ev += "; " + NOT_LEARNING.format(_fmt(accuracy(full)))
    out.append(_verdict(claim, "reproduced" if bimodal else
                        "not reproduced" if trains else "inconclusive", ev))

  claim = "E-I reaches within a few points of BN-SNN"
  if need(claim, "ei_vgg16", "bn_vgg16"):
    a, b, gap, noise = _pair(results, "ei_vgg16", "bn_vgg16")
    ev = f"E-I {_fmt(a)}, BN-SNN {_fmt(b)} (E-I − BN = {gap:.1f} points)"
    out.append(_verdict(claim, "reproduced" if gap >= -5 else "not reproduced", ev))

  claim = "E-I beats the spiking DANN (normalization-free baseline)"
  dann = results.get("dann_vgg16")
  # A DANN that cannot take a step is decided by that event, whatever the full method's accuracy.
  if need(claim, "ei_vgg16", "dann_vgg16", mechanism=bool(dann and dann["nonfinite_event"])):
    a, b, gap, noise = _pair(results, "ei_vgg16", "dann_vgg16")
    ev = f"E-I {_fmt(a)}, DANN {_fmt(b)} (gap {gap:.1f}, noise {noise:.1f})"
    if dann["nonfinite_event"]:
      ev += (f"; DANN non-finite step ({dann['status']}"
             f"{': ' + dann['status_line'] if dann['status'] == 'diverged' else ''})")
      zeros = zero_shunting(dann, "init")
      if zeros:
        ev += ("; exactly-zero shunting currents at init, where DANN divides by eps = 1e-8 (a "
               "backward gain of g/eps = 1e8): " + ", ".join(
                   f"{layer} {100 * z:.1f} %" for layer, z in zeros[:4]))
      learns = not full["nonfinite_event"] and min(final_accuracies(full)) > CHANCE + 2
      verdict = ("reproduced: the spiking DANN cannot take a step, E-I trains on every seed"
                 if learns else "inconclusive")
    else:
      verdict = "reproduced" if gap > noise else "not reproduced"
    out.append(_verdict(claim, verdict, ev))

  claim = "Depth: E-I trains at every depth, without E-I Init it falls behind as depth grows"
  depths = [(arch, depth_condition("ei", arch), depth_condition("no_ei_init", arch))
            for arch in DEPTHS]
  names = [n for _, e, o in depths for n in (e, o)]
  # Judged on the series itself, not on whether E-I VGG-16 learns: at a depth where the network
  # without E-I Init learns and beats E-I beyond the noise, the claim fails whatever VGG-16 does.
  if need(claim, *names, mechanism=True):
    pairs = depth_pairs(results)
    ev = "; ".join(f"{arch}: E-I {_fmt(a)}, without E-I Init {_fmt(b)}" for arch, a, b in pairs)
    stalls = [f"{arch} seed {seed} ({acc:.1f} %{'; ' + why if why else ''})"
              for arch, e, _ in depths for seed, acc, why in stalled_seeds(results[e])]
    if stalls:
      ev += "; E-I seeds that end near chance: " + ", ".join(stalls)
    for c in CONDITIONS:   # the diagnostics: is the compressed schedule to blame?
      r = results.get(c.name) if c.group == "diagnostic" else None
      if r is not None:
        ev += (f"; diagnostic, {r.get('label') or c.name}: {_fmt(accuracy(r))}, "
               f"{len(stalled_seeds(r))} of {len(r['seeds'])} seeds near chance")
    all_train = all(a["mean"] >= CHANCE + 10 for _, a, _ in pairs)
    behind = [arch for arch, a, b in pairs
              if b["mean"] >= CHANCE + 10 and b["mean"] - a["mean"] > noise_floor(a, b)]
    widening = ((pairs[-1][1]["mean"] - pairs[-1][2]["mean"])
                > (pairs[0][1]["mean"] - pairs[0][2]["mean"]) + 5)
    if behind:
      verdict = f"not reproduced: without E-I Init trains better at {', '.join(behind)}"
    elif all_train:
      verdict = "reproduced" if widening else "not reproduced"
    else:
      verdict = "inconclusive"
      ev += "; E-I learns too little at some depth to tell"
    out.append(_verdict(claim, verdict, ev))
  return out


def summary(judged: list[Verdict], results: dict[str, dict[str, Any]]) -> str:
  """One sentence over the verdicts: how many claims are reproduced (at least in part), not
  reproduced, inconclusive or not run yet, and whether the full method learns enough here to
  judge accuracy."""
  kinds = ("reproduced", "not reproduced", "inconclusive", "not run yet")
  # The longest matching prefix: "not reproduced ..." is not "reproduced ...".
  kind = lambda verdict: max((k for k in kinds if verdict.startswith(k)), key=len, default="")
  counts = {k: sum(kind(v["verdict"]) == k for v in judged) for k in kinds}
  between = len(judged) - sum(counts.values())   # e.g. "direction changed, not reversed"
  out = (f"In short, of {len(judged)} claims: {counts['reproduced']} reproduced (some only for "
         f"their mechanism), {counts['not reproduced']} not reproduced, "
         f"{counts['inconclusive']} inconclusive")
  out += f", {between} in between" if between else ""
  out += f", {counts['not run yet']} not run yet." if counts["not run yet"] else "."
  full = results.get("ei_vgg16")
  if full is not None and accuracy(full)["mean"] < CHANCE + 10:
    out += (f" The full method itself learns little at this scale (E-I VGG-16 "
            f"{_fmt(accuracy(full))} after {SCALE['train.epochs']} epochs), so claims about "
            "accuracy wait for a larger one; what is measured directly (non-finite steps, "
            "gradients, firing rates) is judged here.")
  return out


# ------------------------------------------------------------------------------------------------
# Figures and the page


def _plt():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  return plt


def _legend(ax, fontsize: int = 8) -> None:
  if ax.get_legend_handles_labels()[0]:
    ax.legend(fontsize=fontsize)


def plot_accuracy(results: dict[str, dict[str, Any]], path: pathlib.Path) -> pathlib.Path | None:
  """Test accuracy per epoch (mean ± sd over seeds) of the VGG-16 conditions, and the final
  accuracy against depth for E-I, E-I without E-I Init and BN-SNN; None before any result."""
  if not any(s["test_accuracy"] for r in results.values() for s in r["seeds"]):
    return None
  plt = _plt()
  fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.5))
  for name, r in results.items():
    if r["group"] in ("depth", "diagnostic"):
      continue
    accs = [s["test_accuracy"] for s in r["seeds"] if s["test_accuracy"]]
    if not accs:
      continue
    n = min(len(a) for a in accs)
    a = np.array([x[:n] for x in accs])
    e = np.arange(1, n + 1)
    ax.plot(e, a.mean(0), marker="o", label=r.get("label") or name)
    ax.fill_between(e, a.mean(0) - a.std(0), a.mean(0) + a.std(0), alpha=0.15)
  ax.axhline(CHANCE, color="grey", lw=0.8, ls=":")
  ax.set(xlabel="epoch", ylabel="test accuracy (%)", title="VGG-16 conditions")
  _legend(ax, 7)
  series = {label: [depth_condition(kind, arch) for arch in DEPTHS] for label, kind in
            (("E-I", "ei"), ("E-I without E-I Init", "no_ei_init"), ("BN-SNN", "bn"))}
  depth = [int(arch[3:]) for arch in DEPTHS]
  for label, names in series.items():
    pts = [(d, accuracy(results[n])) for d, n in zip(depth, names) if n in results]
    if pts:
      bx.errorbar([d for d, _ in pts], [s["mean"] for _, s in pts],
                  yerr=[s["sd"] if math.isfinite(s["sd"]) else 0 for _, s in pts],
                  marker="o", capsize=3, label=label)
  bx.axhline(CHANCE, color="grey", lw=0.8, ls=":")
  bx.set(xlabel="VGG depth", ylabel="final test accuracy (%)", title="depth series",
         xticks=depth)
  _legend(bx)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def plot_firing_rates(results: dict[str, dict[str, Any]], path: pathlib.Path,
                      names: Sequence[str] = ("ei_vgg16", "no_ei_init", "no_stabilization")
                      ) -> pathlib.Path | None:
  """Each LIF layer's firing rate (mean over seeds) at E-I Init and at the end."""
  from ei_snn_jax.analysis import probes
  names = [n for n in names if n in results]
  if not names:
    return None
  plt = _plt()
  fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.8), squeeze=False)
  for ax, name in zip(axes[0], names):
    r = results[name]
    for when, style in (("init", "--"), ("final", "-")):
      snaps = [s[when] for s in r["seeds"] if s.get(when)]
      if not snaps:
        continue
      layers = sorted(snaps[0]["firing_rate"], key=probes.layer_sort_key)
      rates = np.array([[s["firing_rate"][l] for l in layers] for s in snaps])
      ax.plot(range(len(layers)), np.maximum(rates.mean(0), 1e-5), style, marker="o",
              label=when)
    ax.axhline(SILENT_RATE, color="grey", lw=0.8, ls=":")
    ax.set(yscale="log", xlabel="LIF layer", ylabel="firing rate", title=r.get("label") or name)
    _legend(ax)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def plot_wei_gradients(results: dict[str, dict[str, Any]], path: pathlib.Path
                       ) -> pathlib.Path | None:
  """|dL/dW_EI| / |dL/d(rest)| at init and at the end, per E-I condition."""
  rows = [(r.get("label") or n, wei_gradient_ratio(r, "init"), wei_gradient_ratio(r, "final"))
          for n, r in results.items() if math.isfinite(wei_gradient_ratio(r, "init"))]
  if not rows:
    return None
  plt = _plt()
  fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
  y = np.arange(len(rows))
  ax.barh(y - 0.2, [r[1] for r in rows], 0.4, label="init")
  ax.barh(y + 0.2, [r[2] if math.isfinite(r[2]) else 0 for r in rows], 0.4, label="end")
  ax.set(yticks=y, yticklabels=[r[0] for r in rows], xscale="log",
         xlabel="|dL/dW_EI| / |dL/d(other parameters)|")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def plot_bimodality(results: dict[str, dict[str, Any]], path: pathlib.Path,
                    name: str = "ei_vgg16") -> pathlib.Path | None:
  """Histograms of W_EE and of I_int at init and at the end (first seed of ``name``)."""
  if name not in results or not results[name]["seeds"]:
    return None
  seed = results[name]["seeds"][0]
  plt = _plt()
  fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
  for ax, what, title in ((axes[0], "w_ee", "W_EE (all layers)"),
                          (axes[1], "integrated_current", "I_int on the probe batch")):
    for when in ("init", "final"):
      h = seed.get(when, {}).get("histogram", {}).get(what) if seed.get(when) else None
      if not h or not h["counts"]:
        continue
      edges = np.array(h["edges"])
      ax.stairs(np.array(h["counts"]) / max(1, sum(h["counts"])), edges,
                label=f"{when} (b = {seed[when]['bimodality'][what] or float('nan'):.2f})")
    ax.set(title=title, ylabel="fraction")
    _legend(ax)
  fig.suptitle(f"{results[name].get('label') or name}, seed {seed['seed']}")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def _first(n: int) -> str:
  return f"the first {n}" if n else "all"


def _cell(x: float, fmt: str = "{:.1f}") -> str:
  return fmt.format(x) if x is not None and math.isfinite(x) else "–"


def _rel(path: pathlib.Path) -> str:
  path = pathlib.Path(path).resolve()
  return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def cost_paragraph(results: dict[str, dict[str, Any]]) -> str:
  """What the finished conditions cost on this machine, and why the scale is what it is."""
  done = {n: r for n, r in results.items() if r.get("wall_time_s")}
  minutes = {n: r["wall_time_s"] / 60 for n, r in done.items()}
  parts = [f"{len(done)} of {len(CONDITIONS)} conditions have run"]
  if minutes:
    parts.append(f", {sum(minutes.values()):.0f} min of training in all ("
                 + ", ".join(f"`{n}` {m:.0f} min" for n, m in minutes.items()) + ")")
  text = "".join(parts) + (
      ". A run's wall time is its training's own, summed over resumed parts, on the shared "
      "2-core CPU while other work ran (the load column). The scale is the smallest at which the "
      "full method learns at all: at 1/8 width E-I VGG-16 stayed at chance (loss 2.303 after 3 "
      "epochs, its first layer's shunting denominator collapsing), and it needs hundreds of "
      "steps to leave chance (epochs 1-2 below). That makes a VGG-16 condition cost about two "
      "hours here, four times the ~30 min the study was planned for, so the whole study spans "
      "sessions (it resumes where it stopped), and the depth series stops at VGG-16 (VGG-19 "
      "would add about 7 hours).")
  ei = results.get("ei_vgg16")
  if ei:
    accs = [s["test_accuracy"] for s in ei["seeds"] if s["test_accuracy"]]
    by_epoch = np.array([a[:min(map(len, accs))] for a in accs])   # seeds that ran every epoch
    if by_epoch.size:
      text += (" E-I VGG-16 test accuracy by epoch, mean of the seeds: "
               + " / ".join(f"{a:.1f}" for a in by_epoch.mean(0)) + " %.")
  return text


def write_page(results: dict[str, dict[str, Any]], page: pathlib.Path = PAGE,
               figures_dir: pathlib.Path = FIGURES,
               results_dir: pathlib.Path = RESULTS_DIR) -> pathlib.Path:
  """The results page: scale and commands, the table, one verdict per claim, the figures."""
  figures_dir.mkdir(parents=True, exist_ok=True)
  sc = dict(SCALE)
  sc.update(next((r["overrides"] for r in results.values() if r.get("overrides")), {}))
  figs = [("Test accuracy", plot_accuracy(results, figures_dir / "study_accuracy.png")),
          ("Firing rates at init and at the end",
           plot_firing_rates(results, figures_dir / "study_firing_rates.png")),
          ("W_EI gradients", plot_wei_gradients(results, figures_dir / "study_wei_grad.png")),
          ("Bimodality", plot_bimodality(results, figures_dir / "study_bimodality.png"))]
  lines = [
      "<!-- written by python -m experiments.study; edit experiments/study.py instead -->",
      "# The paper's claims at laptop scale",
      "",
      "Each condition trains "
      f"{sc['train.num_replicas']} seeds (vmapped replicas, seeds {sc['seed']}–"
      f"{sc['seed'] + sc['train.num_replicas'] - 1}) of a CIFAR-10 network at "
      f"{sc['model.width_multiplier']}× width on {_first(sc['data.train_subset'])} "
      f"training images for {sc['train.epochs']} epochs (batch {sc['train.batch_size']}, "
      f"T 4, one warm-up epoch where the recipe warms up), tested on "
      f"{_first(sc['data.test_subset'])} test images. Every other setting is the paper's recipe of "
      "the variant. Not a reproduction of the paper's accuracies: a test of its qualitative "
      "claims (spec §8.3, §8.4, §8.1, §9) at a size this 2-core CPU trains.",
      "",
      "Run or resume everything, then rebuild this page (`--report_only` rebuilds it from the "
      f"committed results in `{_rel(results_dir)}/` without training):",
      "",
      "```",
      "python -m experiments.study --root=runs/study",
      "python -m experiments.study --report_only",
      "```",
      "",
      "## Verdicts",
      "",
  ]
  judged = verdicts(results)
  lines += [summary(judged, results), "",
            "| claim | verdict | the numbers that decide it |", "|---|---|---|"]
  lines += [f"| {v['claim']} | **{v['verdict']}** | {v['evidence']} |" for v in judged]
  lines += ["", "Rules: an accuracy difference counts when it exceeds two pooled seed standard "
            "deviations and at least 2 points; a layer is silent below a firing rate of "
            f"{SILENT_RATE:g}; a bimodality coefficient above 5/9 (+0.05) that rose during "
            "training counts as bimodal; the gradient without the STE points the wrong way "
            "when its cosine with the STE's (same parameters and batch; seed mean, the lower "
            f"of init and the end) is below 0, and about the same way from {STE_AGREES:g}.", "",
            "## Conditions", "",
            "| condition | status | final test acc (%) | best epoch acc (%) | silent layers "
            "init / end | W_EI grad ratio init | wall time | load | code |",
            "|---|---|---|---|---|---|---|---|---|"]
  for c in CONDITIONS:
    r = results.get(c.name)
    if r is None:
      lines.append(f"| {c.label} (`{c.name}`) | not run yet | | | | | | | |")
      continue
    acc = accuracy(r)
    best = np.mean([max(s["test_accuracy"]) for s in r["seeds"] if s["test_accuracy"]] or
                   [math.nan])
    wall = r.get("wall_time_s")
    load = r.get("load")
    lines.append(
        f"| {r.get('label') or c.name} (`{c.name}`) | {r['status']} | {_fmt(acc)} | "
        f"{_cell(best)} | {_cell(silent_layers(r, 'init'))} / {_cell(silent_layers(r, 'final'))}"
        f" | {_cell(wei_gradient_ratio(r), '{:.3g}')} | "
        f"{_cell(wall / 60 if wall else math.nan)} min | {load or '–'} | "
        f"{r.get('code', '–')} |")
  if any(r.get("variant") == "bn" for r in results.values()):
    lines += ["", "A BN-SNN's probes run in inference mode, normalising with the running "
              "statistics; at init those are not yet estimated (mean 0, variance 1), so its "
              "silent layers at init describe that state, not its first training steps. It has "
              "no W_EI (–)."]
  lines += ["", "## Scale and cost", "", cost_paragraph(results), "", "## Figures", ""]
  for title, p in figs:
    if p is not None:
      rel = os.path.relpath(p, page.parent)
      lines += [f"### {title}", "", f"![{title}]({rel})", ""]
  page.parent.mkdir(parents=True, exist_ok=True)
  page.write_text("\n".join(lines) + "\n")
  return page
