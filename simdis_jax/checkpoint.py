"""What a run keeps in its workdir and how it survives: orbax checkpoints, resume checks, preemption.

Crash consistency comes from orbax: a save is written into a temporary
directory and renamed into place only when every process has finished, so
`kill -9` at any moment leaves either the previous checkpoints or a complete
new one; temporary leftovers are never restored (and are removed on restart).
"""

import json
import logging
import os
import shutil
import signal
import threading
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import flags
from etils import epath
from jax._src import distributed as jax_distributed  # the preemption service has no public handle
from jax.experimental import multihost_utils

from simdis_jax import workdir as workdir_files
from simdis_jax.workdir import CONFIG_FILE
from simdis_jax import configuration

# Exit status of a run stopped by a preemption notice after saving its checkpoint: the
# status a SIGTERM-killed process has (128 + 15), so schedulers that requeue terminated
# jobs (SLURM --requeue, Kubernetes pod failure policies) treat it as before.
PREEMPTED_EXIT_CODE = 143
# Keys that fix what a checkpoint holds and means: resuming under different values is a
# different experiment, even where the array shapes happen to agree.
RESUME_KEYS = ("method", "views", "head_combination", "model.student", "model.teacher", "model.sync_bn",
               "model.ema_init", "optim.name", "optim.lars_form", "data.name", "seed")
# orbax splits every replicated array into one slice per device ("replica-parallel"
# writing), so that several hosts share a large write. For slices under this size the
# split buys nothing and costs one dispatched slice op per array and device (and, at the
# first save, a compile of each): on 4 CPU devices an 8-step ResNet-10 run saving every
# step took 33 s with it and 23 s without. Such arrays are written whole by their first replica.
MIN_REPLICA_PARALLEL_SLICE_BYTES = 1 << 20


def _register_array_handler() -> None:
  """jax.Array saving with replica-parallel writes only for slices of at least 1 MiB (process-wide)."""
  default = ocp.type_handlers.get_type_handler(jax.Array)
  if getattr(default, "_min_slice_bytes_for_replica_parallel", None) == MIN_REPLICA_PARALLEL_SLICE_BYTES:
    return
  handler = ocp.type_handlers.ArrayHandler(
      array_metadata_store=getattr(default, "_array_metadata_store", None),
      min_slice_bytes_for_replica_parallel=MIN_REPLICA_PARALLEL_SLICE_BYTES)
  ocp.type_handlers.register_type_handler(jax.Array, handler, override=True)


def manager(workdir: str, keep: int = 3) -> ocp.CheckpointManager:
  """The CheckpointManager of a workdir (checkpoints under <workdir>/checkpoints)."""
  _register_array_handler()
  if jax.process_count() > 1 and "experimental_orbax_use_distributed_barrier" in flags.FLAGS:
    # orbax's default barrier is a device collective; run from its async-save thread it
    # interleaves with the train step's collectives in a different order on each host
    # (a deadlock with CPU/gloo). The coordination service's barrier touches no device.
    flags.FLAGS["experimental_orbax_use_distributed_barrier"].value = True
  directory = workdir_files.path(workdir, workdir_files.CHECKPOINT_DIR)
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
  return ocp.CheckpointManager(directory, options=options)


def save(mgr: ocp.CheckpointManager, step: int, state: Any, force: bool = False) -> None:
  """Saves the whole train state at `step` (all processes call this; each writes its shards)."""
  mgr.save(step, args=ocp.args.StandardSave(state), force=force)


def restore_latest(mgr: ocp.CheckpointManager, abstract_state: Any) -> Optional[Any]:
  """The latest complete checkpoint restored onto `abstract_state`'s shapes and shardings, or None."""
  step = mgr.latest_step()
  if step is None:
    return None
  try:
    return mgr.restore(step, args=ocp.args.StandardRestore(abstract_state))
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(
        f"The checkpoint at step {step} in {mgr.directory} does not match this run's model/method "
        f"(different networks, views or optimizer?). Use a fresh --workdir, or the config that "
        f"wrote it (saved as {CONFIG_FILE} beside it). Underlying error: {e}") from e


