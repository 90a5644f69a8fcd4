"""The command-line tools end to end on a tiny run: train -> evaluate (with a --config override
of the saved config) -> sweep --print, and --help for each (absl flags, experiments/cli.py)."""

from __future__ import annotations

import json
import pathlib
import shlex
import shutil

import pytest

from absl import logging as absl_logging

from experiments import (analyze, benchmark, cli, evaluate, report, seed_spread, study, sweep,
                         train)

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = ["--config.data.source=synthetic", "--config.data.name=synthetic",
        "--config.data.synthetic_train_size=32", "--config.data.synthetic_test_size=16",
        "--config.data.train_subset=0", "--config.data.test_subset=0",
        "--config.model.T=2", "--config.train.batch_size=16", "--config.train.eval_batch_size=16",
        "--config.train.progress_bar=False", "--config.parallel.num_devices=1"]


@pytest.fixture(scope="module")
def tiny_workdir(tmp_path_factory):
  """A finished 2-step run made by the train CLI."""
  workdir = tmp_path_factory.mktemp("cli") / "run"
  status = train.main([f"--config={REPO}/configs/default.py:runlocal", f"--workdir={workdir}",
                       "--config.train.max_steps=2", *TINY])
  assert status == 0
  return workdir


def test_train_saves_the_resolved_config(tiny_workdir):
  saved = json.loads((tiny_workdir / "config.json").read_text())["config"]
  assert (saved["model"]["T"], saved["train"]["max_steps"], saved["data"]["name"]) == (
      2, 2, "synthetic")


def test_evaluate_applies_overrides_to_the_saved_config(tiny_workdir, capsys):
  assert evaluate.main([f"--workdir={tiny_workdir}", "--which=latest"]) == 0
  plain = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert plain["step"] == 2 and plain["checkpoint"] == "latest"
  # An override reaches the saved config: pointing it at a missing data file is what fails.
  assert evaluate.main([f"--workdir={tiny_workdir}", "--config.data.name=cifar10",
                        "--config.data.source=arrays", "--config.data.path=/nonexistent.npz"]) == 2
  assert "/nonexistent.npz does not exist" in capsys.readouterr().err
  assert evaluate.main([f"--workdir={tiny_workdir}", "--config.data.pth=/x.npz"]) == 2
  assert "unknown config key 'data.pth': did you mean data.path" in capsys.readouterr().err


def test_evaluate_falls_back_to_latest_when_no_evaluation_ran(tiny_workdir, tmp_path, capsys):
  # A run stopped (train.max_steps) before its first epoch ended has no best checkpoint.
  run = tmp_path / "run"
  shutil.copytree(tiny_workdir, run, ignore=shutil.ignore_patterns("best"))
  assert evaluate.main([f"--workdir={run}"]) == 0
  captured = capsys.readouterr()
  assert json.loads(captured.out.strip().splitlines()[-1])["checkpoint"] == "latest"
  assert "no best checkpoint" in captured.err and "taking the latest, step 2" in captured.err
  assert evaluate.main([f"--workdir={run}", "--which=best"]) == 2   # asked for explicitly
  assert capsys.readouterr().err.strip().endswith("its latest is step 2: pass --which=latest")


def test_train_summary_line_says_when_it_is_a_mean_over_seeds():
  one = {"step": 8, "total_steps": 8, "wall_time": 3.0, "best_test_accuracy": 0.5,
         "final_test_accuracy": None}
  assert train.summary_line(one, "w") == (
      "done: step 8/8, best test accuracy 0.5000, final –, wall time 3.0 s -> w/summary.json")
  two = {**one, "num_replicas": 2, "best_test_accuracy_mean": 0.4, "best_test_accuracy_std": 0.1,
         "final_test_accuracy_mean": 0.3, "final_test_accuracy_std": 0.05}
  assert "test accuracy over 2 seeds (mean ± sample std): best 0.4000 ± 0.1000, final " \
         "0.3000 ± 0.0500" in train.summary_line(two, "w")


def test_benchmark_writes_outside_the_tracked_results_by_default():
  assert benchmark.LOCAL_RESULTS == REPO / "runs" / "benchmarks"
  ignored = (REPO / ".gitignore").read_text().split()
  assert "runs/" in ignored and "build/" in ignored


def test_evaluate_errors_are_one_line(tmp_path, capsys):
  assert evaluate.main([f"--workdir={tmp_path}"]) == 2
  assert capsys.readouterr().err.strip() == (
      f"error: {tmp_path} holds no run (no config.json): pass the --workdir of a run made by "
      "experiments.train")
  assert evaluate.main(["--which=best"]) == 2
  assert "missing --workdir: pass --workdir=DIR" in capsys.readouterr().err
  assert evaluate.main([f"--workdir={tmp_path}", "--which=worst"]) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith("error: ") and "worst" in err and "\n" not in err


