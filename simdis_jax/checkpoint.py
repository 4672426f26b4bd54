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
import time
import zlib
from typing import Any, Dict, Optional

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

CHECKSUM_DIR = "checkpoint_checksums"  # <workdir>/checkpoint_checksums/<step>.json: CRC32 per array
DEFAULT_ITEM = "default"  # orbax's folder of a single-item checkpoint
DAMAGED_DIR = "damaged_checkpoints"  # where restore moves steps it could not trust
# Exit status of a run stopped by a preemption notice after saving its checkpoint: the
# status a SIGTERM-killed process has (128 + 15), so schedulers that requeue terminated
# jobs (SLURM --requeue, Kubernetes pod failure policies) treat it as before.
PREEMPTED_EXIT_CODE = 143
# Keys that fix what a checkpoint holds and means: resuming under different values is a
# different experiment, even where the array shapes happen to agree.
RESUME_KEYS = ("method", "views", "head_combination", "model.student", "model.teacher", "model.sync_bn",
               "model.bn_running_var", "model.ema_init", "optim.name", "optim.lars_form", "data.name", "seed")
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


class CheckpointMismatch(ValueError):
  """A checkpoint written by another model/method/optimizer (a different tree or shapes), not damage."""


class NoIntactCheckpoint(RuntimeError):
  """Every checkpoint of a workdir is damaged or non-finite; the message lists each step and why."""


