"""Reliability (issue 4): exact resume after SIGKILL, the NaN/Inf guard, determinism, restore
safety. Every run is the same tiny one (VGG-8 at 1/8 width, T=2, batch 16, 192 synthetic
images: 12 steps per epoch, 2 epochs) on the 8 fake CPU devices of conftest, so that the
persistent compile cache serves every run after the first.

Cases:
* ``test_sigkill_mid_epoch_then_rerun_is_bit_exact``: a real ``python -m experiments.train``
  subprocess is SIGKILLed once it has a checkpoint and has logged steps past it (mid-epoch);
  a finished-looking but unfinalized orbax temp folder of a later step is planted; the same
  command is rerun. It resumes from the checkpoint and drops the records logged after it; final
  parameters, optimizer state, epoch sums, best checkpoint, every metrics.jsonl record (but wall
  time) and the summary equal those of an uninterrupted in-process run bit for bit; the temp
  folder was never loaded and has been deleted.
* ``test_checkpoint_killed_while_being_written_is_never_restored``: a subprocess is SIGKILLed
  while orbax writes a 128 MB checkpoint; the half-written folder is never restored, a reader
  leaves it alone and the training run's Checkpointer deletes it.
* ``test_nonfinite_step_stops_with_step_and_layer``: a NaN injected into conv2's weights at step 4
  stops the CLI within one step (exit status 2, one line naming step 4, conv2 as the first layer
  whose currents went non-finite, and a gradient leaf); the last checkpoint (step 3) is intact,
  loadable and finite. ``test_nonfinite_message_names_first_layer_in_forward_order``: the layer
  named is the first in forward order (VGG-16's conv2 before conv10, ResNet's stem before head).
* ``test_same_seed_same_metrics_different_seed_differs``.
* ``test_restore_into_another_architecture_fails_clearly`` (API, no orbax traceback noise) and
  ``test_cli_resume_with_another_architecture_fails_clearly`` (CLI, exit status 2).
* ``test_dale_projection_is_reapplied_after_restore``: a checkpoint tampered with negative
  constrained weights resumes with them projected to >= 0 before the first step.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ei_snn_jax.training import checkpointing, config as config_lib, guards, metrics, steps, train
from ei_snn_jax import tree as tree_lib
from ei_snn_jax.core import dale
from experiments import train as train_cli

REPO = pathlib.Path(__file__).resolve().parents[1]
SPEC = "configs/default.py:runlocal"
STEPS_PER_EPOCH = 12
TOTAL_STEPS = 24
TINY = ["data.source=synthetic", "data.name=synthetic", "data.synthetic_train_size=192",
        "data.synthetic_test_size=32", "data.train_subset=0", "data.test_subset=0",
        "model.width_multiplier=0.125", "model.T=2", "train.batch_size=16",
        "train.eval_batch_size=16", "train.epochs=2", "train.max_steps=0",
        "train.progress_bar=False", "train.log_every_steps=2", "train.checkpoint_every_steps=3"]


def tiny_config(*extra: str):
  return config_lib.load_config(SPEC, TINY + list(extra))


def cli_argv(workdir, *extra: str) -> list[str]:
  return ["--config", SPEC, "--workdir", str(workdir)] + [f"--config.{o}" for o in
                                                         TINY + list(extra)]


def subprocess_env() -> dict[str, str]:
  """The environment of conftest (8 fake devices, same compile cache) for CLI subprocesses."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = os.environ["XLA_FLAGS"]
  if jax.config.jax_compilation_cache_dir:
    env["JAX_COMPILATION_CACHE_DIR"] = str(jax.config.jax_compilation_cache_dir)
  env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0.5"
  env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
  env["TF_CPP_MIN_LOG_LEVEL"] = "2"
  env["PYTHONPATH"] = str(REPO)
  return env


