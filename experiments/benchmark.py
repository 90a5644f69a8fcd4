r"""Training/evaluation throughput, compile time and peak memory of a model and its ANN ceiling.

  python -m experiments.benchmark --config=configs/ei_cifar10_vgg16.py --batch=8 --T=4 --steps=5
  python -m experiments.benchmark --model=resnet18 --variant=ei --batch=128 --dtype=bfloat16
  python -m experiments.benchmark --model=vgg16 --variant=ei --replicas=4     # 4 seeds vmapped
  python -m experiments.benchmark --table experiments/results/benchmark_cpu.jsonl
  python -m experiments.benchmark --target=h200 --model=vgg16 --batch=128 --T=4  # compile only

What is measured (each part in a fresh subprocess, so peak memory and compile time are its own):
  snn  the real jitted train step of ``ei_snn_jax.training.train`` as the loop runs it (its row of
       the epoch's index table sliced on device, gather + augmentation on device,
       forward/backward, SGD, Dale's projection, on-device metric sums, donated state) and the
       real eval step, on synthetic CIFAR-shaped data (no dataset download, no TFDS import).
  ann  the "ceiling": the same conv stack (VGG or SEW-ResNet layout, same widths, same dtype) as
       a ReLU ANN on the merged T*B batch (the image tiled T times, as the SNN's plain path),
       with no E-I circuit, no normalisation and no LIF, through the same step functions.
Steady-state img/s = images per step x steps / wall time of ``--steps`` steps after ``--warmup``
steps, with ``block_until_ready`` only at the end; of ``--repeats`` such windows the best is
``train_img_s`` (the least disturbed by other load) and the median ``train_img_s_median``. ``train_img_s_loop`` adds the
training loop's one host read per step (its NaN guard, one step behind). ``*_cpu_ms_per_step`` is
the process's CPU time per step (all threads): on a shared CPU machine it is steadier than wall
time, which other processes' load inflates (``load_avg`` is recorded). Compile time is
``lower`` + ``compile`` of the step (the persistent compilation cache is switched off). Memory:
``device_peak_bytes`` from ``device.memory_stats()`` (None on CPU, which has no such counter);
``host_rss_peak_bytes`` is the part's whole-process peak RSS (on CPU this is where the arrays
live, but it also holds the JAX runtime, the compiler and the dataset).

Each run appends one JSON line (device kind, versions, batch, T, dtype, replicas, results, the
ratio SNN/ANN, the exact command) to ``--out`` (default ``runs/benchmarks/benchmark_<device>.jsonl``,
outside version control; pass ``--out=experiments/results/`` to add a row to the published
tables).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Any, Sequence

from absl import flags

from experiments import cli

REPO = pathlib.Path(__file__).resolve().parents[1]
# The default --out, git-ignored; the published rows live in experiments/results/.
LOCAL_RESULTS = REPO / "runs" / "benchmarks"
PARTS = ("snn", "ann")


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------

def define_flags(fv: flags.FlagValues, argv: list[str]) -> None:
  """What to measure (--config or --model with --variant; or --table FILES) and how."""
  del argv
  f = dict(flag_values=fv)
  flags.DEFINE_string("config", None, "config file[:arg], e.g. configs/ei_cifar10_vgg16.py", **f)
  flags.DEFINE_enum("model", None, ["vgg8", "vgg11", "vgg16", "vgg19", "resnet18"],
                    "architecture; the CIFAR-10 config configs/<variant>_cifar10_<model>.py is "
                    "used when it exists", **f)
  flags.DEFINE_bool("table", False, "print a Markdown table of the JSONL files given as "
                    "positional arguments", **f)
  flags.DEFINE_enum("variant", "ei", ["ei", "bn", "dann"], "model variant (with --model)", **f)
  flags.DEFINE_integer("batch", None, "per-step batch per replica (default: the config's)",
                       lower_bound=1, **f)
  flags.DEFINE_integer("eval_batch", None, "eval batch (default: --batch, else the config's)",
                       lower_bound=1, **f)
  flags.DEFINE_integer("T", None, "time steps (default: the config's)", lower_bound=1, **f)
  flags.DEFINE_integer("steps", 10, "timed steps", lower_bound=1, **f)
  flags.DEFINE_integer("warmup", 2, "untimed steps after compile", lower_bound=0, **f)
  flags.DEFINE_integer("repeats", 3, "timed windows of --steps steps; the best is reported",
                       lower_bound=1, **f)
  flags.DEFINE_enum("dtype", None, ["float32", "bfloat16"], "convolution dtype", **f)
  flags.DEFINE_integer("replicas", 1, "train.num_replicas (vmapped seeds)", lower_bound=1, **f)
  flags.DEFINE_integer("devices", 0, "parallel.num_devices (0 = all)", lower_bound=0, **f)
  flags.DEFINE_float("width", None, "model.width_multiplier (default: the config's)", **f)
  flags.DEFINE_multi_string("set", [], "any other config override KEY=VALUE, e.g. "
                            "--set=model.scan_unroll=1", **f)
  flags.DEFINE_bool("eval_only", False, "measure evaluation only", **f)
  flags.DEFINE_bool("cost_only", False, "compile only: record XLA's cost and memory analysis "
                    "of the steps, no timing (minutes on CPU even at batch 128; programs may "
                    "come from the persistent compile cache, whose folder the record names)", **f)
  flags.DEFINE_bool("ann", True, "also measure the ANN ceiling (--noann: skip it)", **f)
  flags.DEFINE_bool("small_map_matmul", True, "on CPU, 3x3 convolutions on maps of <= 16 "
                    "positions as patches @ kernel (the library's default, "
                    "circuit.SMALL_MAP_POSITIONS); --nosmall_map_matmul keeps them "
                    "convolutions, as a GPU compiles them (for XLA cost numbers comparable "
                    "with a GPU's lowering)", **f)
  flags.DEFINE_bool("cpu_graph_fusion", True, "on CPU, let XLA hand whole chains of "
                    "convolutions and elementwise ops to its YNNPACK library as one call (XLA's "
                    "default); --nocpu_graph_fusion keeps one library call per convolution or "
                    "matmul (XLA_FLAGS=" + NO_CPU_GRAPH_FUSION + "), so that the cost analysis "
                    "counts every activation: with the default, the ANN ceiling's whole eval "
                    "step is one such call and its activations are not counted", **f)
  flags.DEFINE_integer("rounds", 1, "measure the parts this many times, interleaved (snn, ann, "
                       "snn, ann, ...; each a fresh process), and record every round's img/s "
                       "and the median SNN/ANN ratio: a ratio that other load on a shared "
                       "machine shifts less than one round's", lower_bound=1, **f)
  flags.DEFINE_bool("in_process", False, "run the parts in this process (memory numbers then "
                    "overlap)", **f)
  flags.DEFINE_string("out", None, "JSONL file to append to, or a directory (ending in /) for "
                      "its benchmark_<device>.jsonl (default runs/benchmarks/, git-ignored; "
                      "experiments/results/ holds the published rows)", **f)
  flags.DEFINE_string("note", None, "free text stored with the record (e.g. which change it "
                      "measures), shown in the cost table", **f)
  flags.DEFINE_string("target", None, "compile for an accelerator that is not attached and "
                      "report bytes by kernel kind, memory, collectives and an img/s estimate "
                      "(experiments/compile_report.py): one of h200, h100, a100, v5p:2x2x1, "
                      "v5e:2x2, v4:2x2x1; needs the gpu-aot or tpu-aot extra", **f)
  flags.DEFINE_enum("part", None, list(PARTS), "internal: measure one part (child process)", **f)
  flags.DEFINE_string("part_out", None, "internal: where the child writes its part", **f)


# The XLA:CPU flag behind --nocpu_graph_fusion: an empty list of YNNPACK fusion kinds, so each
# convolution and matmul is its own library call (measured on jax 0.10.2: with it the ANN
# ceiling's eval step of VGG-16 at batch 32 reports 0.75 GB accessed instead of 0.13 GB).
NO_CPU_GRAPH_FUSION = "--xla_cpu_experimental_ynn_fusion_type="


def parse_args(argv: Sequence[str]) -> tuple[flags.FlagValues, list[str]]:
  """The parsed flags and the positional arguments (the --table files); ConfigError if wrong."""
  from ei_snn_jax.training.config import ConfigError
  fv, rest = cli.parse(define_flags, ["benchmark", *argv])
  if sum(bool(x) for x in (fv.config, fv.model, fv.table)) != 1:
    raise ConfigError("give one of --config=FILE, --model=NAME (with --variant) or --table "
                      "FILES: see --help")
  if rest and not fv.table:
    raise ConfigError(f"unexpected arguments {' '.join(rest)}: see --help")
  if not fv.cpu_graph_fusion and fv.in_process and _backend_started():
    raise ConfigError("--nocpu_graph_fusion sets an XLA flag that is read when JAX starts its "
                      "backend, which this process already has: drop --in_process (each part "
                      f"then runs in a fresh process) or start Python with XLA_FLAGS="
                      f"{NO_CPU_GRAPH_FUSION}")
  return fv, rest


def _backend_started() -> bool:
  """Whether this process's JAX backend is initialised (XLA_FLAGS no longer take effect)."""
  if "jax" not in sys.modules:
    return False
  from jax._src import xla_bridge
  return xla_bridge.backends_are_initialized()


