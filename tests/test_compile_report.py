"""The compile report for accelerators (experiments/compile_report.py, ``benchmark --target``), and
the small-map convolution and the E-I layer's folded kernel following the platform being lowered
for (core/circuit.py, layers.py).

The always-run tests need only the CPU jaxlib (a few seconds). The GPU and TPU compiles need the
``gpu-aot`` / ``tpu-aot`` extras (jax[cuda12] / jax[tpu], installed in their own venvs) and skip
without them, saying so."""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ei_snn_jax import layers
from ei_snn_jax.core import circuit
from experiments import compile_report

REPO = pathlib.Path(__file__).resolve().parents[1]
HAS_GPU_AOT = importlib.util.find_spec("jax_cuda12_plugin") is not None
HAS_TPU_AOT = importlib.util.find_spec("libtpu") is not None


def _small_map_operands():
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.random((3, 2, 2, 8)), jnp.float32)
  w = jnp.asarray(rng.random((3, 3, 8, 5)), jnp.float32)
  return x, w


@pytest.mark.parametrize("platform", ["cuda", "tpu", "rocm"])
def test_small_map_rewrite_follows_the_lowering_platform(platform):
  """Lowered for a GPU or TPU from this CPU host, a small-map 3x3 convolution stays a
  convolution (forward and gradient): no patches @ kernel matmul, the CPU-only rewrite."""
  x, w = _small_map_operands()
  fwd = jax.jit(lambda a, b: circuit.conv(a, b))
  grad = jax.jit(jax.grad(lambda a, b: jnp.sum(circuit.conv(a, b) ** 2), (0, 1)))
  for fn in (fwd, grad):
    text = fn.trace(x, w).lower(lowering_platforms=(platform,)).as_text()
    assert "stablehlo.convolution" in text
    assert "dot_general" not in text and "concatenate" not in text


