r"""Compile report for an accelerator that is not attached: the real train and eval steps (and the
ANN ceiling) compiled for a GPU or TPU target on this CPU machine, and what the compiled HLO says.

  python -m experiments.benchmark --target=h200 --model=vgg16 --batch=128 --T=4
  python -m experiments.benchmark --target=v5p:2x2x1 --model=resnet18 --batch=128 --T=4

``--target`` is one of ``TARGETS``. GPU targets need ``pip install -e .[gpu-aot]`` (jax[cuda12];
no GPU needed), TPU slices ``.[tpu-aot]`` (jax[tpu]); install each in its own venv. Nothing runs:
``jax.experimental.topologies`` gives compile-only devices, the experiment is built on the CPU
(E-I Init reads data), its mesh is swapped for the target's, and each step is
``trace(...).lower(lowering_platforms=(platform,)).compile()``d. For several chips (a TPU slice,
``h200x8``) ``--batch`` is per chip (the global batch is batch x chips, sharded over the "data"
axis), except with ``--replicas`` a multiple of the chips: each chip then trains whole replicas
of ``--batch`` each (``Experiment.replicas_over_devices``).

Read from each compiled step:
  bytes by kernel kind  every kernel of the optimised HLO's entry computation (and of while
           bodies, times their trip count, and of each conditional's heaviest branch: the most
           one step can move; ``conditional_bytes`` says how much of the total that branch
           is, e.g. ``core.ei_conv_lif``'s rare second run): operand + result bytes, grouped
           as fusion,
           convolution (cuDNN calls, fusions holding a convolution), matmul (cuBLAS calls,
           fusions holding a dot), kernel (hand-written Pallas kernels: Triton or Mosaic custom
           calls, e.g. ``core.ei_lif``), copy (copy/transpose), collective, other. This approximates
           the step's HBM traffic (in-place updates are counted in full).
  flops, bytes_accessed  XLA's cost_analysis() where the target gives one (TPU; None on GPU).
  temp / argument / output bytes  compiled.memory_analysis().
  collectives  each all-reduce, all-gather, all-to-all, collective-permute, reduce-scatter:
           count, bytes, and the JAX ops they come from (HLO metadata op_name).
  estimate  **an estimate, not a measurement**: img/s if the step were bound by memory traffic
           like its ANN ceiling, = measured ANN ceiling img/s x ANN bytes / SNN bytes (both
           compiled here for the same target). Calibration: the plain-JAX ANN ceiling measured on
           a real H200 at batch 128, T 4 (``CALIBRATION``); other GPUs scale it by HBM bandwidth;
           without a calibration point, batch / (bytes / HBM bandwidth), an upper bound.

One JSON line per run is appended to ``--out`` (default
``experiments/results/compile_<target>.jsonl``).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import re
import shlex
import sys
import time
from typing import Any, Sequence

REPO = pathlib.Path(__file__).resolve().parents[1]
TARGET_DIR = pathlib.Path(__file__).resolve().parent / "targets"

# name -> (platform, topology or target file, chips, HBM bytes/s per chip)
TARGETS = {
    "h200": ("cuda", "h200.txtpb", 1, 4.8e12),
    "h100": ("cuda", "h100.txtpb", 1, 3.35e12),
    "a100": ("cuda", "a100.txtpb", 1, 2.039e12),
    "h200x8": ("cuda", "h200.txtpb", 8, 4.8e12),   # one node of 8 (HGX); NVLink not modelled
    "v5p:2x2x1": ("tpu", "v5p:2x2x1", 4, 2.765e12),
    "v5e:2x2": ("tpu", "v5e:2x2", 4, 0.819e12),
    "v4:2x2x1": ("tpu", "v4:2x2x1", 4, 1.228e12),
}

# The plain-JAX ANN ceiling's train img/s measured on a real H200 (batch 128, T 4), by
# (arch, conv dtype): the calibration point of the estimate.
CALIBRATION = {("vgg16", "float32"): 25.7e3, ("vgg16", "bfloat16"): 53.3e3,
               ("resnet18", "float32"): 12.5e3, ("resnet18", "bfloat16"): 27.8e3}
CALIBRATION_DEVICE, CALIBRATION_BANDWIDTH = "h200", 4.8e12

KINDS = ("fusion", "convolution", "matmul", "kernel", "copy", "collective", "other")
COLLECTIVES = ("all-reduce", "all-gather", "all-to-all", "collective-permute", "reduce-scatter")
# Ops that move no data of their own.
FREE = {"parameter", "constant", "get-tuple-element", "tuple", "bitcast", "after-all",
        "partition-id", "replica-id", "opt-barrier", "add-dependency", "domain"}
_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4,
                "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16,
                "f8e4m3fn": 1, "f8e5m2": 1, "s4": 1, "u4": 1, "token": 0}


def gpu_environment() -> dict[str, str]:
  """What a CUDA compile without a GPU needs before JAX starts (docs: notes in the module)."""
  return {"JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": "-1",
          "JAX_SKIP_CUDA_CONSTRAINTS_CHECK": "1"}


def prepare_environment(argv: Sequence[str]) -> None:
  """Set the environment for ``--target`` before JAX starts its backends (no-op without it)."""
  if not any(a.startswith("--target") for a in argv):
    return
  os.environ["JAX_PLATFORMS"] = "cpu"     # the host backend stays the CPU
  target = next((a.split("=", 1)[1] for a in argv if a.startswith("--target=")), None)
  if target is None and "--target" in argv and argv.index("--target") + 1 < len(argv):
    target = argv[argv.index("--target") + 1]
  if target in TARGETS and TARGETS[target][0] == "cuda":
    os.environ.update(gpu_environment())


# ---------------------------------------------------------------------------------------------
# Reading the optimised HLO
# ---------------------------------------------------------------------------------------------

_SHAPE = re.compile(r"\b([a-z]+[0-9]*[a-z0-9]*)\[([0-9,]*)\]")
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.+?)\s+([a-z][\w\-]*)\((.*)$")


def shape_bytes(text: str) -> int:
  """Bytes of every array shape in ``text`` (an HLO type, possibly a tuple)."""
  total = 0
  for dtype, dims in _SHAPE.findall(text):
    if dtype not in _DTYPE_BYTES:
      continue
    n = 1
    for d in filter(None, dims.split(",")):
      n *= int(d)
    total += n * _DTYPE_BYTES[dtype]
  return total


def parse_hlo(text: str) -> tuple[dict[str, list[dict]], str | None]:
  """Computations of an HLO module's text: name -> instructions (name, type, opcode, operands,
  attrs, line); and the entry computation's name."""
  comps: dict[str, list[dict]] = {}
  entry, current = None, None
  for line in text.splitlines():
    stripped = line.strip()
    if stripped.endswith("{") and "=" not in stripped.split("(")[0]:
      head = stripped.split()[0]
      is_entry = head == "ENTRY"
      name = (stripped.split()[1] if is_entry else head).lstrip("%")
      current = comps.setdefault(name, [])
      if is_entry:
        entry = name
      continue
    if stripped == "}":
      current = None
      continue
    if current is None:
      continue
    m = _INSTR.match(line)
    if not m:
      continue
    name, rtype, opcode, rest = m.groups()
    depth, i = 1, 0
    while i < len(rest) and depth:
      depth += {"(": 1, ")": -1}.get(rest[i], 0)
      i += 1
    operands = re.findall(r"%([\w.\-]+)", rest[:i - 1])
    current.append({"name": name, "type": rtype, "opcode": opcode, "operands": operands,
                    "attrs": rest[i:], "line": stripped})
  return comps, entry


