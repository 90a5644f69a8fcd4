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

from ei_snn_jax.training import config as config_lib


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
