"""Preemption: SIGTERM, Ctrl-C and TPU maintenance notices stop a run at a step boundary that every process agrees on,
after its checkpoint is saved (checkpoint.py), with the exit status schedulers requeue."""

import logging
import signal
import threading

import jax
import numpy as np
from jax._src import distributed as jax_distributed  # the preemption service has no public handle
from jax.experimental import multihost_utils

# Exit status of a run stopped by a preemption notice after saving its checkpoint: the
# status a SIGTERM-killed process has (128 + 15), so schedulers that requeue terminated
# jobs (SLURM --requeue, Kubernetes pod failure policies) treat it as before.
PREEMPTED_EXIT_CODE = 143


class Preempted(Exception):
  """Raised after a preemption checkpoint has been saved: the run stops cleanly and resumes on restart."""

  def __init__(self, step: int, workdir: str):
    self.step = step
    super().__init__(
      f"Preempted: checkpoint saved at step {step} in {workdir}. Run the same command again "
      f"to resume from it (exit status {PREEMPTED_EXIT_CODE})."
    )


class PreemptionWatch:
  """Notices SIGTERM, Ctrl-C (SIGINT) and TPU maintenance events and tells every process the same step to stop at.

  Multi-process runs use jax's preemption service: it catches SIGTERM (and TPU
  maintenance notices) in any process and agrees, through the coordinator, on
  the next step that all processes reach (multihost_utils.reached_preemption_sync_point).
  Without that service a Python SIGTERM handler sets a flag, which is
  all-gathered at each step boundary when there are several processes.
  """

  def __init__(self):
    self._flag = threading.Event()
    self._service = jax.process_count() > 1 and jax_distributed.global_state.preemption_sync_manager is not None
    self._previous = {}
    if not self._service and threading.current_thread() is threading.main_thread():
      # Ctrl-C saves like SIGTERM. (Multi-process runs with jax's service: SIGTERM only, agreed without a
      # per-step collective; Ctrl-C there stops at once.)
      for sig in (signal.SIGTERM, signal.SIGINT):
        self._previous[sig] = signal.signal(sig, self._on_signal)

  def _on_signal(self, signum, frame):
    del frame
    name = signal.Signals(signum).name
    if signum == signal.SIGINT and self._flag.is_set():
      raise KeyboardInterrupt  # a second Ctrl-C: stop now, without the checkpoint
    logging.warning(
      "%s received: saving a checkpoint at the next step boundary, then stopping%s.",
      name,
      " (Ctrl-C again to stop without it)" if signum == signal.SIGINT else "",
    )
    self._flag.set()

  def reached(self, step: int) -> bool:
    """Whether all processes stop after `step` (call at every step boundary, on every process)."""
    if self._service:
      return multihost_utils.reached_preemption_sync_point(step)
    if jax.process_count() == 1:
      return self._flag.is_set()
    flags = multihost_utils.process_allgather(np.asarray(self._flag.is_set()))
    return bool(np.any(flags))

  def close(self) -> None:
    """Gives SIGTERM and SIGINT back their previous handlers."""
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)
    self._previous = {}