def _called(attrs: str, key: str) -> list[str]:
  m = re.search(key + r"=\{?%?([\w.\-]+(?:,\s*%?[\w.\-]+)*)\}?", attrs)
  return [c.strip().lstrip("%") for c in m.group(1).split(",")] if m else []


def _holds(comps, name: str, opcodes: Sequence[str], seen=None) -> bool:
  """Whether computation ``name`` (or one it calls) holds one of ``opcodes``."""
  seen = set() if seen is None else seen
  if name in seen or name not in comps:
    return False
  seen.add(name)
  for ins in comps[name]:
    if ins["opcode"] in opcodes:
      return True
    for callee in _called(ins["attrs"], "calls"):
      if _holds(comps, callee, opcodes, seen):
        return True
  return False


def kernel_kind(comps, ins: dict) -> str:
  op, attrs = ins["opcode"], ins["attrs"]
  base = op[:-6] if op.endswith("-start") else op
  if base in COLLECTIVES:
    return "collective"
  if op == "custom-call":
    target = (re.search(r'custom_call_target="([^"]+)"', attrs) or [None, ""])[1].lower()
    if "conv" in target:
      return "convolution"
    if "gemm" in target or "matmul" in target or "cublas" in target:
      return "matmul"
    if "triton" in target or "mosaic" in target:   # Pallas kernels (GPU: Triton, Mosaic GPU;
      return "kernel"                              # TPU: Mosaic)
    return "other"
  if op == "convolution":
    return "convolution"
  if op == "dot":
    return "matmul"
  if op in ("copy", "copy-start", "transpose"):
    return "copy"
  if op == "fusion":
    callees = _called(attrs, "calls")
    if any(_holds(comps, c, ("convolution",)) for c in callees):
      return "convolution"
    if "__triton_gemm" in attrs or any(_holds(comps, c, ("dot",)) for c in callees):
      return "matmul"
    return "fusion"
  return "other"