def template(cfg):
  """Abstract TrainState of ``cfg`` (shapes only: no init, no compile) and its experiment."""
  exp = train.build_experiment(cfg)

  def make():
    x = jnp.zeros((cfg.train.batch_size,) + exp.dataset.x_train.shape[1:], jnp.float32)
    variables = exp.model.init(jax.random.key(0), x, train=False)
    params = variables["params"]
    return train.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                            batch_stats=variables.get("batch_stats", {}),
                            opt_state=exp.tx.init(params), sums=steps.zero_sums())

  return jax.eval_shape(make), exp


def restore(workdir, cfg=None, best=False):
  """(host state, meta) of the latest (or best) checkpoint in ``workdir``."""
  tmpl, exp = template(cfg or tiny_config())
  ckpt = checkpointing.Checkpointer(workdir)
  try:
    restored = (ckpt.restore_best if best else ckpt.restore_latest)(tmpl, exp.replicated)
  finally:
    ckpt.close()
  assert restored is not None, f"no checkpoint in {workdir}"
  state, meta = restored
  return jax.device_get(state), meta


def assert_bitwise_equal(a, b):
  leaves_a, tree_a = jax.tree_util.tree_flatten_with_path(a)
  leaves_b, tree_b = jax.tree_util.tree_flatten_with_path(b)
  assert tree_a == tree_b
  for (path, x), (_, y) in zip(leaves_a, leaves_b):
    x, y = np.asarray(x), np.asarray(y)
    name = jax.tree_util.keystr(path)
    assert (x.dtype, x.shape) == (y.dtype, y.shape), name
    assert x.tobytes() == y.tobytes(), f"{name} differs"


def assert_dale(params):
  """Every constrained parameter is >= 0 (and finite)."""
  for (path, leaf), constrained in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                                       jax.tree.leaves(dale.constrained_mask(params))):
    leaf = np.asarray(leaf)
    assert np.all(np.isfinite(leaf)), jax.tree_util.keystr(path)
    if constrained:
      assert leaf.min() >= 0, jax.tree_util.keystr(path)


def without_wall_time(records):
  return [{k: v for k, v in r.items() if k != "wall_time"} for r in records]


def complete_steps(folder: pathlib.Path) -> list[int]:
  """Steps of finalized orbax checkpoints (a plain number; temp folders carry a suffix)."""
  if not folder.is_dir():
    return []
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def records_past_checkpoint(workdir: pathlib.Path) -> bool:
  """A checkpoint exists and metrics.jsonl already holds records of later steps."""
  steps = complete_steps(workdir / "checkpoints")
  if not steps or not (workdir / "metrics.jsonl").exists():
    return False
  lines = (workdir / "metrics.jsonl").read_text().splitlines()
  try:
    return any(json.loads(line)["step"] > steps[-1] for line in lines if line.strip())
  except json.JSONDecodeError:       # a line being written
    return False


def temp_folders(folder: pathlib.Path) -> list[str]:
  return [p.name for p in folder.iterdir() if ".orbax-checkpoint-tmp" in p.name]


def capture_steps(monkeypatch, on_call):
  """Wrap the jitted train step: ``on_call(state) -> state`` runs before every step."""
  real = steps.make_train_step

  def make(exp, source):
    step = real(exp, source)

    def wrapped(state, batch):
      with jax.transfer_guard("allow"):   # the injected fault may move data; the loop may not
        state = on_call(state)
      return step(state, batch)

    return wrapped

  monkeypatch.setattr(steps, "make_train_step", make)


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
  """The same run stopped after 4 steps (train.max_steps is not part of the run's identity)."""
  workdir = tmp_path_factory.mktemp("short")
  train.train_and_evaluate(tiny_config("train.max_steps=4"), workdir)
  return workdir


# ---------------------------------------------------------------------------------------------
# 1. Exact resume.
# ---------------------------------------------------------------------------------------------

