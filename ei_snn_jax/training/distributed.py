"""Multi-host start: ``jax.distributed.initialize`` behind a watchdog that ends a hung start.

``initialize_distributed(config.parallel)`` joins the cluster once per process (CPU hosts
exchange data through gloo collectives). JAX's client aborts the process with a C++ fatal error
at its own timeout, so a watchdog thread (``exit_after``) ends it first, with one ``error:``
line naming what to check and exit status 2.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

import jax
import ml_collections

from ei_snn_jax.training import config as config_lib, replicas

# The config options this module owns: dotted field -> (default, allowed values or range,
# meaning); ``training.config.base_config`` is assembled from these (docs/options.md).
CONFIG_OPTIONS = {
    "parallel.num_devices": (0, ">= 0", "0 = every local device"),
    "parallel.distributed": (False, None, "call jax.distributed.initialize() (multi-host)"),
    "parallel.coordinator_address": (str, None, "HOST:PORT; unset = auto"),
    "parallel.num_processes": (1, ">= 1", "processes in a multi-host job"),
    "parallel.process_id": (0, ">= 0", "this process's rank"),
    "parallel.init_timeout_s": (300, ">= 1", "multi-host start: give up after this many s"),
}


def check_config(cfg, problems: list[str]) -> None:
  """Append the rules across ``cfg.parallel``'s fields to ``problems`` (training.config)."""
  par = cfg.parallel
  host, _, port = str(par.coordinator_address or "").rpartition(":")
  if par.coordinator_address and (not host or not port.isdigit() or not 1 <= int(port) <= 65535):
    problems.append(f"parallel.coordinator_address={par.coordinator_address!r} is not HOST:PORT "
                    f"with a port in 1..65535: e.g. parallel.coordinator_address=10.0.0.1:1234")
  if not 0 <= par.process_id < max(par.num_processes, 1):
    problems.append(f"parallel.process_id={par.process_id} is outside [0, {par.num_processes}): "
                    f"give each process its rank 0..num_processes-1")
  if par.distributed and par.num_devices:
    problems.append("parallel.num_devices must be 0 (all devices of all hosts) when "
                    "parallel.distributed=True")


def check_devices(cfg, num_devices: int | None, problems: list[str]) -> None:
  """Append to ``problems`` where ``parallel.num_devices`` exceeds the ``num_devices`` there are
  (None: unknown), or a batch size does not divide over the devices used (training.config)
  where they split the batch (not where each holds whole replicas, ``replicas.over_devices``)."""
  par = cfg.parallel
  if num_devices is not None and par.num_devices > num_devices:
    problems.append(f"parallel.num_devices={par.num_devices} exceeds the {num_devices} available "
                    f"devices: set parallel.num_devices to at most {num_devices} (0 = all)")
  n = par.num_devices if par.num_devices > 0 else num_devices
  if n and replicas.over_devices(int(cfg.train.num_replicas), n,
                                 int(par.num_processes) if par.distributed else 1):
    return
  for path in ("train.batch_size", "train.eval_batch_size") if n and n > 1 else ():
    size = cfg.train[path[6:]]
    if size >= 1 and size % n:
      below, above = (size // n) * n, (size // n + 1) * n
      problems.append(f"{path}={size} is not divisible by the {n} devices: use a multiple of "
                      f"{n} (e.g. {f'{below} or {above}' if below else above}) or set "
                      f"parallel.num_devices")


@contextlib.contextmanager
def exit_after(seconds: float, message: str):
  """Within the block, a watchdog thread ends the process after ``seconds`` with one
  ``error: message`` line and exit status 2: for native calls that block without a Python-level
  timeout (or abort the process at their own); leaving the block disarms it."""
  done = threading.Event()

  def watch():
    if not done.wait(seconds):
      sys.stdout.flush()
      sys.stderr.write(f"error: {message}\n")
      sys.stderr.flush()
      os._exit(2)

  threading.Thread(target=watch, daemon=True, name="exit-after").start()
  try:
    yield
  finally:
    done.set()


def initialize_distributed(parallel: ml_collections.ConfigDict) -> None:
  """``jax.distributed.initialize`` for a multi-host run (once per process).

  With ``parallel.coordinator_address`` unset, JAX finds the cluster itself (TPU pods, SLURM,
  Open MPI); otherwise the address, ``num_processes`` and ``process_id`` are passed.
  """
  if jax.distributed.is_initialized():
    return
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  timeout = int(parallel.init_timeout_s)
  where = (f"the coordinator at {parallel.coordinator_address} (process {parallel.process_id} of "
           f"{parallel.num_processes})" if parallel.coordinator_address else
           "the cluster's coordinator (found by JAX)")
  print(f"multi-host start: waiting up to {timeout} s for {where} and every other process "
        f"(parallel.init_timeout_s)", flush=True)
  give_up = (f"multi-host start failed: no answer from {where} within {timeout} s: start every "
             f"process, check parallel.coordinator_address, or raise parallel.init_timeout_s")
  with exit_after(timeout, give_up):
    try:
      if parallel.coordinator_address:
        jax.distributed.initialize(parallel.coordinator_address, int(parallel.num_processes),
                                   int(parallel.process_id), initialization_timeout=timeout + 60)
      else:
        jax.distributed.initialize(initialization_timeout=timeout + 60)
    except Exception as e:  # noqa: BLE001 - every failure to join becomes one line
      raise config_lib.ConfigError(f"{give_up} ({type(e).__name__}: "
                                   f"{' '.join(str(e).split())[:300]})") from None