def _trip_count(ins: dict) -> int | None:
  m = re.search(r'"known_trip_count":\{"n":"(\d+)"', ins["attrs"])
  return int(m.group(1)) if m else None


def hlo_traffic(text: str) -> dict[str, Any]:
  """Bytes per step by kernel kind, kernel counts, and the collectives of an optimised HLO module
  (see the module docstring for what is counted)."""
  return _traffic(*parse_hlo(text))


def _traffic(comps: dict, root: str | None) -> dict[str, Any]:
  """``hlo_traffic`` of computation ``root`` (and what it calls) of a parsed module."""
  by_kind = {k: 0 for k in KINDS}
  counts = {k: 0 for k in KINDS}
  collectives: dict[str, dict[str, Any]] = {}
  unknown_trips = []
  in_branches = [0]


  def visit(name: str, times: int) -> None:
    defs = {ins["name"]: ins["type"] for ins in comps.get(name, [])}
    for ins in comps.get(name, []):
      op = ins["opcode"]
      if op in FREE or op.endswith("-done") or op.endswith("-update"):
        continue
      if op == "while":
        n = _trip_count(ins)
        if n is None:
          unknown_trips.append(ins["name"])
        for body in _called(ins["attrs"], "body"):
          visit(body, times * (n or 1))
        continue
      if op == "conditional":   # the heaviest branch: the most this step can move
        branches = (_called(ins["attrs"], "true_computation")
                    + _called(ins["attrs"], "false_computation")
                    + _called(ins["attrs"], "branch_computations"))
        if branches:
          moved = {b: _traffic(comps, b)["bytes_total"] for b in branches}
          heaviest = max(branches, key=moved.get)
          in_branches[0] += moved[heaviest] * times
          visit(heaviest, times)
        continue
      if op in ("call", "async-start"):
        for callee in _called(ins["attrs"], "to_apply") + _called(ins["attrs"], "calls"):
          visit(callee, times)
        continue
      nbytes = shape_bytes(ins["type"]) + sum(shape_bytes(defs.get(o, "")) for o in
                                              ins["operands"])
      kind = kernel_kind(comps, ins)
      by_kind[kind] += nbytes * times
      counts[kind] += times
      if kind == "collective":
        base = op[:-6] if op.endswith("-start") else op
        entry_c = collectives.setdefault(base, {"count": 0, "bytes": 0, "ops": {}})
        moved = max(shape_bytes(ins["type"]),
                    sum(shape_bytes(defs.get(o, "")) for o in ins["operands"]))
        entry_c["count"] += times
        entry_c["bytes"] += moved * times
        src = re.search(r'op_name="([^"]+)"', ins["attrs"])
        key = src.group(1) if src else "?"
        entry_c["ops"][key] = entry_c["ops"].get(key, 0) + moved * times

  if root:
    visit(root, 1)
  for c in collectives.values():       # the heaviest sources first, at most 12
    c["ops"] = dict(sorted(c["ops"].items(), key=lambda kv: -kv[1])[:12])
  return {"bytes_by_kind": by_kind, "kernels_by_kind": counts,
          "bytes_total": sum(by_kind.values()), "conditional_bytes": in_branches[0],
          "collectives": collectives, "while_loops_without_trip_count": unknown_trips}


# ---------------------------------------------------------------------------------------------
# Compiling for a target
# ---------------------------------------------------------------------------------------------