def test_sigkill_mid_epoch_then_rerun_is_bit_exact(tiny_reference_run, tmp_path):
  workdir = tmp_path / "killed"
  command = [sys.executable, "-m", "experiments.train", *cli_argv(workdir)]
  log = tmp_path / "killed.log"
  with open(log, "w") as out:
    proc = subprocess.Popen(command, cwd=REPO, env=subprocess_env(), stdout=out, stderr=out)
  try:
    deadline = time.monotonic() + 240
    while not records_past_checkpoint(workdir):
      assert proc.poll() is None, f"the run ended before it was killed:\n{log.read_text()}"
      assert time.monotonic() < deadline, "no checkpoint after 240 s"
      time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
  finally:
    if proc.poll() is None:
      proc.kill()
    proc.wait()
  assert proc.returncode == -signal.SIGKILL
  assert not (workdir / "summary.json").exists()
  latest = complete_steps(workdir / "checkpoints")[-1]
  assert latest < TOTAL_STEPS
  logged = [r["step"] for r in metrics.read_metrics(workdir)]
  print(f"killed after checkpoint {latest}; records up to step {max(logged)}; unfinished "
        f"checkpoints left: {temp_folders(workdir / 'checkpoints')}")

  # A checkpoint whose writing never finished (orbax's temp name) must never be loaded, even
  # when it looks complete and is the newest; its step is past the end of the run.
  planted = workdir / "checkpoints" / f"{TOTAL_STEPS + 6}.orbax-checkpoint-tmp-1764000000000"
  shutil.copytree(workdir / "checkpoints" / str(latest), planted)

  rerun = subprocess.run(command, cwd=REPO, env=subprocess_env(), capture_output=True,
                         text=True, timeout=400)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  resumed = int(re.search(r"resumed from step (\d+)", rerun.stdout).group(1))
  assert resumed == latest and resumed % STEPS_PER_EPOCH, "killed mid-epoch, resumed there"
  assert not temp_folders(workdir / "checkpoints"), "unfinished checkpoints are cleaned up"

  for best in (False, True):
    got, got_meta = restore(workdir, best=best)
    want, want_meta = restore(tiny_reference_run, best=best)
    assert best or int(got.step) == TOTAL_STEPS
    assert_bitwise_equal(got, want)          # step, params, batch_stats, opt_state, sums
    assert {k: v for k, v in got_meta.items() if k != "wall_time"} == {
        k: v for k, v in want_meta.items() if k != "wall_time"}
    assert_dale(got.params)
  assert without_wall_time(metrics.read_metrics(workdir)) == without_wall_time(
      metrics.read_metrics(tiny_reference_run))
  got_summary = json.loads((workdir / "summary.json").read_text())
  want_summary = json.loads((tiny_reference_run / "summary.json").read_text())
  for key in ("step", "finished", "best_test_accuracy", "best_epoch", "final_test_accuracy"):
    assert got_summary[key] == want_summary[key], key