def test_small_map_rewrite_on_cpu_is_unchanged():
  """Lowered for (and run on) the CPU, the same convolution is still patches @ kernel: the
  compiled forward and gradient hold a dot and no convolution or conditional, and the values
  equal the convolution's to float32 rounding."""
  x, w = _small_map_operands()
  grad = jax.jit(jax.value_and_grad(lambda a, b: jnp.sum(circuit.conv(a, b) ** 2), (0, 1)))
  text = grad.trace(x, w).lower(lowering_platforms=("cpu",)).compile().as_text()
  assert " dot(" in text or "dot." in text
  assert "convolution" not in text and "conditional" not in text
  ref = jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(jax.jit(circuit.conv)(x, w), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("platform", ["cuda", "tpu", "cpu"])
def test_ei_layer_folds_the_shunting_current_for_accelerators(platform):
  """An E-I convolution, forward and gradient, lowered for a GPU or TPU from this CPU host: one
  convolution gives [I_bal | I_shunt] (2 n_E channels) and no feature map is mixed by a matmul
  (issue 21: no I_IE stored, mixed or differentiated). Lowered for the CPU: the convolution gives
  [I_bal | I_IE] (n_E + n_I channels) and I_shunt is mixed from I_IE (fewer FLOPs)."""
  n, n_e, n_i = 24, 8, 2
  x = jnp.asarray(np.random.default_rng(0).random((n, 6, 6, 3)) < 0.3, jnp.float32)
  conv = layers.EIConv(n_e)
  params = jax.jit(conv.init)(jax.random.key(0), x)["params"]
  grad = jax.jit(jax.grad(lambda p, x: jnp.sum(conv.apply({"params": p}, x) ** 2), (0, 1)))
  text = grad.trace(params, x).lower(lowering_platforms=(platform,)).as_text()
  # Convolutions with a feature-map result: the forward one, and dL/dx (3 channels).
  forward = [c for c in re.findall(rf"stablehlo.convolution.*-> tensor<{n}x6x6x(\d+)xf32>", text)
             if c != "3"]
  feature_map_matmuls = re.findall(rf"stablehlo.dot_general.*tensor<{n}x6x6x", text)
  if platform == "cpu":
    assert forward == [str(n_e + n_i)], forward
    assert feature_map_matmuls
  else:
    assert str(n_e + n_i) not in forward and forward.count(str(2 * n_e)) == 1, forward
    assert not feature_map_matmuls, feature_map_matmuls


def test_hlo_traffic_counts_kernels_by_kind():
  """Bytes by kernel kind from an optimised HLO: a convolution, a matmul and an elementwise
  fusion of a CPU compile land in their kinds, with operand + result bytes."""
  def f(x, w, m):
    y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    z = jnp.tanh(y.reshape(8, -1)) * 2.0 + 1.0
    return z @ m
  args = (jnp.ones((8, 8, 8, 4)), jnp.ones((3, 3, 4, 4)), jnp.ones((256, 16)))
  text = jax.jit(f).lower(*args).compile().as_text()
  r = compile_report.hlo_traffic(text)
  assert r["bytes_by_kind"]["convolution"] >= (8 * 8 * 8 * 4 * 2 + 3 * 3 * 4 * 4) * 4
  assert r["bytes_by_kind"]["matmul"] >= (8 * 256 + 256 * 16 + 8 * 16) * 4
  assert r["bytes_total"] == sum(r["bytes_by_kind"].values())
  assert r["collectives"] == {}
  assert compile_report.shape_bytes("(f32[2,3]{1,0}, bf16[4], pred[])") == 24 + 8 + 1


def test_hlo_traffic_reads_collectives_and_while_trip_counts():
  """Collectives are counted with their bytes and source op; while bodies count trip times."""
  hlo = """HloModule m, entry_computation_layout={(f32[4,8]{1,0})->f32[4,8]{1,0}}

%body (p: (s32[], f32[4,8])) -> (s32[], f32[4,8]) {
  %p = (s32[], f32[4,8]{1,0}) parameter(0)
  %x = f32[4,8]{1,0} get-tuple-element(%p), index=1
  %y = f32[4,8]{1,0} fusion(%x), kind=kLoop, calls=%fused
  ROOT %t = (s32[], f32[4,8]{1,0}) tuple(%i, %y)
}

ENTRY %main (a: f32[4,8]) -> f32[4,8] {
  %a = f32[4,8]{1,0} parameter(0)
  %g = f32[16,8]{1,0} all-gather(%a), dimensions={0}, metadata={op_name="jit(f)/reshape"}
  %w = (s32[], f32[4,8]{1,0}) while(%init), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"3"}}
  ROOT %r = f32[4,8]{1,0} all-reduce(%a), to_apply=%add, metadata={op_name="jit(f)/psum"}
}
"""
  r = compile_report.hlo_traffic(hlo)
  assert r["collectives"]["all-gather"] == {"count": 1, "bytes": 16 * 8 * 4,
                                            "ops": {"jit(f)/reshape": 16 * 8 * 4}}
  assert r["collectives"]["all-reduce"]["bytes"] == 4 * 8 * 4
  assert r["kernels_by_kind"]["fusion"] == 3
  assert r["bytes_by_kind"]["fusion"] == 3 * 2 * 4 * 8 * 4


def test_hlo_traffic_counts_a_conditional_at_its_heaviest_branch():
  """A conditional counts the branch that moves the most (as if it ran: the most one step can
  move), not both and not neither; ``conditional_bytes`` says how much that branch is."""
  hlo = """HloModule m, entry_computation_layout={(f32[4,8]{1,0})->f32[4,8]{1,0}}

%heavy (p: (f32[4,8])) -> (f32[4,8]) {
  %p = (f32[4,8]{1,0}) parameter(0)
  %x = f32[4,8]{1,0} get-tuple-element(%p), index=0
  %k = f32[4,8]{1,0} custom-call(%x), custom_call_target="__gpu$xla.gpu.triton"
  %y = f32[4,8]{1,0} fusion(%k), kind=kLoop, calls=%fused
  ROOT %t = (f32[4,8]{1,0}) tuple(%y)
}

%light (p: (f32[4,8])) -> (f32[4,8]) {
  %p = (f32[4,8]{1,0}) parameter(0)
  ROOT %t = (f32[4,8]{1,0}) tuple(%p)
}

ENTRY %main (a: f32[4,8]) -> f32[4,8] {
  %a = f32[4,8]{1,0} parameter(0)
  %b = pred[] fusion(%a), kind=kInput, calls=%any
  %c = (f32[4,8]{1,0}) conditional(%b, %a, %a), true_computation=%heavy, false_computation=%light
  ROOT %r = f32[4,8]{1,0} get-tuple-element(%c), index=0
}
"""
  r = compile_report.hlo_traffic(hlo)
  branch = 2 * 2 * 4 * 8 * 4   # the heavy branch: a kernel and a fusion, 4x8 float32 in and out
  assert r["kernels_by_kind"]["kernel"] == 1 and r["kernels_by_kind"]["fusion"] == 2
  assert r["conditional_bytes"] == branch
  assert r["bytes_total"] == branch + 4 * 8 * 4 + 1


def test_hlo_traffic_counts_pallas_kernels_as_kernels():
  """A hand-written kernel (a Pallas call lowered through Triton: a custom call) is its own
  kind, "kernel", with operand + result bytes; a cuDNN convolution stays a convolution."""
  hlo = """HloModule m, entry_computation_layout={(f32[4,8]{1,0})->f32[4,8]{1,0}}

ENTRY %main (a: f32[4,8]) -> f32[4,8] {
  %a = f32[4,8]{1,0} parameter(0)
  %c = (f32[4,8]{1,0}, u8[0]{0}) custom-call(%a), custom_call_target="__cudnn$convForward"
  %k = f32[4,8]{1,0} custom-call(%a), custom_call_target="__gpu$xla.gpu.triton", metadata={op_name="jit(f)/pallas_call"}
  ROOT %m = f32[4,8]{1,0} custom-call(%k), custom_call_target="mosaic_gpu_v2"
}
"""
  r = compile_report.hlo_traffic(hlo)
  assert r["kernels_by_kind"]["kernel"] == 2 and r["kernels_by_kind"]["convolution"] == 1
  assert r["bytes_by_kind"]["kernel"] == 2 * 2 * 4 * 8 * 4


def test_targets_and_estimate():
  """Every GPU target has its GpuTargetConfigProto file; the estimate says it is one."""
  for name, (platform, spec, chips, bandwidth) in compile_report.TARGETS.items():
    if platform == "cuda":
      text = (compile_report.TARGET_DIR / spec).read_text()
      assert f"memory_bandwidth: {int(bandwidth)}" in text and 'platform_name: "CUDA"' in text
  est = compile_report.estimate("h200", "vgg16", "float32", 128, 4, 2e9, 1e9)
  assert est["train_img_s_estimate"] == pytest.approx(25.7e3 / 2)
  assert "ESTIMATE" in est["estimate_kind"]
  node = compile_report.estimate("h200x8", "vgg16", "float32", 128, 4, 2e9, 1e9)
  assert node["train_img_s_estimate"] == pytest.approx(8 * 25.7e3 / 2)   # 8 chips, per-chip bytes
  assert "x 8 chips" in node["estimate_kind"] and "bandwidth" not in node["estimate_kind"]
  assert "ESTIMATE" in compile_report.estimate("v5p:2x2x1", "vgg16", "float32", 128, 4, 1e9,
                                               None)["estimate_kind"]


def _report(tmp_path, width, *flags):
  out = tmp_path / "r.jsonl"
  cmd = [sys.executable, "-m", "experiments.benchmark", "--model=vgg8", f"--width={width}",
         "--batch=2", "--eval_batch=2", "--T=2", f"--out={out}", *flags]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900,
                        # this test process may hold libtpu's lock already (a TPU lowering)
                        env={**os.environ, "ALLOW_MULTIPLE_LIBTPU_LOAD": "1"})
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "ESTIMATE" in proc.stdout
  return json.loads(out.read_text().splitlines()[-1])


