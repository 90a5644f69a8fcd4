"""experiments/analyze.py and experiments/report.py on a tiny real run, and the published numbers.

One tiny training run (configs/default.py:runlocal on synthetic data: 64 images, batch 16, two
epochs, so two epoch records and checkpoints at steps 4 and 8) is shared by every test here.
"""

from __future__ import annotations

import json
import math
import pathlib
import re
import shutil

import numpy as np
import pytest

from ei_snn_jax import models
from ei_snn_jax.analysis import paper_results
from experiments import analyze, report

TINY_OVERRIDES = [
    "data.source=synthetic", "data.name=synthetic", "data.train_subset=64",
    "data.test_subset=64", "train.batch_size=16", "train.eval_batch_size=64",
    "train.epochs=2", "train.max_steps=0", "train.log_every_steps=1", "model.T=2",
    "model.width_multiplier=0.125", "parallel.num_devices=1", "train.progress_bar=False",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """Workdir of a finished 8-step run (2 epochs of 4 steps) of the quick-start config."""
  from configs import default
  from ei_snn_jax.training import config as config_lib, train

  config = config_lib.apply_overrides(default.get_config("runlocal"), TINY_OVERRIDES)
  workdir = tmp_path_factory.mktemp("runs") / "default_tiny_s2025"
  train.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope="module")
def analysis(tiny_run):
  """analyze.analyze on the tiny run (init + every checkpoint, 16 probe images)."""
  return analyze.analyze(tiny_run, batch_size=16, log=lambda *a: None)


def _assert_real_png(path: pathlib.Path):
  import matplotlib.image as mpimg

  assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
  img = mpimg.imread(path)
  assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100, (path, img.shape)
  rgb = img[..., :3].reshape(-1, 3)
  assert len(np.unique(rgb, axis=0)) > 20, f"{path.name} is (nearly) one colour"
  assert rgb.std() > 0.05, f"{path.name} has no visible content"
  # Not just axes and text: a sizeable share of pixels is neither white nor black-grey.
  coloured = np.mean(rgb.max(1) - rgb.min(1) > 0.15)
  assert coloured > 0.002, f"{path.name}: no coloured lines or bars"


def test_analysis_writes_every_figure(tiny_run, analysis):
  out = tiny_run / "analysis"
  names = {p.name for p in analysis["figures"]}
  assert {"curves.png", "firing_rates.png", "ei_balance.png", "hist_w_ee.png", "hist_w_ie.png",
          "hist_w_ei.png", "hist_g_i.png", "hist_g_e.png", "hist_integrated.png",
          "probe_profile.png"} <= names
  for path in analysis["figures"]:
    assert path.parent == out
    _assert_real_png(path)
  # init and at least two checkpoints (steps 4 and 8; one of them is the best).
  labels = analysis["snapshots"]
  assert labels[0] == "init" and len(labels) >= 3
  assert any("step 8" in l for l in labels) and any("step 4" in l for l in labels)
  assert any("(best)" in l for l in labels)


def test_index_pages_link_every_figure(analysis):
  html = analysis["index"].read_text()
  md = analysis["index_md"].read_text()
  for path in analysis["figures"]:
    assert f'href="{path.name}"' in html and f'src="{path.name}"' in html
    assert f"]({path.name})" in md
  linked = set(re.findall(r'src="([^"]+\.png)"', html))
  assert all((analysis["index"].parent / p).is_file() for p in linked)


def test_probe_statistics_match_the_training_log_keys(tiny_run, analysis):
  saved = json.loads((tiny_run / "analysis" / "probes.json").read_text())
  stats = saved["snapshots"][-1]["stats"]
  train = [json.loads(l) for l in (tiny_run / "metrics.jsonl").read_text().splitlines()]
  logged = {k for r in train if r["kind"] == "train" for k in r if "/" in k}
  assert logged == set(stats), "probe() and the training step must report the same statistics"
  assert [f"lif{i}" for i in range(5)] == analyze.probes_lib.layer_names(stats, "firing_rate")
  # A firing rate is a spike count over the T*B*H*W*C neurons-times-steps of its LIF layer (T = 2,
  # the 16 probe images; VGG-8 at 1/8 width, one 2x2 pool after each conv), and every layer of
  # the network fires without saturating, at initialisation (E-I Init) and at every checkpoint.
  channels = [v for v in models.scaled_layers("vgg8", 0.125) if v != "P"]
  for snapshot in saved["snapshots"]:
    for i, c in enumerate(channels):
      rate, size = snapshot["stats"][f"firing_rate/lif{i}"], 2 * 16 * (32 >> i) ** 2 * c
      assert 0.0 < rate < 1.0, (snapshot["label"], i, rate)
      assert rate * size == pytest.approx(round(rate * size), abs=1e-3), (snapshot["label"], i)