def test_checkpoint_killed_while_being_written_is_never_restored(tmp_path):
  """SIGKILL while orbax writes step 2 (128 MB): the half-written folder is never restored."""
  writer = (
      "import sys\n"
      "import jax.numpy as jnp, numpy as np\n"
      "from ei_snn_jax.training import checkpointing\n"
      "n = 32_000_000\n"
      "ckpt = checkpointing.Checkpointer(sys.argv[1])\n"
      "ckpt.save(1, {'w': jnp.ones((n,), jnp.float32)}, {'step': 1})\n"
      "ckpt.wait()\n"
      "noise = jnp.asarray(np.random.default_rng(0).standard_normal(n, dtype=np.float32))\n"
      "ckpt.save(2, {'w': noise}, {'step': 2})\n"
      "ckpt.wait()\n"
      "print('finished', flush=True)\n")
  folder = tmp_path / "checkpoints"
  proc = subprocess.Popen([sys.executable, "-c", writer, str(tmp_path)], cwd=REPO,
                          env=subprocess_env(), stdout=subprocess.PIPE, text=True)
  try:
    deadline = time.monotonic() + 120
    while not (complete_steps(folder) == [1] and folder.is_dir() and temp_folders(folder)):
      assert proc.poll() is None, "the writer finished before it could be interrupted"
      assert time.monotonic() < deadline
      time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
  finally:
    if proc.poll() is None:
      proc.kill()
    proc.wait()
    proc.stdout.close()
  assert proc.returncode == -signal.SIGKILL
  leftovers = temp_folders(folder)
  assert leftovers and leftovers[0].startswith("2.orbax-checkpoint-tmp"), leftovers

  target = {"w": jax.ShapeDtypeStruct((32_000_000,), jnp.float32)}
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  for cleanup in (False, True):     # a reader (evaluate), then the training run that resumes
    ckpt = checkpointing.Checkpointer(tmp_path, cleanup_unfinished=cleanup)
    try:
      assert ckpt.latest_step() == 1
      state, meta = ckpt.restore_latest(target, sharding)
    finally:
      ckpt.close()
    assert meta == {"step": 1}
    assert float(jnp.min(state["w"])) == float(jnp.max(state["w"])) == 1.0
    assert bool(temp_folders(folder)) == (not cleanup), "only the trainer deletes leftovers"


# ---------------------------------------------------------------------------------------------
# 2. NaN/Inf guard.
# ---------------------------------------------------------------------------------------------

BAD_STEP = 4


def test_nonfinite_step_stops_with_step_and_layer(tmp_path, monkeypatch, capsys, nan_in_layer):
  calls = []

  def poison(state):
    step = int(jax.device_get(state.step))
    calls.append(step)
    return nan_in_layer(state) if step == BAD_STEP else state

  capture_steps(monkeypatch, poison)
  status = train_cli.main(cli_argv(tmp_path))
  err = capsys.readouterr().err
  assert status == 2
  lines = [l for l in err.splitlines() if l.strip()]
  assert lines[-1].startswith("error: non-finite loss/gradient at step 4"), err[-2000:]
  assert sum(l.startswith("error:") for l in lines) == 1 and "Traceback" not in err
  assert "the forward pass first went non-finite in layer conv2 (its excitatory" in lines[-1]
  assert re.search(r"params\['conv\d'\]\['ei'\]\['\w+'\]", lines[-1]), "names a gradient leaf"
  assert max(calls) == BAD_STEP and len(calls) <= BAD_STEP + 2, "stops within one step"

  # The last good checkpoint is intact and loadable; nothing was saved after the bad step.
  assert complete_steps(tmp_path / "checkpoints") == [3]
  state, _ = restore(tmp_path)
  assert int(state.step) == 3
  assert_dale(state.params)                     # finite, and Dale's law holds
  jax.tree.map(lambda x: np.testing.assert_array_equal(np.isfinite(x), True), state.opt_state)
  assert max(r["step"] for r in metrics.read_metrics(tmp_path)) <= BAD_STEP


@pytest.mark.parametrize("arch, bad_layers, first", [
    ("vgg16", ["conv10", "conv2", "conv11", "head"], "conv2"),   # not name order (conv10 < conv2)
    ("resnet18", ["head", "stage1_block0.downsample", "stage0_block1.conv2", "stem"], "stem"),
])
def test_nonfinite_message_names_first_layer_in_forward_order(arch, bad_layers, first):
  tmpl, exp = template(tiny_config(f"model.arch={arch}"))
  step_metrics = {"loss": np.float32(np.nan), "finite": False,
                  "bad_leaves": np.zeros(len(jax.tree.leaves(tmpl.params)), bool),
                  "firing_rate/lif0": np.float32(0.5), "integrated_mean/conv0": np.float32(1.0)}
  for layer in bad_layers:
    step_metrics[f"shunting_std/{layer}"] = np.float32(np.inf)
    step_metrics[f"integrated_mean/{layer}"] = np.float32(np.nan)
  with pytest.raises(train.NonFiniteError) as info:
    guards.raise_nonfinite(exp, tmpl, step_metrics, 7)
  message = str(info.value)
  assert message.startswith("non-finite loss/gradient at step 7 (loss=nan)")
  assert f"first went non-finite in layer {first} (its shunting, integrated currents)" in message
  assert "the loss is non-finite but every gradient is finite" in message
  assert message.endswith("Lower optim.lr or check the data.")