@pytest.mark.skipif(not HAS_GPU_AOT, reason="needs the gpu-aot extra (pip install -e "
                    "'.[gpu-aot]' in its own venv): compiles for a CUDA target without a GPU")
def test_gpu_compile_report(tmp_path):
  """The H200 report of a small VGG: cuDNN convolutions, no CPU matmul rewrite of the 2x2 maps
  (VGG-8 at 32x32 reaches them), no collectives on one GPU, memory read."""
  # Full width: at widths 0.125 and 0.5, XLA:GPU (jax 0.10.2) fails to tile the weight
  # gradient of the first layer's folded kernel, f32[27, n_I] with n_I = 2 or 8 ("Couldn't find
  # output tile sizes"), which full-width layers (n_I >= 16) do not meet.
  r = _report(tmp_path, 1.0, "--target=h200")
  for part in ("snn", "ann"):
    for step in ("train", "eval"):
      s = r[part][step]
      assert s["bytes_by_kind"]["convolution"] > 0
      assert s["collectives"] == {} and s["temp_bytes"] is not None
  assert r["device_kind"] and r["platform"] == "cuda"


@pytest.mark.skipif(not HAS_GPU_AOT, reason="needs the gpu-aot extra (pip install -e "
                    "'.[gpu-aot]' in its own venv): compiles for a CUDA target without a GPU")