def _names(path) -> tuple:
  """A pytree key path as plain names, alike for a TrainState and the nested dicts orbax's metadata holds."""
  return tuple(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _host_leaves(state: Any) -> Dict[str, np.ndarray]:
  """Every array of a (replicated) state as host numpy, keyed by its path; this process's own copy."""
  out = {}
  for path, x in jax.tree_util.tree_flatten_with_path(state)[0]:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      x = x.addressable_data(0)  # replicated: every process holds the whole array
    out["/".join(_names(path))] = np.asarray(x)
  return out


def non_finite_leaves(leaves: Dict[str, np.ndarray]) -> list:
  """Paths of the floating-point leaves holding a NaN or an Inf."""
  return [k for k, v in leaves.items() if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all()]


def _checksums(leaves: Dict[str, np.ndarray]) -> Dict[str, int]:
  return {k: zlib.crc32(np.ascontiguousarray(v).tobytes()) for k, v in leaves.items()}


def _checksum_path(mgr: ocp.CheckpointManager, step: int) -> epath.Path:
  return epath.Path(mgr.directory).parent / CHECKSUM_DIR / f"{step}.json"


def save(mgr: ocp.CheckpointManager, step: int, state: Any, force: bool = False) -> None:
  """Saves the whole train state at `step` (all processes call this; each writes its shards).

  A state holding a NaN/Inf anywhere is never saved (FloatingPointError): the
  checkpoints kept are all finite, so rotation never drops the last good one
  for a bad one. Beside each step a CRC32 per array (<workdir>/checkpoint_checksums/<step>.json)
  lets a restore detect bit flips, which orbax's files do not.
  """
  leaves = _host_leaves(state)
  bad = non_finite_leaves(leaves)
  if bad:
    raise FloatingPointError(f"The state at step {step} holds NaN/Inf in {len(bad)} arrays (e.g. {bad[0]}); "
                             f"it was not saved.")
  if jax.process_index() == 0:
    path = _checksum_path(mgr, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    workdir_files.atomic_write_text(path, json.dumps(_checksums(leaves)))
    kept = {str(s) for s in mgr.all_steps()} | {str(step)}
    for old in path.parent.glob("*.json"):  # records of rotated-out steps
      if old.stem not in kept:
        old.unlink()
  mgr.save(step, args=ocp.args.StandardSave(state), force=force)


def _metadata(mgr: ocp.CheckpointManager, step: int):
  """The tree of array metadata (shapes, dtypes) a step's files declare; raises if unreadable."""
  directory = epath.Path(mgr.directory) / str(step) / DEFAULT_ITEM
  return ocp.StandardCheckpointHandler().metadata(directory).tree


def _mismatch(mgr: ocp.CheckpointManager, step: int, abstract_state: Any) -> Optional[str]:
  """How the checkpoint's tree differs from `abstract_state` (None if alike); raises if its metadata is unreadable."""
  saved = {_names(p): tuple(x.shape) for p, x in jax.tree_util.tree_flatten_with_path(_metadata(mgr, step))[0]}
  wanted = {_names(p): tuple(x.shape) for p, x in jax.tree_util.tree_flatten_with_path(abstract_state)[0]}
  if not saved:
    raise ValueError("its metadata lists no arrays")
  only_saved, only_wanted = sorted(set(saved) - set(wanted)), sorted(set(wanted) - set(saved))
  if only_saved or only_wanted:
    return (f"{len(only_saved)} arrays only in the checkpoint (e.g. {'/'.join(only_saved[0]) if only_saved else '-'}), "
            f"{len(only_wanted)} only in this run (e.g. {'/'.join(only_wanted[0]) if only_wanted else '-'})")
  shapes = [k for k in wanted if saved[k] != wanted[k]]
  if shapes:
    k = shapes[0]
    return f"{len(shapes)} arrays of other shapes (e.g. {'/'.join(k)}: checkpoint {saved[k]}, this run {wanted[k]})"
  return None


def _damage(mgr: ocp.CheckpointManager, step: int, state: Any) -> Optional[str]:
  """Why a restored state cannot be trusted (checksum or NaN/Inf), or None."""
  leaves = _host_leaves(state)
  path = _checksum_path(mgr, step)
  if path.exists():
    expected = json.loads(path.read_text())
    changed = [k for k, crc in _checksums(leaves).items() if expected.get(k) != crc]
    if changed:
      return f"checksum mismatch in {len(changed)} arrays (e.g. {changed[0]}): the files changed after the save"
  bad = non_finite_leaves(leaves)
  if bad:
    return f"NaN/Inf in {len(bad)} arrays (e.g. {bad[0]})"
  return None


def _quarantine(mgr: ocp.CheckpointManager, steps) -> None:
  """Moves damaged steps (and their checksums) to <workdir>/damaged_checkpoints, kept for inspection."""
  if not steps:
    return
  if jax.process_index() == 0:
    root = epath.Path(mgr.directory).parent
    target = root / DAMAGED_DIR / time.strftime("%Y%m%d-%H%M%S")
    target.mkdir(parents=True, exist_ok=True)
    for step in steps:
      (epath.Path(mgr.directory) / str(step)).rename(target / str(step))
      if _checksum_path(mgr, step).exists():
        _checksum_path(mgr, step).rename(target / f"{step}.checksums.json")
    logging.warning("Moved the damaged checkpoints %s to %s.", sorted(steps), target)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("simdis_jax_quarantine")
  mgr.reload()


def restore_latest(mgr: ocp.CheckpointManager, abstract_state: Any) -> Optional[Any]:
  """The newest checkpoint that restores completely, matches its checksums and is finite, or None if none exist.

  Damaged steps (unreadable files, a bit flip, NaN/Inf) are skipped, logged
  and moved to <workdir>/damaged_checkpoints, so training continues from the
  newest intact one and saves over nothing. A checkpoint of another model,
  method or optimizer (a different tree or shapes) is CheckpointMismatch, not
  damage; NoIntactCheckpoint if every step is damaged.
  """
  steps = sorted(mgr.all_steps(), reverse=True)
  skipped = {}
  for step in steps:
    try:
      mismatch = _mismatch(mgr, step, abstract_state)
    except Exception as e:  # pylint: disable=broad-except
      skipped[step] = f"unreadable metadata ({type(e).__name__}: {_first_line(e)})"
    else:
      if mismatch:
        raise CheckpointMismatch(
            f"The checkpoint at step {step} in {mgr.directory} was written by another model/method/optimizer: "
            f"{mismatch}. Use a fresh --workdir, or the config that wrote it (saved as {CONFIG_FILE} beside it).")
      try:
        state = mgr.restore(step, args=ocp.args.StandardRestore(abstract_state))
      except Exception as e:  # pylint: disable=broad-except
        skipped[step] = f"unreadable ({type(e).__name__}: {_first_line(e)})"
      else:
        why = _damage(mgr, step, state)
        if why is None:
          if skipped:
            logging.warning("Restored step %d after skipping damaged checkpoints: %s.", step,
                            "; ".join(f"step {s}: {r}" for s, r in skipped.items()))
          _quarantine(mgr, list(skipped))
          return state
        skipped[step] = why
    logging.warning("Checkpoint step %d in %s is damaged (%s); trying the one before.", step, mgr.directory,
                    skipped[step])
  if skipped:
    raise NoIntactCheckpoint(
        f"No checkpoint in {mgr.directory} restores intact: "
        + "; ".join(f"step {s}: {r}" for s, r in skipped.items())
        + ". Move the checkpoints folder away to start over in this --workdir, or use a fresh one.")
  return None


def _first_line(e: Exception) -> str:
  text = str(e).strip().splitlines()
  return text[0][:200] if text else ""


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
      if isinstance(old, dict) and isinstance(new, dict):  # name the fields: a dict is no single flag
        fields = [k for k in old if old[k] != new.get(k)]
        advice = " ".join(f"--config.{key}.{k}={_flag_value(old[k])}" for k in fields)
        have = ", ".join(f"{k}={new.get(k)!r}" for k in fields)
        old = ", ".join(f"{k}={old[k]!r}" for k in fields)
        what = f"config.{key} with {old}, but this config has {have}"
      else:
        advice, what = f"--config.{key}={_flag_value(old)}", f"config.{key}={old!r}, but this config has {new!r}"
      raise ValueError(
          f"{workdir} holds checkpoints of a run with {what}. Resume it with {advice} (the config it was "
          f"written with is {path}), or start this experiment in a fresh --workdir.")


def _flag_value(value) -> str:
  """`value` as ml_collections' config flags parse it (tuples as Python literals, strings bare)."""
  if isinstance(value, list):
    return '"' + repr(tuple(value)) + '"'  # one shell word
  return str(value)


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
    logging.warning("%s received: saving a checkpoint at the next step boundary, then stopping%s.", name,
                    " (Ctrl-C again to stop without it)" if signum == signal.SIGINT else "")
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


def remove_if_empty(workdir: str) -> None:
  """Removes <workdir>/checkpoints if a failed start left it empty (process 0; local paths only)."""
  directory = os.path.join(workdir, "checkpoints")
  if jax.process_index() == 0 and "://" not in workdir and os.path.isdir(directory) and not os.listdir(directory):
    os.rmdir(directory)


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