def make_config(args: flags.FlagValues):
  """The run's config with the benchmark's overrides (synthetic data, sizes, dtype, ...)."""
  from ei_snn_jax.training import config as config_lib
  if args.config:
    spec = args.config
  else:
    path = REPO / "configs" / f"{args.variant}_cifar10_{args.model}.py"
    spec = str(path) if path.exists() else None
  overrides = []
  if spec is None:            # no config file for this pair: the base recipe with arch/variant
    cfg = config_lib.base_config()
    overrides += [f"model.arch={args.model}", f"model.variant={args.variant}"]
  else:
    cfg = config_lib.load_config(spec)
  batch = args.batch or cfg.train.batch_size
  eval_batch = args.eval_batch or args.batch or cfg.train.eval_batch_size
  overrides += [
      "data.source=synthetic", "data.name=synthetic", "data.train_subset=0",
      "data.test_subset=0", "data.placement=device", f"data.synthetic_train_size={4 * batch}",
      f"data.synthetic_test_size={eval_batch}", f"train.batch_size={batch}",
      f"train.eval_batch_size={eval_batch}", f"train.num_replicas={args.replicas}",
      f"parallel.num_devices={args.devices}", "train.progress_bar=False"]
  if args.T:
    overrides.append(f"model.T={args.T}")
  if args.dtype:
    overrides.append(f"model.conv_dtype={args.dtype}")
  if args.width:
    overrides.append(f"model.width_multiplier={args.width}")
  overrides += args.set
  config_lib.apply_overrides(cfg, overrides)
  return cfg, spec