@pytest.mark.parametrize("arch, bad_layers, origin", [
    ("vgg16", ["conv0", "conv1", "conv2"], "conv2"),   # not flatten order (conv0 < conv10 < conv2)
    ("resnet18", ["stem", "stage0_block0.conv1", "stage1_block0.downsample"],
     "stage1_block0.downsample"),
])
def test_nonfinite_gradient_is_traced_to_the_deepest_layer(arch, bad_layers, origin):
  """The backward pass starts at the output, so the deepest layer with a non-finite gradient is
  where it began (seen in the study: the spiking DANN's NaN began in conv2, and the message named
  conv0, the first leaf in flatten order)."""
  tmpl, exp = template(tiny_config(f"model.arch={arch}"))
  flat = jax.tree_util.tree_flatten_with_path(tmpl.params)[0]
  layer = lambda path: tree_lib.layer_path(path[:-1])
  flags = np.array([layer(p) in bad_layers for p, _ in flat])
  want = next(jax.tree_util.keystr(p) for p, _ in flat if layer(p) == origin)
  step_metrics = {"loss": np.float32(2.3), "finite": False, "bad_leaves": flags}
  with pytest.raises(train.NonFiniteError) as info:
    guards.raise_nonfinite(exp, tmpl, step_metrics, 4)
  assert (f"the gradient went non-finite in 3 layer(s), first (backward) in params{want}"
          in str(info.value))


def test_nonfinite_first_step_does_not_blame_the_learning_rate():
  """At step 0 nothing has been updated yet (seen in the study: the spiking DANN and the
  no-stabilisation ablation), so the advice points at the model and the data, not at optim.lr."""
  tmpl, exp = template(tiny_config())
  step_metrics = {"loss": np.float32(2.3), "finite": False,
                  "bad_leaves": np.ones(len(jax.tree.leaves(tmpl.params)), bool)}
  with pytest.raises(train.NonFiniteError) as info:
    guards.raise_nonfinite(exp, tmpl, step_metrics, 0)
  message = str(info.value)
  assert "before any update, so the learning rate plays no part" in message
  assert "Lower optim.lr" not in message and "\n" not in message


# ---------------------------------------------------------------------------------------------
# 4. Determinism.
# ---------------------------------------------------------------------------------------------

def test_same_seed_same_metrics_different_seed_differs(tiny_reference_run, short_run, tmp_path):
  train.train_and_evaluate(tiny_config("train.max_steps=4"), tmp_path / "again")
  first, again = metrics.read_metrics(short_run), metrics.read_metrics(tmp_path / "again")
  assert len(first) >= 3 and without_wall_time(again) == without_wall_time(first)
  assert_bitwise_equal(restore(tmp_path / "again")[0], restore(short_run)[0])
  # The full run saw exactly the same first steps.
  assert [r for r in metrics.read_metrics(tiny_reference_run, "train") if r["step"] <= 4] == (
      metrics.read_metrics(short_run, "train"))

  other_cfg = tiny_config("train.max_steps=4", "seed=2026")
  train.train_and_evaluate(other_cfg, tmp_path / "other")
  other = metrics.read_metrics(tmp_path / "other", "train")
  assert [r["step"] for r in other] == [r["step"] for r in metrics.read_metrics(short_run,
                                                                               "train")]
  assert all(a["loss"] != b["loss"] for a, b in zip(other, metrics.read_metrics(short_run,
                                                                                 "train")))
  a, b = restore(tmp_path / "other", other_cfg)[0], restore(short_run)[0]
  assert not np.array_equal(a.params["conv0"]["ei"]["w_ee"], b.params["conv0"]["ei"]["w_ee"])