def target_mesh(target: str):
  """The compile-only mesh of ``target`` (1-D, axis "data") and its platform."""
  import jax
  from jax.experimental import topologies
  if target not in TARGETS:
    raise ValueError(f"unknown --target {target!r}: one of {', '.join(TARGETS)}")
  platform, spec, chips, _ = TARGETS[target]
  if platform == "cuda":
    if jax.default_backend() != "cpu":
      raise RuntimeError("compile for a GPU target with the CPU as JAX's backend "
                         "(JAX_PLATFORMS=cpu, set by experiments.benchmark --target)")
    try:
      topo = topologies.get_topology_desc(
          platform="cuda", topology=f"1x1x{chips}",   # slices x hosts x devices per host
          target_config=(TARGET_DIR / spec).read_text())
    except Exception as e:  # noqa: BLE001
      raise RuntimeError(f"cannot make a CUDA compile-only device ({e}); install the GPU "
                         "extra in its own venv: pip install -e '.[gpu-aot]'") from e
  else:
    try:
      topo = topologies.get_topology_desc(spec, "tpu")
    except Exception as e:  # noqa: BLE001
      raise RuntimeError(f"cannot make the TPU topology {spec} ({e}); install the TPU extra "
                         "in its own venv: pip install -e '.[tpu-aot]'") from e
  devices = topo.devices[:chips]
  return topologies.make_mesh(topologies.TopologyDescription(devices), (len(devices),),
                              ("data",)), platform


def _sds(tree, sharding):
  """ShapeDtypeStructs of ``tree`` laid out as ``sharding`` (one, or a prefix tree of them)."""
  from ei_snn_jax.training import checkpointing
  return checkpointing.abstract_like(tree, sharding)


def compile_steps(exp, state, mesh, platform: str,
                  steps: Sequence[str] = ("train", "eval")) -> dict[str, Any]:
  """Compile the train step (from the epoch table, as the loop runs it) and the eval step of
  ``exp`` for ``mesh`` (those of them in ``steps``); what each compiled step says (see
  ``step_report``). ``state`` may be abstract (shapes and dtypes only)."""
  import jax
  from jax.sharding import NamedSharding, PartitionSpec as P

  from ei_snn_jax import data as data_lib
  from ei_snn_jax.training import batches, replicas, steps as steps_lib

  cfg = exp.config
  target_exp = dataclasses.replace(exp, mesh=mesh)
  rep = NamedSharding(mesh, P())
  # The loop's layout (shapes only, so an abstract state works too).
  state = jax.eval_shape(lambda s: replicas.to_run_layout(s, exp.num_replicas), state)
  table = batches.epoch_table(exp, 0)
  source = batches.DeviceBatches(target_exp)
  out: dict[str, Any] = {}
  if "train" in steps:
    step = steps_lib.make_train_step(target_exp, source)
    batch = (_sds(exp.train_x, rep), _sds(exp.train_y, rep),
             *(_sds(a, source.table_sharded) for a in table))
    out["train"] = step_report(step, (_sds(state, steps_lib.state_sharding(target_exp)), batch),
                               platform)
  if "eval" not in steps:
    return out
  eval_step = steps_lib.make_eval_step(target_exp, batches.eval_source(target_exp))
  idx, mask = next(data_lib.eval_batches(len(exp.dataset.x_test), cfg.train.eval_batch_size))
  dat, per_replica = target_exp.test_batch_sharded, target_exp.replica_sharded
  eargs = (_sds(state.params, per_replica), _sds(state.batch_stats, per_replica),
           (_sds(exp.test_x, rep), _sds(exp.test_y, rep), _sds(idx, dat), _sds(mask, dat)))
  out["eval"] = step_report(eval_step, eargs, platform)
  return out


def step_report(fn, args, platform: str) -> dict[str, Any]:
  """Lower and compile ``fn`` on ``args`` for ``platform``; bytes by kind, memory, cost."""
  t = time.perf_counter()
  lowered = fn.trace(*args).lower(lowering_platforms=(platform,))
  compiled = lowered.compile()
  report: dict[str, Any] = {"compile_s": time.perf_counter() - t}
  report.update(hlo_traffic(compiled.as_text()))
  mem = compiled.memory_analysis()
  for key in ("temp", "argument", "output"):
    report[f"{key}_bytes"] = getattr(mem, f"{key}_size_in_bytes", None) if mem else None
  cost = None
  try:
    cost = compiled.cost_analysis()
  except Exception:  # noqa: BLE001  (GPU compile-only targets give none)
    pass
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  report["flops"] = float(cost["flops"]) if cost and "flops" in cost else None
  report["xla_bytes_accessed"] = (float(cost["bytes accessed"]) if cost and "bytes accessed"
                                  in cost else None)
  report["xla_optimal_seconds"] = (float(cost["optimal_seconds"]) if cost and
                                   "optimal_seconds" in cost else None)
  return report