def test_gpu_node_report_of_whole_replicas(tmp_path):
  """8 replicas on a node of 8 H200s: one whole replica per GPU (shard_map), so each GPU's
  program runs the E-I kernels (Triton) on its replica's batch and moves no activation between
  GPUs: the collectives are a few per-replica scalars."""
  r = _report(tmp_path, 1.0, "--target=h200x8", "--replicas=8", "--noann")
  assert r["chips"] == 8 and r["replicas"] == 8 and r["replicas_over_chips"]
  assert r["global_batch"] == 16 and r["batch_per_chip"] == 2
  for step in ("train", "eval"):
    s = r["snn"][step]
    assert s["bytes_by_kind"]["kernel"] > 0
    assert sum(c["bytes"] for c in s["collectives"].values()) <= 1024, s["collectives"]


@pytest.mark.skipif(not HAS_GPU_AOT, reason="needs the gpu-aot extra (pip install -e "
                    "'.[gpu-aot]' in its own venv): compiles for a CUDA target without a GPU")
def test_gpu_node_report_of_one_data_parallel_run(tmp_path):
  """One run over a node of 8 H200s (the batch sharded): the eval step's kernels, their rerun
  included, run on each GPU's own samples, so it moves nothing between GPUs but scalars (a
  rerun outside the sample-split op gathered 1.2 GB per step for VGG-16)."""
  r = _report(tmp_path, 1.0, "--target=h200x8", "--noann")
  assert r["chips"] == 8 and r["replicas"] == 1
  ev = r["snn"]["eval"]
  assert ev["conditional_bytes"] > 0 and ev["bytes_by_kind"]["kernel"] > 0
  assert sum(c["bytes"] for c in ev["collectives"].values()) <= 1024, ev["collectives"]


@pytest.mark.skipif(not HAS_TPU_AOT, reason="needs the tpu-aot extra (pip install -e "
                    "'.[tpu-aot]' in its own venv): compiles for a TPU slice without one")
def test_tpu_compile_report(tmp_path):
  """The v5p 2x2x1 report of a small VGG: 4 chips, the gradient all-reduce, XLA's FLOPs."""
  r = _report(tmp_path, 0.25, "--target=v5p:2x2x1")
  s = r["snn"]["train"]
  assert r["chips"] == 4 and r["global_batch"] == 8
  assert "all-reduce" in s["collectives"] and s["flops"] > 0


_EI_LIF_H200 = r'''
import json, re, sys
import jax, jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
from ei_snn_jax import layers
from experiments import compile_report

dtype = sys.argv[1]
mesh, platform = compile_report.target_mesh("h200")
T, n_e = 4, 64
conv = layers.EIConv(n_e, options=layers.EIOptions(conv_dtype=dtype))
lif = layers.LIF(T)
x = jnp.zeros((8 * T, 8, 8, 64), jnp.float32)
params = conv.init(jax.random.key(0), x.at[:, 0, 0, 0].set(1.0))["params"]

def loss(p, x):
  return jnp.sum(lif.apply({}, conv.apply({"params": p}, x)) ** 2)

rep = NamedSharding(mesh, P())
sds = lambda t: jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep), t)
text = jax.jit(jax.grad(loss, (0, 1))).trace(sds(params), sds(x)).lower(
    lowering_platforms=(platform,)).compile().as_text()
comps, entry = compile_report.parse_hlo(text)
op_name = lambda i: (re.search(r'op_name="([^"]+)"', i["attrs"]) or [None, ""])[1]
kernels = [dict(kind=compile_report.kernel_kind(comps, i), type=i["type"], op_name=op_name(i))
           for i in comps[entry] if i["opcode"] not in compile_report.FREE]
print(json.dumps(kernels))
'''