# ---------------------------------------------------------------------------------------------
# 6. Restore safety.
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change, expected", [
    ("model.arch=vgg11", r"params\.conv5\.ei\.\w+ is missing from the checkpoint"),
    ("model.width_multiplier=0.25", r"params\.conv0\.ei\.\w+ is float32\[\d+\] in the checkpoint "
                                    r"but float32\[\d+\] in this model"),
    ("model.variant=bn", r"the checkpoint holds params\.conv0\.ei\.\w+, which this model lacks"),
])
def test_restore_into_another_architecture_fails_clearly(tiny_reference_run, change, expected,
                                                         capfd):
  tmpl, exp = template(tiny_config(change))
  ckpt = checkpointing.Checkpointer(tiny_reference_run)
  try:
    with pytest.raises(checkpointing.CheckpointMismatchError) as info:
      ckpt.restore_latest(tmpl, exp.replicated)
  finally:
    ckpt.close()
  message = str(info.value)
  assert "\n" not in message and re.search(expected, message), message
  assert f"(step {TOTAL_STEPS}) does not match this model/optimizer" in message
  assert "use a fresh --workdir" in message
  assert "Traceback" not in capfd.readouterr().err, "no asynchronous orbax failures"


def test_cli_resume_with_another_architecture_fails_clearly(tiny_reference_run, tmp_path, capsys):
  """A workdir whose config.json is gone: the checkpoint itself is checked (exit status 2)."""
  shutil.copytree(tiny_reference_run / "checkpoints", tmp_path / "checkpoints")
  status = train_cli.main(cli_argv(tmp_path, "model.arch=vgg11"))
  err = capsys.readouterr().err
  lines = [l for l in err.splitlines() if l.strip()]
  assert status == 2 and "Traceback" not in err
  assert re.fullmatch(r"error: checkpoint .* \(step 24\) does not match this model/optimizer: "
                      r".*params\.conv\d\.ei\.\w+.* use a fresh --workdir .*", lines[-1]), err


def test_dale_projection_is_reapplied_after_restore(short_run, tmp_path, monkeypatch):
  """Negative constrained weights written into a checkpoint are projected before training."""
  workdir = tmp_path / "tampered"
  shutil.copytree(short_run, workdir)
  cfg = tiny_config("train.max_steps=6")
  tmpl, exp = template(cfg)
  ckpt = checkpointing.Checkpointer(workdir)
  state, meta = ckpt.restore_latest(tmpl, exp.replicated)
  step = int(state.step)
  ckpt.close()
  tampered = {"['conv1']['ei']['w_ee']", "['conv0']['ei']['g_e']", "['head']['ei']['w_ei']",
              "['conv3']['ei']['bias']"}
  params = jax.tree_util.tree_map_with_path(
      lambda path, x: -jnp.abs(x) - 0.5 if jax.tree_util.keystr(path) in tampered else x,
      state.params)
  shutil.rmtree(workdir / "checkpoints" / str(step))
  ckpt = checkpointing.Checkpointer(workdir)
  ckpt.save(step, state.replace(params=params), meta)
  ckpt.close()

  seen = []

  def check(state):
    seen.append(jax.device_get(state))
    return state

  capture_steps(monkeypatch, check)
  train.train_and_evaluate(cfg, workdir)
  assert [int(s.step) for s in seen] == [step, step + 1]
  first = seen[0].params
  for s in seen:
    assert_dale(s.params)                      # every step starts from a projected state
  assert np.all(first["conv1"]["ei"]["w_ee"] == 0) and np.all(first["head"]["ei"]["w_ei"] == 0)
  assert np.all(first["conv0"]["ei"]["g_e"] == 0)
  assert np.all(first["conv3"]["ei"]["bias"] < 0), "biases are not constrained"