def estimate(target: str, arch: str, dtype: str, batch: int, T: int, snn_bytes: float,
             ann_bytes: float | None) -> dict[str, Any]:
  """The bandwidth-bound img/s estimate of a train step (see the module docstring)."""
  _, _, chips, bandwidth = TARGETS[target]
  calib = CALIBRATION.get((arch, dtype)) if (batch, T) == (128, 4) else None
  if calib and ann_bytes and TARGETS[target][0] == "cuda":
    scale = bandwidth / CALIBRATION_BANDWIDTH
    return {"train_img_s_estimate": chips * calib * scale * ann_bytes / snn_bytes,
            "ann_train_img_s_calibration": chips * calib * scale,
            "estimate_kind": ("ESTIMATE: measured H200 ANN ceiling img/s"
                              + ("" if TARGETS[target][1] == TARGETS[CALIBRATION_DEVICE][1] else
                                 f" x HBM bandwidth {target}/H200")
                              + ("" if chips == 1 else f" x {chips} chips")
                              + " x ANN bytes / SNN bytes")}
  return {"train_img_s_estimate": chips * batch / (snn_bytes / bandwidth),
          "estimate_kind": "ESTIMATE (upper bound, uncalibrated): batch / (bytes per chip / "
                           "HBM bandwidth)"}


def run(args, argv: Sequence[str]) -> dict[str, Any]:
  """The report for ``args.target`` (the benchmark's flags): SNN and ANN ceiling, train and eval."""
  import jax
  from experiments import benchmark
  from ei_snn_jax.training import train

  from ei_snn_jax.training import replicas
  mesh, platform = target_mesh(args.target)
  chips = mesh.devices.size
  per_chip = args.batch or 128
  # Built on one host CPU device (E-I Init runs there); the target's mesh replaces it. Where
  # the chips split the batch, --batch is each chip's share; where each holds whole replicas
  # (replicas.over_devices), it is each replica's batch.
  whole = replicas.over_devices(args.replicas, chips)
  overrides = dict(batch=per_chip if whole else per_chip * chips,
                   eval_batch=(args.eval_batch or per_chip) * (1 if whole else chips), devices=1)
  bargs = _Args(args, **overrides)
  cfg, spec = benchmark.make_config(bargs)
  exp = train.build_experiment(cfg)
  parts = {}
  for part in ("snn", "ann") if args.ann else ("snn",):
    e = exp if part == "snn" else dataclasses.replace(
        exp, model=benchmark.ann_ceiling(cfg.model, exp.dataset.num_classes))
    print(f"[compile_report] {part}: init on the CPU, compile for {args.target} ...",
          file=sys.stderr, flush=True)
    state = jax.block_until_ready(train.init_state(e))
    parts[part] = compile_steps(e, state, mesh, platform)
  images = cfg.train.batch_size * args.replicas   # per step, over every replica and chip
  env = {"arch": cfg.model.arch, "variant": cfg.model.variant, "dtype": cfg.model.conv_dtype,
         "T": cfg.model.T, "batch_per_chip": images // chips, "global_batch": images,
         "replicas": args.replicas, "replicas_over_chips": whole,
         "eval_batch": cfg.train.eval_batch_size, "chips": chips}
  record: dict[str, Any] = {
      "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "target": args.target, "platform": platform,
      "device_kind": mesh.devices.flat[0].device_kind,
      "name": f"{cfg.model.variant}-{cfg.model.arch}",
      "config": os.path.relpath(spec, REPO) if spec else None, **env,
      "jax": jax.__version__, "load_avg": list(os.getloadavg()), "note": args.note, **parts,
      "command": "python -m experiments.benchmark " + shlex.join(argv)}
  ann = parts.get("ann", {}).get("train", {}).get("bytes_total")
  record.update(estimate(args.target, cfg.model.arch, cfg.model.conv_dtype, images // chips,
                         cfg.model.T, parts["snn"]["train"]["bytes_total"], ann))
  if ann:
    for kind in ("train", "eval"):
      record[f"{kind}_bytes_ratio_snn_to_ann"] = (parts["snn"][kind]["bytes_total"]
                                                  / parts["ann"][kind]["bytes_total"])
  return record


