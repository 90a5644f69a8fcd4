"""Bad input, clear errors (issue 4, point 5): every config and data mistake ends the real CLI
(``experiments.train.main``) with exit status 2 and one ``error: ...`` line on stderr that names
the problem and the fix, with no traceback.

Each row of ``CASES`` is a mistake, the command-line arguments or data file that make it, and
two patterns the error line must match: the problem and the fix. The runs happen in-process
(capsys); two rows also run as real subprocesses to prove the exit status and the absence of a
traceback from the interpreter's point of view.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from ei_snn_jax.training import config as config_lib, metrics, run_config
from experiments import train as train_cli

REPO = pathlib.Path(__file__).resolve().parents[1]
SPEC = "configs/default.py:runlocal"
TINY = ["data.source=synthetic", "data.name=synthetic", "data.synthetic_train_size=32",
        "data.synthetic_test_size=16", "data.train_subset=0", "data.test_subset=0",
        "model.width_multiplier=0.125", "model.T=2", "train.batch_size=16",
        "train.eval_batch_size=16", "train.progress_bar=False"]


def valid_arrays(n_train: int = 16, n_test: int = 8) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  return {"x_train": rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
          "y_train": np.arange(n_train) % 10, "x_test": rng.integers(0, 256, (n_test, 32, 32, 3),
                                                                       dtype=np.uint8),
          "y_test": np.arange(n_test) % 10}


def with_nan(arrays):
  x = arrays["x_train"].astype(np.float32) / 255
  x[3, 5, 5, 1] = np.nan
  return {**arrays, "x_train": x}


# Data mistakes: a function from valid arrays to the arrays written to the .npz (None: no file).
DATA = {
    "missing file": None,
    "wrong keys": lambda a: {"images": a["x_train"], "labels": a["y_train"]},
    "wrong shape (NCHW)": lambda a: {**a, "x_train": a["x_train"].transpose(0, 3, 1, 2)},
    "wrong image dtype": lambda a: {**a, "x_test": a["x_test"].astype(np.int64)},
    "float images outside [0, 1]": lambda a: {**a, "x_train": a["x_train"].astype(np.float32)},
    "NaN pixels": with_nan,
    "labels out of range": lambda a: {**a, "y_train": a["y_train"] + 1},
    "one-hot labels": lambda a: {**a, "y_test": np.eye(10, dtype=np.int64)[a["y_test"]]},
    "float labels": lambda a: {**a, "y_train": a["y_train"].astype(np.float32)},
    "labels and images of different length": lambda a: {**a, "y_test": a["y_test"][:-1]},
    "empty split": lambda a: {**a, "x_test": a["x_test"][:0], "y_test": a["y_test"][:0]},
}

# (case, extra --config.KEY=VALUE overrides or raw argv, problem pattern, fix pattern)
CASES = [
    # Config mistakes.
    ("unknown key", ["optim.lrr=0.1"], r"unknown config key 'optim\.lrr'",
     r"did you mean optim\.lr"),
    ("wrong type (int)", ["model.T=four"], r"model\.T expects an int, got 'four'", r"an int"),
    ("wrong type (float)", ["optim.lr=fast"], r"optim\.lr expects a float, got 'fast'",
     r"a float"),
    ("wrong type (bool)", ["data.augment=maybe"], r"data\.augment expects a bool",
     r"true/false"),
    ("negative lr", ["optim.lr=-0.1"], r"optim\.lr=-0\.1 is out of range", r"must be > 0"),
    ("T = 0", ["model.T=0"], r"model\.T=0 is out of range", r"must be >= 1"),
    ("batch not divisible by devices", ["train.batch_size=12"],
     r"train\.batch_size=12 is not divisible by the 8 devices",
     r"use a multiple of 8 \(e\.g\. 8 or 16\) or set parallel\.num_devices"),
    ("more devices than visible", ["parallel.num_devices=16"],
     r"parallel\.num_devices=16 but only 8 devices", r"set parallel\.num_devices<=8"),
    ("unknown dataset", ["data.name=imagenet"], r"data\.name='imagenet' is not a known dataset",
     r"use one of cifar10, cifar100, synthetic, tiny_imagenet"),
    ("unknown arch", ["model.arch=vgg13"], r"model\.arch='vgg13' is not a known architecture",
     r"use one of vgg8, vgg11, vgg16, vgg19, resnet18"),
    ("unknown variant", ["model.variant=lif"], r"model\.variant='lif' is not a known",
     r"use one of ei, bn, dann"),
    ("warmup not shorter than training", ["optim.warmup_epochs=3", "train.epochs=2"],
     r"optim\.warmup_epochs=3 must be < train\.epochs=2", r"lower the warmup"),
    ("arrays source without a path", ["data.source=arrays", "data.name=cifar10"],
     r"data\.source='arrays' needs data\.path", r"set data\.path"),
    ("workdir holding a run of another config", ["seed=7"],
     r"workdir .* holds a run of another config \(seed: 2025 -> 7\)", r"use a new --workdir"),
    ("config file not found", "--config configs/ei_cifar10_vgg61.py",
     r"config file 'configs/ei_cifar10_vgg61\.py' not found",
     r"did you mean .*configs/ei_cifar10_vgg16\.py.*: pass --config=configs/NAME\.py"),
    ("missing --workdir", "--workdir", r"missing --workdir", r"pass --workdir=DIR"),
    # Issue 24: values that raised from JAX or hung.
    ("seed beyond 32 bits", ["seed=99999999999999999999"],
     r"seed=99999999999999999999 is out of range", r"must be <= 2147479551"),
    ("T beyond the memory bound", ["model.T=100000"], r"model\.T=100000 is out of range",
     r"must be <= 1024"),
    ("long T fully unrolled", ["model.T=100"],
     r"model\.T=100 with model\.scan_unroll=0 \(fully unrolled\) compiles 100 copies",
     r"set model\.scan_unroll=1 .* or model\.T<=64"),
    ("coordinator address without a valid port",
     ["parallel.distributed=True", "parallel.coordinator_address=nohost:99999",
      "parallel.num_processes=2"],
     r"parallel\.coordinator_address='nohost:99999' is not HOST:PORT with a port in 1\.\.65535",
     r"e\.g\. parallel\.coordinator_address=10\.0\.0\.1:1234"),
    ("unknown command-line argument", "--epochs 3", r"unknown argument --epochs",
     r"see --help"),
    ("misspelt flag", "--workdri=/tmp/x", r"unknown argument --workdri",
     r"did you mean --workdir\?"),
    ("int field given a float", ["model.T=4.5"], r"model\.T expects an int, got '4\.5'",
     r"an int"),
    ("group given a value", ["optim=0.1"], r"optim is a group of fields",
     r"set one of its fields, e\.g\. optim\.\w+=VALUE"),
    ("positional argument", "runs/x", r"unexpected arguments runs/x",
     r"every setting is a flag \(--config\.KEY=VALUE\)"),
    ("override without a value", "--config.model.T", r"--config\.model\.T needs a value",
     r"write --config\.model\.T=VALUE"),
    # Data mistakes (data.source=arrays, data.path=<file made from DATA[case]>).
    ("missing file", "data", r"data\.path .*missing\.npz does not exist",
     r"point data\.path at an existing \.npz"),
    ("wrong keys", "data", r"lacks key\(s\) x_train, y_train, x_test, y_test \(has: images, "
     r"labels\)", r"save it with np\.savez\(path, x_train=\.\.\."),
    ("wrong shape (NCHW)", "data", r"x_train has shape \(16, 3, 32, 32\), expected "
     r"\(N, 32, 32, 3\)", r"transpose with x\.transpose\(0, 2, 3, 1\)"),
    ("wrong image dtype", "data", r"x_test has dtype int64, expected uint8",
     r"convert with x\.astype\(np\.uint8\)"),
    ("float images outside [0, 1]", "data", r"x_train is float32 with values in \[0, 255\]",
     r"store uint8 0\.\.255 instead"),
    ("NaN pixels", "data", r"x_train contains 1 NaN/inf pixel values",
     r"fix or drop those images"),
    ("labels out of range", "data", r"y_train labels lie in \[1, 10\], outside \[0, 10\)",
     r"check data\.name or the labels"),
    ("one-hot labels", "data", r"y_test has shape \(8, 10\), expected \(N,\) integer class "
     r"labels", r"convert with y\.argmax\(-1\)"),
    ("float labels", "data", r"y_train has dtype float32, expected integer class labels",
     r"convert with y\.astype\(np\.int64\)"),
    ("labels and images of different length", "data",
     r"y_test has 7 labels but the images have 8 examples", r"must have equal length"),
    ("empty split", "data", r"x_test is empty", r"supply at least one example per split"),
]


def argv_for(case: str, extra, tmp_path: pathlib.Path) -> list[str]:
  """The command line of one row (the workdir, data file or saved config prepared in tmp_path)."""
  workdir = tmp_path / "run"
  base = ["--config", SPEC, "--workdir", str(workdir)] + [f"--config.{o}" for o in TINY]
  if extra == "data":
    path = tmp_path / ("missing.npz" if DATA[case] is None else "data.npz")
    if DATA[case] is not None:
      np.savez(path, **DATA[case](valid_arrays()))
    return base + ["--config.data.source=arrays", "--config.data.name=cifar10",
                   f"--config.data.path={path}"]
  if isinstance(extra, str):        # raw arguments replacing / extending the valid command
    raw = extra.split()
    if raw[0] == "--config":
      return raw + base[2:]
    if raw == ["--workdir"]:
      return base[:2] + base[4:]
    return base + raw
  if case.startswith("workdir"):    # the workdir already holds the valid run's config
    logger = metrics.MetricsLogger(workdir, run_config.config_fingerprint(
        config_lib.load_config(SPEC, TINY)), config_lib.load_config(SPEC, TINY))
    logger.close()
  return base + [f"--config.{o}" for o in extra]


def assert_one_clear_line(err: str, problem: str, fix: str) -> str:
  lines = [l for l in err.splitlines() if l.strip()]
  assert "Traceback" not in err, err[-3000:]
  assert [l for l in lines if l.startswith("error:")] == lines[-1:], err[-3000:]
  line = lines[-1]
  assert re.search(problem, line), f"problem not named: {line}"
  assert re.search(fix, line), f"fix not named: {line}"
  return line


@pytest.mark.parametrize("case, extra, problem, fix", CASES, ids=[c[0] for c in CASES])
def test_mistake_ends_with_one_clear_line(case, extra, problem, fix, tmp_path, capsys):
  status = train_cli.main(argv_for(case, extra, tmp_path))
  err = capsys.readouterr().err
  assert status == 2
  assert_one_clear_line(err, problem, fix)


# Issue 24: a --config that does not load, given without overrides (absl then parses it lazily).
BAD_CONFIG_FILES = [
    ("misspelt path", "configs/defualt.py", r"config file 'configs/defualt\.py' not found",
     r"did you mean configs/default\.py"),
    ("misspelt path with an argument", "configs/defualt.py:runlocal",
     r"config file 'configs/defualt\.py' not found", r"did you mean configs/default\.py"),
    ("a directory", "configs", r"config path 'configs' is a directory, not a config file",
     r"pass --config=configs/NAME\.py"),
    ("get_config returns a dict", "DICT", r"get_config\(\) returned dict",
     r"return an ml_collections\.ConfigDict"),
]


@pytest.mark.parametrize("case, spec, problem, fix", BAD_CONFIG_FILES,
                         ids=[c[0] for c in BAD_CONFIG_FILES])
def test_config_that_does_not_load_is_one_line(case, spec, problem, fix, tmp_path, capsys,
                                               monkeypatch):
  monkeypatch.chdir(REPO)
  if spec == "DICT":
    spec = str(tmp_path / "dict_config.py")
    pathlib.Path(spec).write_text("def get_config():\n  return {'seed': 1}\n")
  status = train_cli.main(["--config", spec, "--workdir", str(tmp_path / "run")])
  assert status == 2
  assert_one_clear_line(capsys.readouterr().err, problem, fix)
  assert not (tmp_path / "run").exists()


def test_every_listed_data_mistake_is_in_the_table():
  assert sorted(DATA) == sorted(c[0] for c in CASES if c[1] == "data")


@pytest.mark.parametrize("case", ["unknown key", "NaN pixels"])
def test_subprocess_exit_status_2_without_traceback(case, tmp_path):
  _, extra, problem, fix = next(c for c in CASES if c[0] == case)
  env = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
  proc = subprocess.run([sys.executable, "-m", "experiments.train", *argv_for(case, extra,
                                                                             tmp_path)],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2, proc.stderr[-3000:]
  line = assert_one_clear_line(proc.stderr, problem, fix)
  assert line.startswith("error: ")
  assert not (tmp_path / "run" / "checkpoints").exists(), "nothing was trained"