# ---------------------------------------------------------------------------------------------
# The ANN ceiling
# ---------------------------------------------------------------------------------------------

def ann_ceiling(model_cfg, num_classes: int):
  """The model's conv stack as a ReLU ANN on the merged T*B batch (see the module docstring),
  built from the models' own layouts (``models.scaled_layers``; ``models.RESNET_STAGES``,
  ``block_layout`` and ``has_downsample``)."""
  import flax.linen as nn
  import jax.numpy as jnp

  from ei_snn_jax.core import circuit
  from ei_snn_jax import layers, models
  from ei_snn_jax.models import common

  arch, width, T = model_cfg.arch, float(model_cfg.width_multiplier), int(model_cfg.T)
  conv_dtype = None if model_cfg.conv_dtype == "float32" else model_cfg.conv_dtype

  class Conv(nn.Module):
    """Bias-free conv (the SNN's convs have no bias) in the benchmark's dtype, then ReLU."""
    features: int
    kernel_size: int = 3
    strides: int = 1

    @nn.compact
    def __call__(self, x):
      k = self.param("kernel", layers.torch_default_kernel_init(),
                     (self.kernel_size, self.kernel_size, x.shape[-1], self.features))
      y = circuit.conv(x, k, (self.strides, self.strides), dtype=conv_dtype)
      return nn.relu(y.astype(jnp.float32))

  class ANNCeiling(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
      h = layers._tile_time(x.astype(jnp.float32), T)           # (T*B, H, W, C)
      if arch in models.VGG_LAYERS:
        for v in models.scaled_layers(arch, width):
          h = common.avg_pool(h) if v == "P" else Conv(v)(h)
        h = h.reshape((h.shape[0], -1))
      else:                                                     # SEW-ResNet layout
        widths = models.resnet18_widths(width)
        h = Conv(widths[0])(h)
        for _, _, w, s in models.block_layout(models.RESNET_STAGES[arch], widths):
          out = Conv(w)(Conv(w, strides=s)(h))
          identity = Conv(w, 1, s)(h) if models.has_downsample(h.shape[-1], w, s) else h
          h = out + identity
        h = jnp.mean(h, axis=(1, 2))
      logits = layers.TorchDense(num_classes, name="head")(h)
      return common.mean_over_time(logits, T)

  return ANNCeiling()


# ---------------------------------------------------------------------------------------------
# One measurement (runs in its own process)
# ---------------------------------------------------------------------------------------------

def _timed(fn):
  t = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - t


def _device_peak_bytes(devices) -> int | None:
  peaks = []
  for d in devices:
    try:
      stats = d.memory_stats()
    except Exception:  # noqa: BLE001  (backends without the counter raise or return None)
      stats = None
    if stats and "peak_bytes_in_use" in stats:
      peaks.append(int(stats["peak_bytes_in_use"]))
  return max(peaks) if peaks else None


def _time_windows(call, steps: int, repeats: int, guard: bool = False) -> dict[str, Any]:
  """Time ``repeats`` windows of ``steps`` calls of ``call()``, ``block_until_ready`` only at each
  window's end. ``guard``: read the previous call's ``finite`` flag every step, as the training
  loop's NaN guard does. Returns wall seconds per step (best window, median, all) and the
  process's CPU seconds per step in the best window."""
  import jax
  import numpy as np

  wall, cpu = [], []
  for _ in range(repeats):
    t, c, pending, result = time.perf_counter(), time.process_time(), None, None
    for _ in range(steps):
      result = call()
      if guard and pending is not None:
        bool(pending[1]["finite"])
      pending = result
    jax.block_until_ready(result)
    wall.append((time.perf_counter() - t) / max(steps, 1))
    cpu.append((time.process_time() - c) / max(steps, 1))
  best = int(np.argmin(wall)) if wall else 0
  return {"best": wall[best] if wall else None, "median": float(np.median(wall)) if wall else None,
          "all": wall, "cpu": cpu[best] if cpu else None}


def compiled_costs(kind: str, compiled) -> dict[str, Any]:
  """XLA's own account of a compiled step: ``cost_analysis()`` FLOPs and bytes accessed (the
  traffic of every fused kernel's operands and results, summed), and ``memory_analysis()`` temp,
  argument and output bytes. Read from the compiled executable, so it needs no accelerator: on CPU
  it describes the CPU compilation (whose fusion decisions differ from a GPU's), which is still the
  best local proxy for a memory-bound step. Missing entries are None."""
  out: dict[str, Any] = {f"{kind}_flops": None, f"{kind}_bytes_accessed": None,
                         f"{kind}_temp_bytes": None, f"{kind}_argument_bytes": None,
                         f"{kind}_output_bytes": None}
  try:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    out[f"{kind}_flops"] = float(cost["flops"]) if "flops" in cost else None
    out[f"{kind}_bytes_accessed"] = (float(cost["bytes accessed"]) if "bytes accessed" in cost
                                     else None)
  except Exception:  # noqa: BLE001  (a backend without cost analysis)
    pass
  try:
    mem = compiled.memory_analysis()
    out[f"{kind}_temp_bytes"] = int(mem.temp_size_in_bytes)
    out[f"{kind}_argument_bytes"] = int(mem.argument_size_in_bytes)
    out[f"{kind}_output_bytes"] = int(mem.output_size_in_bytes)
  except Exception:  # noqa: BLE001
    pass
  return out


def _rates(kind: str, t: dict[str, Any], images: int) -> dict[str, Any]:
  """img/s and ms per step of the best window (steadiest on a shared machine) and the median."""
  return {f"{kind}_img_s": images / t["best"], f"{kind}_img_s_median": images / t["median"],
          f"{kind}_step_ms": 1e3 * t["best"], f"{kind}_step_ms_windows": [1e3 * w for w in t["all"]],
          f"{kind}_cpu_ms_per_step": 1e3 * t["cpu"]}


def measure(args: flags.FlagValues, part: str) -> dict[str, Any]:
  """Compile and time the train and eval steps of ``part`` ("snn" or "ann"), with the CPU's
  small-map convolutions as --small_map_matmul says (restored afterwards)."""
  from ei_snn_jax.core import circuit

  before = circuit.SMALL_MAP_POSITIONS
  if not args.small_map_matmul:
    circuit.SMALL_MAP_POSITIONS = 0
  try:
    return _measure(args, part)
  finally:
    circuit.SMALL_MAP_POSITIONS = before


def _measure(args: flags.FlagValues, part: str) -> dict[str, Any]:
  import jax

  from ei_snn_jax import data as data_lib
  from ei_snn_jax.training import batches, replicas, steps, train

  cfg, _ = make_config(args)
  exp = train.build_experiment(cfg)
  if part == "ann":
    exp = dataclasses.replace(exp, model=ann_ceiling(cfg.model, exp.dataset.num_classes))
  R, B = exp.num_replicas, cfg.train.batch_size
  out: dict[str, Any] = {}
  state, out["init_s"] = _timed(lambda: jax.block_until_ready(train.init_state(exp)))
  state = replicas.to_run_layout(state, R)      # the loop's layout: the replica axis first
  out["params"] = sum(x.size for x in jax.tree.leaves(state.params)) // R

  if not args.eval_only:
    # The loop's step and batch source: the epoch's index table uploaded once, the row sliced
    # on the device.
    source = batches.DeviceBatches(exp)
    step = steps.make_train_step(exp, source)
    batch = source(0)
    held = {"state": state}

    def train_call():
      held["state"], metrics = compiled(held["state"], batch)
      return held["state"], metrics

    lowered, out["train_lower_s"] = _timed(lambda: step.lower(state, batch))
    compiled, out["train_compile_s"] = _timed(lowered.compile)
    out.update(compiled_costs("train", compiled))
  if not args.eval_only and not args.cost_only:
    _time_windows(train_call, args.warmup, 1)
    t = _time_windows(train_call, args.steps, args.repeats)
    out.update(_rates("train", t, R * B))
    # As the training loop runs: it reads the previous step's NaN-guard flag every step.
    out["train_img_s_loop"] = R * B / _time_windows(train_call, args.steps, 1, guard=True)["best"]
    metrics = train_call()[1]
    state = held["state"]          # the trained state (the step donated the earlier ones)
    out["finite"] = bool(metrics["finite"])

  eval_step = steps.make_eval_step(exp, batches.eval_source(exp))
  # Every call evaluates the same test batch (the synthetic test set is one batch).
  idx, mask = next(data_lib.eval_batches(len(exp.dataset.x_test), cfg.train.eval_batch_size))
  eval_args = (state.params, state.batch_stats,
               (exp.test_x, exp.test_y, *(train.host_to_global(a, exp.test_batch_sharded)
                                         for a in (idx, mask))))
  lowered, out["eval_lower_s"] = _timed(lambda: eval_step.lower(*eval_args))
  compiled_eval, out["eval_compile_s"] = _timed(lowered.compile)
  out.update(compiled_costs("eval", compiled_eval))
  if args.cost_only:
    return _finish(out, exp, cfg)
  _time_windows(lambda: compiled_eval(*eval_args), args.warmup, 1)
  t = _time_windows(lambda: compiled_eval(*eval_args), args.steps, args.repeats)
  out.update(_rates("eval", t, R * cfg.train.eval_batch_size))
  return _finish(out, exp, cfg)


def _finish(out: dict[str, Any], exp, cfg) -> dict[str, Any]:
  """Add memory counters and the environment to a part's measurements."""
  import jax
  R = exp.num_replicas
  devices = exp.mesh.devices.ravel().tolist()
  out["device_peak_bytes"] = _device_peak_bytes(devices)
  out["host_rss_peak_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  out["load_avg_1min"] = os.getloadavg()[0]
  out["tfds_imported"] = any(m in sys.modules for m in ("tensorflow_datasets", "tensorflow"))
  out["env"] = {
      "platform": devices[0].platform, "device_kind": devices[0].device_kind,
      "num_devices": len(devices), "jax": jax.__version__,
      "jaxlib": getattr(jax.lib, "__version__", None) or _version("jaxlib"),
      "flax": _version("flax"), "num_classes": exp.dataset.num_classes,
      "batch": cfg.train.batch_size, "eval_batch": cfg.train.eval_batch_size, "T": cfg.model.T,
      "dtype": cfg.model.conv_dtype, "replicas": R, "arch": cfg.model.arch,
      "variant": cfg.model.variant, "width_multiplier": cfg.model.width_multiplier,
      "static_input_once": cfg.model.static_input_once, "scan_unroll": cfg.model.scan_unroll,
      "cpu_count": os.cpu_count(), "load_avg": list(os.getloadavg()),
      "compile_cache": _compile_cache_dir(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "small_map_positions": _small_map_positions()}
  return out


def _small_map_positions() -> int:
  """Maps up to this many positions were convolved as patches @ kernel (0: none; CPU only)."""
  import jax
  from ei_snn_jax.core import circuit
  return circuit.SMALL_MAP_POSITIONS if jax.default_backend() == "cpu" else 0


def _compile_cache_dir() -> str | None:
  """The persistent compilation cache in use (compile times may then be cache hits), or None."""
  import jax
  enabled = getattr(jax.config, "jax_enable_compilation_cache", True)
  return (getattr(jax.config, "jax_compilation_cache_dir", None) or None) if enabled else None


def _version(package: str) -> str | None:
  try:
    from importlib import metadata
    return metadata.version(package)
  except Exception:  # noqa: BLE001
    return None


def _run_part(args: flags.FlagValues, argv: Sequence[str], part: str) -> dict[str, Any]:
  """``measure`` in a fresh Python process (its own peak memory and compile caches)."""
  if args.in_process:
    return measure(args, part)
  with tempfile.TemporaryDirectory() as tmp:
    result = pathlib.Path(tmp) / "part.json"
    cmd = [sys.executable, "-m", "experiments.benchmark", *argv, f"--part={part}",
           f"--part_out={result}"]
    proc = subprocess.run(cmd, cwd=REPO)
    if proc.returncode != 0:
      raise SystemExit(f"benchmark part {part!r} failed (exit {proc.returncode}): "
                       f"{shlex.join(cmd)}")
    return json.loads(result.read_text())


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------

def _slug(text: str) -> str:
  return "".join(ch if ch.isalnum() else "_" for ch in text.lower()).strip("_") or "device"


def make_record(args, argv, parts: dict[str, dict]) -> dict[str, Any]:
  snn = parts["snn"]
  env = snn.pop("env")
  parts.get("ann", {}).pop("env", None)
  _, spec = make_config(args)
  record = {
      "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "name": f"{env['variant']}-{env['arch']}",
      "config": os.path.relpath(spec, REPO) if spec else None,
      **env, "python": platform.python_version(), "steps": args.steps, "warmup": args.warmup,
      "repeats": args.repeats,
      "eval_only": args.eval_only, "cost_only": args.cost_only, "note": args.note,
      **{k: v for k, v in parts.items()},
      "memory_note": ("device_peak_bytes from device.memory_stats()" if snn["device_peak_bytes"]
                      is not None else "no device memory counter on this backend: "
                      "host_rss_peak_bytes is the whole process's peak RSS (runtime, compiler, "
                      "data and arrays), not device memory"),
      "command": "python -m experiments.benchmark " + shlex.join(argv),
  }
  if "ann" in parts:
    for key in ("train_flops", "train_bytes_accessed", "eval_flops", "eval_bytes_accessed"):
      if snn.get(key) and parts["ann"].get(key):
        record[f"{key}_ratio_snn_to_ann"] = snn[key] / parts["ann"][key]
    for key in ("train_img_s", "eval_img_s"):
      if key in snn and key in parts["ann"]:
        record[f"{key.split('_')[0]}_ratio_snn_to_ann"] = snn[key] / parts["ann"][key]
  return record


ROUND_KEYS = ("train_img_s", "eval_img_s", "train_cpu_ms_per_step", "load_avg_1min")


def rounds_summary(rounds: Sequence[dict[str, dict]]) -> dict[str, Any]:
  """``rounds`` (each {part: {ROUND_KEYS...}}) as record fields: the rounds themselves, each
  round's SNN/ANN ratio (the two parts measured back to back) and the median of those ratios."""
  import statistics
  out: dict[str, Any] = {"rounds": list(rounds), "rounds_median": {
      part: {key: statistics.median(r[part][key] for r in rounds)
             for key in ROUND_KEYS if all(r[part].get(key) is not None for r in rounds)}
      for part in rounds[0]}}
  for kind in ("train", "eval"):
    ratios = [r["snn"][f"{kind}_img_s"] / r["ann"][f"{kind}_img_s"] for r in rounds
              if r.get("ann") and r["snn"].get(f"{kind}_img_s") and r["ann"].get(f"{kind}_img_s")]
    if ratios:
      out[f"{kind}_ratio_snn_to_ann_rounds"] = ratios
      out[f"{kind}_ratio_snn_to_ann_median"] = statistics.median(ratios)
  return out


def _gb(value) -> str:
  return "–" if value is None else f"{value / 2**30:.2f}"


def _num(value, fmt="{:,.0f}") -> str:
  return "–" if value is None else fmt.format(value)


def markdown_table(records: Sequence[dict]) -> str:
  """One row per record: SNN and ANN-ceiling throughput (the median over rounds when the record
  has several), compile time, memory."""
  head = ("| model | device | batch×T | dtype | replicas | train img/s | eval img/s | "
          "train compile s | peak mem GiB (kind) | ANN train img/s | ANN eval img/s | "
          "SNN/ANN train | SNN/ANN eval |")
  lines = [head, "|" + "---|" * (head.count("|") - 1)]
  for r in records:
    medians = r.get("rounds_median", {})
    snn = {**r.get("snn", {}), **medians.get("snn", {})}
    ann = {**r.get("ann", {}), **medians.get("ann", {})}
    mem = (f"{_gb(snn.get('device_peak_bytes'))} (device)" if snn.get("device_peak_bytes")
           is not None else f"{_gb(snn.get('host_rss_peak_bytes'))} (host RSS)")
    lines.append(
        f"| {r['name']} | {r['device_kind']} ×{r['num_devices']} | {r['batch']}×{r['T']} | "
        f"{r['dtype']} | {r['replicas']} | {_num(snn.get('train_img_s'), '{:,.1f}')} | "
        f"{_num(snn.get('eval_img_s'), '{:,.1f}')} | {_num(snn.get('train_compile_s'), '{:.1f}')}"
        f" | {mem} | {_num(ann.get('train_img_s'), '{:,.1f}')} | "
        f"{_num(ann.get('eval_img_s'), '{:,.1f}')} | "
        f"{_ratio(r, 'train')} | {_ratio(r, 'eval')} |")
  return "\n".join(lines)


def _ratio(record: dict, kind: str) -> str:
  """The SNN/ANN img/s ratio: the median of the per-round ratios when there were several
  interleaved rounds, else the one round's."""
  median = record.get(f"{kind}_ratio_snn_to_ann_median")
  if median is not None:
    return f"{median:.2f} (median of {len(record[f'{kind}_ratio_snn_to_ann_rounds'])})"
  return _num(record.get(f"{kind}_ratio_snn_to_ann"), "{:.2f}")


def cost_table(records: Sequence[dict]) -> str:
  """One row per record with XLA cost numbers: GB accessed and GFLOP per train and eval step of
  the SNN and its ANN ceiling, their ratios, and the SNN train step's temp memory."""
  head = ("| model | device | batch×T | dtype | train GB/step (SNN / ANN) | ratio | "
          "train GFLOP (SNN / ANN) | ratio | eval GB/step (SNN / ANN) | ratio | "
          "SNN train temp GB | note |")
  lines = [head, "|" + "---|" * (head.count("|") - 1)]
  for r in records:
    snn, ann = r.get("snn", {}), r.get("ann", {})
    if snn.get("train_bytes_accessed") is None and snn.get("eval_bytes_accessed") is None:
      continue
    g = lambda v: _num(None if v is None else v / 1e9, "{:.1f}")
    lines.append(
        f"| {r['name']} | {r['device_kind']} | {r['batch']}×{r['T']} | {r['dtype']} | "
        f"{g(snn.get('train_bytes_accessed'))} / {g(ann.get('train_bytes_accessed'))} | "
        f"{_num(r.get('train_bytes_accessed_ratio_snn_to_ann'), '{:.2f}')} | "
        f"{g(snn.get('train_flops'))} / {g(ann.get('train_flops'))} | "
        f"{_num(r.get('train_flops_ratio_snn_to_ann'), '{:.2f}')} | "
        f"{g(snn.get('eval_bytes_accessed'))} / {g(ann.get('eval_bytes_accessed'))} | "
        f"{_num(r.get('eval_bytes_accessed_ratio_snn_to_ann'), '{:.2f}')} | "
        f"{g(snn.get('train_temp_bytes'))} | {r.get('note') or ''} |")
  return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  """Entry point (``argv`` without the program name); returns the exit status."""
  from ei_snn_jax import errors
  argv = list(sys.argv[1:] if argv is None else argv)
  from experiments import compile_report
  compile_report.prepare_environment(argv)      # before JAX starts (--target only)
  if any(a in ("--help", "-h") for a in argv):
    cli.print_help(define_flags, ["benchmark"], __doc__)
    return 0
  with errors.clean_errors():
    args, files = parse_args(argv)
  if errors.exit_status():
    return errors.exit_status()
  if args.table:
    records = [json.loads(l) for path in files
               for l in pathlib.Path(path).read_text().splitlines() if l.strip()]
    timed = [r for r in records if r.get("snn", {}).get("train_img_s") or
             r.get("snn", {}).get("eval_img_s")]
    if timed:
      print(markdown_table(timed))
    if any(r.get("snn", {}).get("train_bytes_accessed") for r in records):
      print()
      print(cost_table(records))
    return 0
  if args.target:
    return compile_report.main(args, argv)
  if not args.cpu_graph_fusion and NO_CPU_GRAPH_FUSION not in os.environ.get("XLA_FLAGS", ""):
    # Read when the backend starts (in this process or the parts it spawns, which inherit it).
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {NO_CPU_GRAPH_FUSION}".strip()
  if args.part:                                   # a child process: one measurement
    import jax
    if not args.cost_only:      # compile times are real; --cost_only may reuse cached programs
      jax.config.update("jax_enable_compilation_cache", False)
    pathlib.Path(args.part_out).write_text(json.dumps(measure(args, args.part)))
    return 0
  parts, rounds = {}, []
  for i in range(args.rounds):
    rates = {}
    for part in PARTS if args.ann else PARTS[:1]:
      print(f"[benchmark] measuring {part} (round {i + 1}/{args.rounds}) ...", file=sys.stderr,
            flush=True)
      measured = _run_part(args, argv, part)
      parts.setdefault(part, measured)              # the full record of the first round
      rates[part] = {k: measured.get(k) for k in ROUND_KEYS}
    rounds.append(rates)
  record = make_record(args, argv, parts)
  if args.rounds > 1:
    record.update(rounds_summary(rounds))
  out = pathlib.Path(args.out or LOCAL_RESULTS)
  if args.out is None or args.out.endswith("/") or out.is_dir():
    out = out / f"benchmark_{_slug(record['device_kind'])}.jsonl"
  out.parent.mkdir(parents=True, exist_ok=True)
  with open(out, "a") as f:
    f.write(json.dumps(record) + "\n")
  print(json.dumps(record, indent=1))
  if not args.cost_only:
    print(markdown_table([record]))
  if record["snn"].get("train_bytes_accessed") or record["snn"].get("eval_bytes_accessed"):
    print(cost_table([record]))
  print(f"[benchmark] appended to {out}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