@pytest.mark.skipif(not HAS_GPU_AOT, reason="needs the gpu-aot extra (pip install -e "
                    "'.[gpu-aot]' in its own venv): compiles for a CUDA target without a GPU")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_h200_ei_layer_and_lif_kernels(dtype):
  """An E-I convolution and its LIF (T = 4), differentiated and compiled for an H200 (issue 21):
  the LIF's backward pass through time is no matmul over the time axis (no T x T operand: the
  discounted sums are computed in the elementwise pass), and under the bfloat16 policy every
  cuDNN convolution (forward, input and filter gradients) runs in bfloat16, which XLA:GPU does
  only when the result is bfloat16 too (a float32 result makes it convert the operands and run
  a float32 convolution)."""
  proc = subprocess.run([sys.executable, "-c", _EI_LIF_H200, dtype], cwd=REPO,
                        capture_output=True, text=True, timeout=900,
                        env={**os.environ, **compile_report.gpu_environment(),
                             "PYTHONPATH": str(REPO)})
  assert proc.returncode == 0, proc.stderr[-3000:]
  kernels = json.loads(proc.stdout.splitlines()[-1])
  lif_matmuls = [k for k in kernels if k["kind"] == "matmul" and "LIF" in k["op_name"]]
  assert not lif_matmuls, lif_matmuls
  assert [k for k in kernels if "LIF" in k["op_name"]]    # the LIF's kernels are named so
  convs = [k for k in kernels if k["kind"] == "convolution"]
  assert len(convs) == 3, convs
  want = "bf16[" if dtype == "bfloat16" else "f32["
  for k in convs:
    assert k["type"].lstrip("(").startswith(want), k


_EI_CONV_H200 = r'''
import json, sys
import flax.linen as nn
import jax, jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
from ei_snn_jax import layers
from ei_snn_jax.models import common
from experiments import compile_report

dtype = sys.argv[1]
mesh, platform = compile_report.target_mesh("h200")
T = 4
o = common.ModelOptions(T=T, ei=layers.EIOptions(conv_dtype=dtype))

class Stack(nn.Module):   # the image -> 64 units, then 64 -> 64, each firing its LIF
  @nn.compact
  def __call__(self, x):
    for i in range(2):
      x = common.fire(common.CurrentLayer(64, o, name=f"conv{i}"),
                      common.spiking(o, name=f"lif{i}"), x)
    return x

x = jax.random.uniform(jax.random.key(1), (16 * T, 16, 16, 3))   # fires the first layer
params = Stack().init(jax.random.key(0), x)["params"]
rep = NamedSharding(mesh, P())
sds = lambda t: jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=rep), t)
text = jax.jit(lambda p, x: Stack().apply({"params": p}, x)).trace(sds(params), sds(x)).lower(
    lowering_platforms=(platform,)).compile().as_text()
traffic = compile_report.hlo_traffic(text)
print(json.dumps(dict(kinds=traffic["kernels_by_kind"], conditional=traffic["conditional_bytes"],
                      kernel_bytes=traffic["bytes_by_kind"]["kernel"],
                      copies=text.count(" copy("))))
'''


@pytest.mark.skipif(not HAS_GPU_AOT, reason="needs the gpu-aot extra (pip install -e "
                    "'.[gpu-aot]' in its own venv): compiles for a CUDA target without a GPU")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_h200_evaluation_convolves_inside_the_kernels(dtype):
  """Two fired E-I convolutions evaluated (forward only) and compiled for an H200, Triton
  included: the first (on the 3-channel image) is a cuDNN convolution and ``ei_lif``'s forward
  kernel, the second convolves inside ``ei_conv_lif``'s kernel (issue 21), once and, in a
  conditional branch the report counts as if it ran, again: one convolution and three kernels,
  the branch moves at most half the kernels' bytes, and the other branch, which keeps the
  first run's spikes, copies nothing (XLA copies a passthrough branch unless it is the first)."""
  proc = subprocess.run([sys.executable, "-c", _EI_CONV_H200, dtype], cwd=REPO,
                        capture_output=True, text=True, timeout=900,
                        env={**os.environ, **compile_report.gpu_environment(),
                             "PYTHONPATH": str(REPO)})
  assert proc.returncode == 0, proc.stderr[-3000:]
  r = json.loads(proc.stdout.splitlines()[-1])
  assert r["kinds"]["convolution"] == 1 and r["kinds"]["kernel"] == 3, r
  assert 0 < r["conditional"] < r["kernel_bytes"] / 2, r
  assert r["copies"] == 0, r   # the branch that keeps the spikes copies nothing (it did, 0.2 GB)