def _energy_total_row(markdown: str) -> list[str]:
  """The cells of the "**total**" row of the energy table in ``markdown``."""
  [row] = [l for l in markdown.splitlines() if l.startswith("| **total** |")]
  return [c.strip() for c in row.strip().strip("|").split("|")]


def test_energy_table_in_the_index_matches_energy_totals(tiny_run, analysis):
  """analyze estimates the energy of the last checkpoint on the probe batch: energy.json and the
  table of the index pages hold ``energy.totals`` of an independent estimate (the checkpoint
  restored here, the same 16 test images)."""
  from ei_snn_jax.analysis import energy
  from ei_snn_jax.data import transforms
  from ei_snn_jax.training import checkpointing, train

  record = json.loads(analysis["energy"].read_text())
  assert record["snapshot"] == analysis["snapshots"][-1] and "step 8" in record["snapshot"]
  rows = [energy.LayerEnergy(**r) for r in record["layers"]]
  assert record["totals"] == pytest.approx(energy.totals(rows))
  assert [r.name for r in rows] == [f"conv{i}/ei" for i in range(5)] + ["head/ei"]

  cfg = analyze.restore_config(json.loads((tiny_run / "config.json").read_text())["config"])
  exp = train.build_experiment(cfg)
  state = train.init_state(exp)
  ckpt = checkpointing.Checkpointer(tiny_run, read_only=True)
  try:
    restored, _ = ckpt.restore(8, state, exp.replicated, "latest")
  finally:
    ckpt.close()
  x = transforms.eval_transform(cfg.data.name)(np.asarray(exp.dataset.x_test[:16]))
  want = energy.totals(energy.estimate(exp.model, {"params": restored.params}, x, train=False))
  assert want["acs"] > 0 and want["macs"] > 0
  assert record["totals"] == pytest.approx(want, rel=1e-6)

  md = analysis["index_md"].read_text()
  assert "## Energy estimate per example (step 8" in md
  cells = _energy_total_row(md)
  assert cells[3:] == [f"{want['acs'] / 1e6:.2f}", f"{want['macs'] / 1e6:.2f}",
                       f"{want['energy_uj']:.3f}", f"{want['ann_macs'] / 1e6:.2f}",
                       f"{want['ann_energy_uj']:.3f}"]
  assert f"SNN / ANN energy: {want['snn_over_ann']:.3f}" in md
  html = analysis["index"].read_text()
  assert "<h2>Energy estimate per example" in html
  assert f"<td>{want['energy_uj']:.3f}</td>" in html