def _lookup(tree, key: str):
  for part in key.split("."):
    if not isinstance(tree, dict) or part not in tree:
      return None
    tree = tree[part]
  return tree


def check_resume_config(workdir: str, config) -> None:
  """Before restoring: the workdir's checkpoints were written by this model and method (RESUME_KEYS)."""
  saved = workdir_files.read_json(workdir, CONFIG_FILE)
  if saved is None:
    return  # nothing to compare with; the restore still checks shapes
  path = workdir_files.path(workdir, CONFIG_FILE)
  # Runs saved before the arch keys existed hold ResNets: both sides read with the defaults filled in.
  saved = configuration.with_network_defaults(saved)
  wanted = configuration.with_network_defaults(json.loads(config.to_json_best_effort()))
  for key in RESUME_KEYS:
    old, new = _lookup(saved, key), _lookup(wanted, key)
    if old is not None and old != new:
      raise ValueError(
          f"{workdir} holds checkpoints of a run with config.{key}={old!r}, but this config has {new!r}. "
          f"Resume it with --config.{key}={_flag_value(old)} (the config it was written with is "
          f"{path}), or start this experiment in a fresh --workdir.")


def _flag_value(value) -> str:
  if isinstance(value, dict):
    return "{" + ", ".join(f"{k}={v!r}" for k, v in value.items()) + "}"
  if isinstance(value, list):
    return repr(tuple(value))
  return repr(value) if isinstance(value, str) else str(value)


def state_bytes(abstract_state: Any) -> int:
  """Bytes of one copy of a (possibly abstract) train state."""
  return sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(abstract_state))


def check_free_space(workdir: str, abstract_state: Any, keep: int, margin_bytes: int = 64 << 20) -> None:
  """At start-up: the local disk holds `keep` checkpoints plus one being written, or a clear error.

  Object stores (gs://) are not checked. Space already taken by this workdir's
  checkpoints counts as available, since old ones are deleted as new ones land.
  """
  if "://" in workdir:
    return
  need = state_bytes(abstract_state) * (keep + 1) + margin_bytes
  have = shutil.disk_usage(workdir).free
  for root, _, files in os.walk(os.path.join(workdir, "checkpoints")):
    have += sum(os.path.getsize(os.path.join(root, f)) for f in files)
  if have < need:
    raise OSError(
        f"Not enough free disk for checkpoints in {workdir}: {have / 2**20:.0f} MiB available, "
        f"{need / 2**20:.0f} MiB needed ({keep} kept + 1 in flight of {state_bytes(abstract_state) / 2**20:.1f} "
        f"MiB each, plus a margin). Free space, choose another --workdir, or lower "
        f"--config.train.keep_checkpoints.")


class Preempted(Exception):
  """Raised after a preemption checkpoint has been saved: the run stops cleanly and resumes on restart."""

  def __init__(self, step: int, workdir: str):
    self.step = step
    super().__init__(f"Preempted: checkpoint saved at step {step} in {workdir}. Run the same command again "
                     f"to resume from it (exit status {PREEMPTED_EXIT_CODE}).")


class PreemptionWatch:
  """Notices SIGTERM / TPU maintenance events and tells every process the same step to stop at.

  Multi-process runs use jax's preemption service: it catches SIGTERM (and TPU
  maintenance notices) in any process and agrees, through the coordinator, on
  the next step that all processes reach (multihost_utils.reached_preemption_sync_point).
  Without that service a Python SIGTERM handler sets a flag, which is
  all-gathered at each step boundary when there are several processes.
  """

  def __init__(self):
    self._flag = threading.Event()
    self._previous = None
    self._service = jax.process_count() > 1 and jax_distributed.global_state.preemption_sync_manager is not None
    if not self._service and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM received: saving a checkpoint at the next step boundary, then stopping.")
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
    """Gives SIGTERM back its previous handler."""
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None


def check_writable(workdir: str) -> None:
  """Fails at start-up, not after hours, when the workdir cannot be written."""
  path = epath.Path(workdir)
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe = path / f".write_probe_{jax.process_index()}"
    probe.write_text("ok")
    probe.unlink()
  except OSError as e:
    raise OSError(f"--workdir {workdir} is not writable ({e}); choose a directory you can write to.") from e