def test_sweep_prints_train_commands_that_parse(capsys):
  assert sweep.main(["ablations", "--root=/tmp/r", "--print", "--",
                     "--config.data.path=/d.npz"]) == 0
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 5
  for line in lines:
    words = shlex.split(line)
    assert words[1:3] == ["-m", "experiments.train"] and words[-1] == "--config.data.path=/d.npz"
    fv, rest = cli.parse(train.define_flags, ["train", *words[3:]], train.REQUIRED)
    assert fv.workdir.startswith("/tmp/r/") and fv.config.data.path == "/d.npz" and not rest
  assert sweep.main(["paper"]) == 2
  assert "unknown sweep 'paper'" in capsys.readouterr().err


@pytest.mark.parametrize("tool", [train, evaluate, sweep, analyze, report, benchmark])
def test_help_lists_the_flags(tool, capsys):
  assert tool.main(["--help"]) == 0
  out = capsys.readouterr().out
  assert tool.__doc__.strip().splitlines()[0] in out
  assert "flags:" in out and "--" in out.split("flags:", 1)[1]


@pytest.mark.parametrize("tool", [train, evaluate, sweep, analyze, report, benchmark, study,
                                  seed_spread])
def test_every_tool_takes_absls_verbosity(tool, capsys):
  """absl's standard --verbosity / -v is a flag of every tool (issue 22, item 6)."""
  assert tool.main(["--help"]) == 0
  assert "-v,--verbosity" in capsys.readouterr().out.replace(" ", "")


def test_verbosity_sets_the_logging_level_only_when_given():
  """Warnings only by default (run_app); -v 0 / --verbosity=info show INFO; a bad level is one
  line."""
  base = ["train", "--config", f"{REPO}/configs/default.py", "--workdir", "w"]
  before = absl_logging.get_verbosity()
  try:
    absl_logging.set_verbosity(absl_logging.WARNING)
    cli.parse(train.define_flags, base, train.REQUIRED)
    assert absl_logging.get_verbosity() == absl_logging.WARNING
    for flag in (["-v", "0"], ["--verbosity=info"], ["-v=0"]):
      absl_logging.set_verbosity(absl_logging.WARNING)
      cli.parse(train.define_flags, base + flag, train.REQUIRED)
      assert absl_logging.get_verbosity() == absl_logging.INFO, flag
    with pytest.raises(cli.config_lib.ConfigError, match="--verbosity=loud is not a logging "):
      cli.parse(train.define_flags, base + ["--verbosity=loud"], train.REQUIRED)
  finally:
    absl_logging.set_verbosity(before)


def test_analyze_rejects_a_bad_batch_size(tiny_workdir, capsys):
  assert analyze.main([f"--workdir={tiny_workdir}", "--batch_size=0"]) == 2
  err = capsys.readouterr().err
  assert err.strip() == "error: flag --batch_size=0: 0 is not a positive integer (see --help)"


def test_report_skips_an_unreadable_run_and_never_overwrites_a_foreign_file(tiny_workdir,
                                                                             tmp_path, capsys):
  runs = tmp_path / "runs"
  runs.mkdir()
  import shutil
  shutil.copytree(tiny_workdir, runs / "good")
  (runs / "broken").mkdir()
  (runs / "broken" / "config.json").write_text("{not json")
  (runs / "broken" / "metrics.jsonl").write_text("")
  assert report.main([str(runs)]) == 0
  captured = capsys.readouterr()
  assert "warning: skipped" in captured.err and "broken" in captured.err
  assert (runs / "report.md").read_text().startswith(report.MARKER)
  assert report.main([str(runs)]) == 0            # its own file: rewritten
  foreign = tmp_path / "notes"
  foreign.mkdir()
  shutil.copytree(tiny_workdir, foreign / "run")
  (foreign / "report.md").write_text("my notes\n")
  assert report.main([str(foreign / "run")]) == 2
  assert "was not written by this tool: pass --output=FILE" in capsys.readouterr().err
  assert (foreign / "report.md").read_text() == "my notes\n"


def test_every_gpu_benchmark_run_parses():
  """experiments/gpu_benchmark.sh's runs are accepted by the benchmark's flags (a GPU session
  has minutes, not time to find a misspelt flag)."""
  import re
  script = (REPO / "experiments" / "gpu_benchmark.sh").read_text()
  common = re.search(r'^C="(.*)"$', script, re.M).group(1)
  runs = re.findall(r'^  "(--config .*)"$', script, re.M)
  assert len(runs) >= 8
  for run in runs:
    fv, rest = benchmark.parse_args(shlex.split(run.replace("$C", common)) + ["--out", "/tmp/"])
    assert (fv.batch, fv.eval_batch, fv.T) == (128, 400, 4) and rest == [], run
  fv, files = benchmark.parse_args(["--table", "a.jsonl", "b.jsonl"])
  assert fv.table and files == ["a.jsonl", "b.jsonl"]