def test_analyze_cli_one_line_errors(tmp_path, capsys):
  assert analyze.main(["--workdir", str(tmp_path / "missing")]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: workdir") and "does not exist" in err and "\n" not in err
  assert analyze.main(["--workdir", str(tmp_path)]) == 2
  err = capsys.readouterr().err.strip()
  assert "no config.json" in err and "\n" not in err
  (tmp_path / "config.json").write_text(json.dumps({"config": {}}))
  assert analyze.main(["--workdir", str(tmp_path)]) == 2
  assert "no metrics" in capsys.readouterr().err


def test_analyze_cli_log_only(tiny_run, tmp_path, capsys):
  assert analyze.main(["--workdir", str(tiny_run), "--out", str(tmp_path / "a"),
                       "--nocheckpoints"]) == 0
  assert {"curves.png", "firing_rates.png", "ei_balance.png", "index.html", "index.md"} <= {
      p.name for p in (tmp_path / "a").iterdir()}
  assert "index" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------
# report.py
# ------------------------------------------------------------------------------------------

def _fake_run(src: pathlib.Path, dst: pathlib.Path, seed: int, accs: list[float],
              edit=None) -> pathlib.Path:
  """A copy of the tiny run's config/summary with another seed and given test accuracies."""
  dst.mkdir(parents=True)
  cfg = json.loads((src / "config.json").read_text())
  cfg["config"]["seed"] = seed
  if edit:
    edit(cfg["config"])
  (dst / "config.json").write_text(json.dumps(cfg))
  records = [{"kind": "epoch", "epoch": i + 1, "step": 4 * (i + 1), "test_accuracy": a,
              "test_loss": 1.0, "train_loss": 1.0, "train_accuracy": 0.5,
              "best_test_accuracy": max(accs[:i + 1]), "wall_time": 10.0 * (i + 1)}
             for i, a in enumerate(accs)]
  (dst / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
  summary = json.loads((src / "summary.json").read_text())
  summary.update(wall_time=10.0 * len(accs), best_test_accuracy=max(accs), finished=True)
  (dst / "summary.json").write_text(json.dumps(summary))
  return dst


def test_report_table_parses_back(tiny_run, tmp_path, capsys):
  runs = tmp_path / "runs"
  shutil.copytree(tiny_run, runs / tiny_run.name,
                  ignore=shutil.ignore_patterns("checkpoints", "best", "analysis"))
  # Two more seeds of the same config (grouped with the real run), and a paper-recipe run.
  _fake_run(tiny_run, runs / "default_tiny_s7", 7, [0.20, 0.30])
  _fake_run(tiny_run, runs / "default_tiny_s8", 8, [0.40, 0.35])

  def vgg16(c):
    c["data"].update(name="cifar10", source="auto", train_subset=0, test_subset=0)
    c["model"].update(arch="vgg16", T=4, width_multiplier=1.0, ei_ste=False)
  _fake_run(tiny_run, runs / "ablations" / "no_ste_s2025", 2025, [0.85, 0.90, 0.88], vgg16)
  (runs / "report.md").write_text("an older report: not a run\n")

  out = tmp_path / "table.md"
  assert report.main([str(p) for p in sorted(runs.iterdir())] + ["--output", str(out)]) == 0
  printed = capsys.readouterr().out
  rows = report.parse_markdown_table(out.read_text())
  assert report.parse_markdown_table(printed) == rows
  assert len(rows) == 2 and list(rows[0]) == list(report.COLUMNS)
  by_config = {r["config"]: r for r in rows}
  tiny, ablation = by_config["default_tiny"], by_config["no_ste"]

  real = [json.loads(l) for l in (tiny_run / "metrics.jsonl").read_text().splitlines()]
  real_acc = [r["test_accuracy"] for r in real if r["kind"] == "epoch"]
  bests = [100 * max(real_acc), 30.0, 40.0]
  finals = [100 * real_acc[-1], 30.0, 35.0]
  assert tiny["seeds"] == "7, 8, 2025" and tiny["n"] == "3"
  for cell, values in ((tiny["best test acc (%)"], bests), (tiny["final test acc (%)"], finals)):
    mean, std = (float(v) for v in cell.split("±"))
    assert mean == pytest.approx(np.mean(values), abs=0.006)
    assert std == pytest.approx(np.std(values, ddof=1), abs=0.006)
  assert "synthetic data" in tiny["notes"] and "width ×0.125" in tiny["notes"]
  assert tiny["epochs"] == "2 of 2" and tiny["paper (%)"] == "–"
  assert tiny["device"].startswith("cpu")

  assert (ablation["dataset"], ablation["arch"], ablation["variant"], ablation["T"]) == (
      "cifar10", "vgg16", "ei", "4")
  assert float(ablation["best test acc (%)"]) == pytest.approx(90.0)
  assert float(ablation["final test acc (%)"]) == pytest.approx(88.0)
  assert ablation["notes"] == "no STE" and ablation["wall time"] == "30 s"
  assert float(ablation["README (%)"]) == 91.01 and ablation["paper (%)"] == "–"
  assert "Sources" in out.read_text() and "vwOvOwv/DeepEISNN" in out.read_text()


def test_report_shows_the_energy_that_analyze_estimated(tiny_run, analysis, tmp_path):
  from ei_snn_jax.analysis import energy

  runs = tmp_path / "runs"
  for name in ("default_tiny_s1", "default_tiny_s2"):
    shutil.copytree(tiny_run, runs / name, ignore=shutil.ignore_patterns("checkpoints", "best"))
  seed2 = json.loads((runs / "default_tiny_s2" / "config.json").read_text())
  seed2["config"]["seed"] = 2
  (runs / "default_tiny_s2" / "config.json").write_text(json.dumps(seed2))
  shutil.copytree(tiny_run, runs / "no_energy", ignore=shutil.ignore_patterns(
      "checkpoints", "best", "analysis"))
  no_energy = json.loads((runs / "no_energy" / "config.json").read_text())
  no_energy["config"]["model"]["T"] = 3            # another row
  (runs / "no_energy" / "config.json").write_text(json.dumps(no_energy))

  record = json.loads(analysis["energy"].read_text())
  want = energy.totals([energy.LayerEnergy(**r) for r in record["layers"]])
  text = report.report([runs])
  rows = {r["T"]: r for r in report.parse_markdown_table(text)}
  assert rows["2"]["n"] == "2"
  assert rows["2"]["energy (µJ)"] == f"{want['energy_uj']:.3f}"
  assert rows["2"]["SNN/ANN energy"] == f"{want['snn_over_ann']:.3f}"
  assert rows["3"]["energy (µJ)"] == "–" and rows["3"]["SNN/ANN energy"] == "–"
  section = text.split("\n## Energy\n", 1)[1]
  energy_rows = {r["run"]: r for r in report.parse_markdown_table(section)}
  assert set(energy_rows) == {"default_tiny_s1", "default_tiny_s2"}
  for row in energy_rows.values():
    assert row["snapshot"] == record["snapshot"]
    assert row["ACs (M)"] == f"{want['acs'] / 1e6:.2f}"
    assert row["MACs (M)"] == f"{want['macs'] / 1e6:.2f}"
    assert row["energy (µJ)"] == f"{want['energy_uj']:.3f}"
    assert row["ANN energy (µJ)"] == f"{want['ann_energy_uj']:.3f}"


def test_report_counts_each_vmapped_seed(tiny_run, tmp_path):
  root = tmp_path / "vmapped"
  for r, accs in enumerate(([0.5, 0.6], [0.7, 0.4])):
    _fake_run(tiny_run, root / f"replica_{r}", 2025 + r, accs)
  cfg = json.loads((tiny_run / "config.json").read_text())
  cfg["config"]["train"]["num_replicas"] = 2
  (root / "config.json").write_text(json.dumps(cfg))
  (root / "summary.json").write_text(json.dumps({"wall_time": 300.0, "device_kind": "TPU v5e",
                                                 "devices": 4, "finished": True}))
  [row] = report.parse_markdown_table(report.report([tmp_path]))
  assert row["config"] == "vmapped" and row["seeds"] == "2025, 2026" and row["n"] == "2"
  assert row["best test acc (%)"] == f"65.00 ± {100 * np.std([0.6, 0.7], ddof=1):.2f}"
  assert row["final test acc (%)"] == f"50.00 ± {100 * np.std([0.6, 0.4], ddof=1):.2f}"
  assert row["wall time"] == "5.0 min" and row["device"] == "TPU v5e ×4"
  assert "2 seeds vmapped in one run" in row["notes"]


def test_report_counts_a_seed_found_in_two_folders_once(tiny_run, tmp_path):
  root = tmp_path / "runs"
  _fake_run(tiny_run, root / "a_s3", 3, [0.20, 0.30])
  _fake_run(tiny_run, root / "b_s3_copy", 3, [0.20])          # the same seed, stopped earlier
  _fake_run(tiny_run, root / "a_s4", 4, [0.50, 0.40])
  notes = []
  runs = [report.load_run(p) for p in report.find_runs([root])]
  [row] = report.table_rows(runs, warn=notes.append)
  assert row["seeds"] == "3, 4" and row["n"] == "2"
  assert row["best test acc (%)"] == f"40.00 ± {100 * np.std([0.3, 0.5], ddof=1):.2f}"
  [note] = notes
  assert note.startswith("seed 3 is in 2 folders") and note.endswith(f"as {root / 'a_s3'}")


def test_report_cli_one_line_errors(tmp_path, capsys):
  assert report.main([str(tmp_path / "missing")]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("error:") and "does not exist" in err and "\n" not in err
  assert report.main([str(tmp_path)]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: no runs in") and "\n" not in err


def test_paper_results_use_the_configs_dataset_names():
  """Every published number is keyed by a ``config.data.name`` the project loads, so a run's
  lookup finds it (the gesture set is "dvs128_gesture" everywhere)."""
  from ei_snn_jax.data import registry as data_registry
  names = {r.key[0] for table in paper_results.RESULTS.values() for r in table}
  known = set(data_registry.dataset_names())
  assert names <= known, names - known
  assert paper_results.lookup("dvs128_gesture", "vgg8", "ei", 16)["readme"].top1 == 95.83


def test_paper_results_lookup():
  assert paper_results.lookup("cifar10", "vgg16", "ei", 4)["readme"].top1 == 91.01
  both = paper_results.lookup("cifar10", "resnet18", "ei", 4)
  assert (both["paper"].top1, both["readme"].top1) == (92.05, 92.06)
  bn = paper_results.lookup("cifar10", "resnet18", "bn", 4)
  assert bn["paper"].top1 == 95.37 and bn["paper"].T is None and "readme" not in bn
  assert paper_results.lookup("cifar100", "vgg19", "ei", 8) == {}
  for entries in paper_results.RESULTS.values():
    for r in entries:
      assert r.source.startswith("paper_spec.md §8") and 0 < r.top1 < 100
      assert not math.isnan(r.top1)
  assert len({r.key for r in paper_results.README}) == len(paper_results.README)