class _Args:
  """The benchmark's parsed flags with a few values replaced (global batch sizes)."""

  def __init__(self, args, **replace):
    self._args, self._replace = args, replace

  def __getattr__(self, name):
    return self._replace[name] if name in self._replace else getattr(self._args, name)


def _gb(v) -> str:
  return "–" if v is None else f"{v / 1e9:.2f}"


def table(records: Sequence[dict]) -> str:
  """Markdown: one row per (record, model part, step) with GB by kernel kind, memory, collectives."""
  head = ("| model | target | batch×T | dtype | part | step | GB/step | fusion | conv | matmul | "
          "kernel | copy | collective | GFLOP | temp GB | arg GB | collectives (count, GB) |")
  lines = [head, "|" + "---|" * (head.count("|") - 1)]
  for r in records:
    for part in ("snn", "ann"):
      for step in ("train", "eval"):
        s = r.get(part, {}).get(step)
        if not s:
          continue
        b = s["bytes_by_kind"]
        coll = ", ".join(f"{k} {v['count']}× {v['bytes'] / 1e9:.3f}"
                         for k, v in s["collectives"].items()) or "none"
        flops = "–" if s.get("flops") is None else f"{s['flops'] / 1e9:,.0f}"
        lines.append(
            f"| {r['name']} | {r['target']} | {r['batch_per_chip']}×{r['T']}"
            f"{'' if r['chips'] == 1 else ' per chip'} | {r['dtype']} | "
            f"{'SNN' if part == 'snn' else 'ANN ceiling'} | {step} | {_gb(s['bytes_total'])} | "
            f"{_gb(b['fusion'])} | {_gb(b['convolution'])} | {_gb(b['matmul'])} | "
            f"{_gb(b.get('kernel', 0))} | {_gb(b['copy'])} | {_gb(b['collective'])} | {flops} | {_gb(s['temp_bytes'])} | "
            f"{_gb(s['argument_bytes'])} | {coll} |")
  return "\n".join(lines)


def summary(record: dict) -> str:
  """Ratios and the estimate, in words."""
  out = []
  for kind in ("train", "eval"):
    ratio = record.get(f"{kind}_bytes_ratio_snn_to_ann")
    if ratio:
      out.append(f"{kind} step bytes SNN / ANN ceiling: {ratio:.2f}x")
  for kind in ("train", "eval"):
    branches = record.get("snn", {}).get(kind, {}).get("conditional_bytes")
    if branches:
      out.append(f"{kind} step: {_gb(branches)} GB of it in a conditional's heaviest branch "
                 "(counted as if it ran)")
  out.append(f"train img/s {record['estimate_kind']}: {record['train_img_s_estimate']:,.0f} "
             f"(global batch {record['global_batch']}; nothing was run: an estimate)")
  return "\n".join(out)


def main(args, argv: Sequence[str]) -> int:
  record = run(args, argv)
  out = pathlib.Path(args.out) if args.out else (
      REPO / "experiments" / "results" / f"compile_{_slug(args.target)}.jsonl")
  if args.out and (args.out.endswith("/") or out.is_dir()):
    out = out / f"compile_{_slug(args.target)}.jsonl"
  out.parent.mkdir(parents=True, exist_ok=True)
  with open(out, "a") as f:
    f.write(json.dumps(record) + "\n")
  print(table([record]))
  print(summary(record))
  for part in ("snn", "ann"):
    for step in ("train", "eval"):
      for name, c in record.get(part, {}).get(step, {}).get("collectives", {}).items():
        print(f"{part} {step} {name}: {c['count']}x, {c['bytes'] / 1e9:.3f} GB; from "
              + "; ".join(f"{k} ({v / 1e9:.3f} GB)" for k, v in list(c["ops"].items())[:4]))
  print(f"[compile_report] appended to {out}", file=sys.stderr)
  return 0


def _slug(text: str) -> str:
  return "".join(ch if ch.isalnum() else "_" for ch in text.lower()).strip("_")
