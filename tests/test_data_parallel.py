"""Data parallelism without resharding (issue 21 item 4), checked on the 8 fake CPU devices.

The batch is sharded over the mesh's "data" axis; the time steps are merged into it sample-major
(row b*T + t, ``core.neurons.split_time``), so every device keeps its own samples through the
time tiling, the LIF's time reshapes and the mean over T. The compiled train and eval steps
then hold no all-to-all, collective-permute, reduce-scatter or all-gather of activations: the
only collectives are the all-reduce of the gradients and metrics and a few tiny all-gathers that
are part of it: XLA reduces two per-channel gradients of each E-I layer (by their shape g_E's and
b_E's, one f32[n_E] partial sum per device) by gathering the partial sums and adding them
(``.../transpose(jvp(...))/convK/ei/reduce``), 2 x 8 x n_E x 4 bytes per layer: 11.8 KB in all
for the 1/8-width VGG-8 here (on a TPU v5p 2x2x1 slice, E-I VGG-16: 22 of them, 0.13 MB).

With the t-major merge this replaced (row t*B + b), every device's block of the merged axis holds
other devices' samples: XLA gathers the batch at the first LIF (1.05 MB here, at
``lif0/reshape``) and every device computes the whole batch (E-I VGG-16 on the v5p slice: 86.8 GB
and 3,944 GFLOP per chip and train step, against 27.8 GB and 997 GFLOP; README "Performance").
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

from ei_snn_jax.training import config as config_lib, steps as steps_lib, train
from experiments import compile_report

SPEC = "configs/default.py:runlocal"
DEVICES = 8


def _config(arch: str):
  overrides = ["data.source=synthetic", "data.name=synthetic", "data.synthetic_train_size=64",
               "data.synthetic_test_size=32", "data.train_subset=0", "data.test_subset=0",
               f"model.arch={arch}", "model.width_multiplier=0.125", "model.T=2",
               f"train.batch_size={2 * DEVICES}", f"train.eval_batch_size={2 * DEVICES}",
               "train.epochs=1", "train.progress_bar=False", "parallel.num_devices=0"]
  return config_lib.load_config(SPEC, overrides)


def _abstract_state(exp, batch_size: int):
  """The TrainState's shapes (no E-I Init, nothing computed)."""
  def make():
    x = jnp.zeros((batch_size,) + exp.dataset.x_train.shape[1:], jnp.float32)
    variables = exp.model.init(jax.random.key(0), x, train=False)
    params = variables["params"]
    return train.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                            batch_stats=variables.get("batch_stats", {}),
                            opt_state=exp.tx.init(params), sums=steps_lib.zero_sums())
  return jax.eval_shape(make)


# VGG-8: train and eval step; ResNet-18 (its stem, blocks and shortcuts): the train step only,
# to keep the compile time down.
@pytest.mark.parametrize("arch, steps", [("vgg8", ("train", "eval")), ("resnet18", ("train",))],
                         ids=["vgg8", "resnet18"])
def test_data_parallel_steps_move_only_the_gradient_all_reduce(arch, steps):
  if jax.device_count() < DEVICES:
    pytest.skip(f"needs {DEVICES} devices (tests/conftest.py sets 8 fake CPU devices)")
  cfg = _config(arch)
  exp = train.build_experiment(cfg)
  assert exp.mesh.devices.size == DEVICES
  state = _abstract_state(exp, cfg.train.batch_size)
  # The real train step (from the epoch table, as the loop runs it) and eval step, compiled for
  # the CPU mesh; their collectives read from the optimised HLO.
  reports = compile_report.compile_steps(exp, state, exp.mesh, "cpu", steps=steps)
  assert set(reports) == set(steps)
  params = jax.tree.leaves(state.params)
  param_bytes = sum(a.size * a.dtype.itemsize for a in params)
  vector_bytes = sum(a.size * a.dtype.itemsize for a in params if a.ndim == 1)
  for name, report in reports.items():
    collectives = report["collectives"]
    others = {kind: c for kind, c in collectives.items() if kind != "all-reduce"}
    moved = sum(c["bytes"] for c in others.values())
    # At most one partial sum per device of each per-channel (1-D) parameter's gradient (see the
    # module docstring): nothing the size of a batch.
    assert moved <= DEVICES * vector_bytes, (
        f"{arch} {name} step reshards: {moved} bytes in {others}")
    assert set(others) <= {"all-gather"}, others
    for source in others.get("all-gather", {}).get("ops", {}):   # the gradient reductions
      assert "transpose(" in source and source.endswith("/reduce"), others
    if name == "train":   # the step is data parallel: the gradients are all-reduced
      assert collectives["all-reduce"]["bytes"] >= param_bytes, collectives


def test_replicas_over_the_devices_move_nothing():
  """``train.num_replicas`` a multiple of the device count: each device trains whole replicas
  (``Experiment.replicas_over_devices``), so the compiled train and eval steps move nothing but
  the per-replica scalars (the metrics, the NaN guard's flag). Split over the batch instead, XLA
  would gather every replica's batch at each convolution (openxla/xla#47945): 7.6 MB per train
  step for 2 replicas of this VGG-8 on 8 devices, against 12 KB for one."""
  if jax.device_count() < DEVICES:
    pytest.skip(f"needs {DEVICES} devices (tests/conftest.py sets 8 fake CPU devices)")
  cfg = _config("vgg8")
  cfg.train.num_replicas = DEVICES
  exp = train.build_experiment(cfg)
  assert exp.replicas_over_devices
  one = _abstract_state(exp, cfg.train.batch_size)
  state = jax.tree.map(lambda a: jax.ShapeDtypeStruct((DEVICES,) + a.shape, a.dtype),
                       one.replace(step=None)).replace(step=one.step)
  reports = compile_report.compile_steps(exp, state, exp.mesh, "cpu")
  for name, report in reports.items():
    moved = sum(c["bytes"] for c in report["collectives"].values())
    assert moved <= 64 * DEVICES * 4, f"{name} step: {report['collectives']}"


@pytest.mark.parametrize("replicas, devices, whole, advice", [
    (8, 8, True, None), (16, 8, True, None), (2, 8, False, "parallel.num_devices=2"),
    (6, 8, False, "parallel.num_devices=6"), (3, 2, False, "parallel.num_devices=1")])
def test_replica_layout_is_announced(replicas, devices, whole, advice, capsys):
  """Which layout a run of replicas gets on several devices is printed; the batch-split one
  with a warning naming a device count that gives whole replicas instead."""
  if jax.device_count() < devices:
    pytest.skip(f"needs {devices} devices (tests/conftest.py sets 8 fake CPU devices)")
  cfg = _config("vgg8")
  cfg.train.num_replicas, cfg.parallel.num_devices = replicas, devices
  cfg.train.batch_size = cfg.train.eval_batch_size = 2 * devices
  exp = train.build_experiment(cfg)
  out, err = capsys.readouterr()
  assert exp.replicas_over_devices == whole
  if whole:
    assert f"{replicas // devices} whole replica(s) on each" in out and not err
  else:
    assert err.startswith("warning: replicas:") and advice in err and "\n" not in err.strip()
