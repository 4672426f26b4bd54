"""What a run keeps in its workdir and how it survives: orbax checkpoints, resume checks (preemption: preemption.py).

Crash consistency comes from orbax: a save is written into a temporary
directory and renamed into place only when every process has finished, so
`kill -9` at any moment leaves either the previous checkpoints or a complete
new one; temporary leftovers are never restored (and are removed on restart).
"""

import contextlib
import errno
import json
import logging
import math
import os
import shutil
import time
import zlib
from typing import Any, Dict, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import flags
from etils import epath
from jax.experimental import multihost_utils

from simdis_jax import workdir as workdir_files
from simdis_jax.workdir import CONFIG_FILE

CHECKSUM_DIR = "checkpoint_checksums"  # <workdir>/checkpoint_checksums/<step>.json: CRC32 per array
DEFAULT_ITEM = "default"  # orbax's folder of a single-item checkpoint
DAMAGED_DIR = "damaged_checkpoints"  # where restore moves steps it could not trust
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
    min_slice_bytes_for_replica_parallel=MIN_REPLICA_PARALLEL_SLICE_BYTES,
  )
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
    raise FloatingPointError(
      f"The state at step {step} holds NaN/Inf in {len(bad)} arrays (e.g. {bad[0]}); it was not saved."
    )
  with _save_errors(mgr):
    if jax.process_index() == 0:
      path = _checksum_path(mgr, step)
      path.parent.mkdir(parents=True, exist_ok=True)
      workdir_files.atomic_write_text(path, json.dumps(_checksums(leaves)))
      kept = {str(s) for s in mgr.all_steps()} | {str(step)}
      for old in path.parent.glob("*.json"):  # records of rotated-out steps
        if old.stem not in kept:
          old.unlink()
    mgr.save(step, args=ocp.args.StandardSave(state), force=force)  # also reports a failed earlier async save


# How a full disk reads in the errors of Python, orbax and tensorstore (whose message carries the whole spec).
_DISK_FULL = ("No space left on device", "os_error_code='28'", "Disk quota exceeded", "File too large")


@contextlib.contextmanager
def _save_errors(mgr: ocp.CheckpointManager):
  """A save that fails for want of disk becomes one OSError line saying that nothing saved before is lost."""
  try:
    yield
  except Exception as e:  # pylint: disable=broad-except
    full = isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    if not (full or any(m in str(e) for m in _DISK_FULL)):
      raise
    steps = sorted(mgr.all_steps())
    kept = f"the checkpoints saved before it (steps {steps}) are intact" if steps else "no checkpoint was saved yet"
    big = (isinstance(e, OSError) and e.errno == errno.EFBIG) or "File too large" in str(e)
    why = "a file outgrew the size limit (File too large)" if big else "the disk is full (no space left on device)"
    raise OSError(
      f"Saving a checkpoint in {mgr.directory} failed: {why}; "
      f"{kept}. Free space (or lower --config.train.keep_checkpoints) and run the same command to "
      "resume."
    ) from None


def finish(mgr: ocp.CheckpointManager) -> None:
  """Waits for the saves in flight and closes the manager; a save that ran out of disk is one OSError line."""
  try:
    with _save_errors(mgr):
      mgr.wait_until_finished()
  except BaseException:
    with contextlib.suppress(Exception):  # the failed save is reported above; close's repeat of it is not
      mgr.close()
    raise
  mgr.close()


def _metadata(mgr: ocp.CheckpointManager, step: int):
  """The tree of array metadata (shapes, dtypes) a step's files declare; raises if unreadable."""
  directory = epath.Path(mgr.directory) / str(step) / DEFAULT_ITEM
  return ocp.StandardCheckpointHandler().metadata(directory).tree


def _mismatch(mgr: ocp.CheckpointManager, step: int, abstract_state: Any, partial: bool = False) -> Optional[str]:
  """How the checkpoint's tree differs from `abstract_state` (None if alike; `partial`: a part of it); raises if
  its metadata is unreadable."""
  saved = {_names(p): tuple(x.shape) for p, x in jax.tree_util.tree_flatten_with_path(_metadata(mgr, step))[0]}
  wanted = {_names(p): tuple(x.shape) for p, x in jax.tree_util.tree_flatten_with_path(abstract_state)[0]}
  if not saved:
    raise ValueError("its metadata lists no arrays")
  only_saved = [] if partial else sorted(set(saved) - set(wanted))
  only_wanted = sorted(set(wanted) - set(saved))
  if only_saved or only_wanted:
    return (
      f"{len(only_saved)} arrays only in the checkpoint (e.g. {'/'.join(only_saved[0]) if only_saved else '-'}), "
      f"{len(only_wanted)} only in this run (e.g. {'/'.join(only_wanted[0]) if only_wanted else '-'})"
    )
  shapes = [k for k in wanted if saved[k] != wanted[k]]
  if shapes:
    k = shapes[0]
    return f"{len(shapes)} arrays of other shapes (e.g. {'/'.join(k)}: checkpoint {saved[k]}, this run {wanted[k]})"
  return None


def _damage(mgr: ocp.CheckpointManager, step: int, state: Any) -> Optional[str]:
  """Why a restored state cannot be trusted (checksum file, checksum or NaN/Inf), or None.

  The CRCs of the arrays restored are compared (a partial restore compares its own arrays);
  a step without a checksum file is not damage but unverified (`has_checksums`).
  """
  leaves = _host_leaves(state)
  path = _checksum_path(mgr, step)
  if path.exists():
    try:
      expected = json.loads(path.read_text())
      if not isinstance(expected, dict):
        raise ValueError("not a mapping of array names to CRCs")
    except (ValueError, OSError) as e:  # a damaged record is a damaged step: its arrays cannot be checked
      return f"its checksum file {path} is unreadable ({type(e).__name__}: {_first_line(e)})"
    changed = [k for k, crc in _checksums(leaves).items() if expected.get(k) != crc]
    if changed:
      return f"checksum mismatch in {len(changed)} arrays (e.g. {changed[0]}): the files changed after the save"
  bad = non_finite_leaves(leaves)
  if bad:
    return f"NaN/Inf in {len(bad)} arrays (e.g. {bad[0]})"
  return None


def has_checksums(mgr: ocp.CheckpointManager, step: Optional[int]) -> bool:
  """Whether `step` has its CRC record (checkpoints written before the record existed have none)."""
  return step is not None and _checksum_path(mgr, step).exists()


def _warn_unverified(mgr: ocp.CheckpointManager, step: int) -> None:
  if not has_checksums(mgr, step):
    logging.warning(
      "Checkpoint step %d in %s has no checksum file (%s/%d.json; written before checksums existed?): "
      "restored UNVERIFIED (finite, but a bit flip in it cannot be detected).",
      step,
      mgr.directory,
      CHECKSUM_DIR,
      step,
    )


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


def _as_written(mgr: ocp.CheckpointManager, step: int, abstract_state: Any):
  """(the tree to restore `step` into, a function back to abstract_state's type): a state that renamed fields
  since (state.TrainState.as_written) is read under the names the checkpoint was written with."""
  as_written = getattr(abstract_state, "as_written", None)
  return as_written(set(_metadata(mgr, step))) if as_written else (abstract_state, lambda state: state)


def _try_step(mgr: ocp.CheckpointManager, step: int, abstract_state: Any, partial: bool):
  """(state, None) if `step` restores intact, else (None, why); CheckpointMismatch for another model's tree."""
  try:
    abstract_state, back = _as_written(mgr, step, abstract_state)
    mismatch = _mismatch(mgr, step, abstract_state, partial)
  except Exception as e:  # pylint: disable=broad-except
    return None, f"unreadable metadata ({type(e).__name__}: {_first_line(e)})"
  if mismatch:
    raise CheckpointMismatch(
      f"The checkpoint at step {step} in {mgr.directory} was written by another model/method/optimizer: "
      f"{mismatch}. Use a fresh --workdir, or the config that wrote it (saved as {CONFIG_FILE} beside it)."
    )
  try:
    if partial:  # only the arrays asked for are read (e.g. one network's encoder for the embedding API)
      args = ocp.args.PyTreeRestore(
        abstract_state, partial_restore=True, restore_args=ocp.checkpoint_utils.construct_restore_args(abstract_state)
      )
    else:
      args = ocp.args.StandardRestore(abstract_state)
    state = mgr.restore(step, args=args)
  except Exception as e:  # pylint: disable=broad-except
    return None, f"unreadable ({type(e).__name__}: {_first_line(e)})"
  why = _damage(mgr, step, state)  # the checksums name the arrays as they were written
  return (None, why) if why else (back(state), None)


def _walk_back(mgr: ocp.CheckpointManager, abstract_state: Any, partial: bool = False):
  """(state, step, {skipped step: why}) of the newest intact checkpoint; state None if none is."""
  skipped = {}
  for step in sorted(mgr.all_steps(), reverse=True):
    state, why = _try_step(mgr, step, abstract_state, partial)
    if state is not None:
      return state, step, skipped
    skipped[step] = why
  return None, None, skipped


def _skipped_text(skipped: Dict[int, str]) -> str:
  return "; ".join(f"step {s}: {r}" for s, r in skipped.items())


def restore_latest(mgr: ocp.CheckpointManager, abstract_state: Any) -> Optional[Any]:
  """The newest checkpoint that restores completely, matches its checksums and is finite, or None if none exist.

  Damaged steps (unreadable files, a bit flip, a damaged checksum file, NaN/Inf) are skipped,
  logged in one warning line and moved to <workdir>/damaged_checkpoints, so training continues
  from the newest intact one and saves over nothing. A checkpoint of another model, method or
  optimizer (a different tree or shapes) is CheckpointMismatch, not damage; NoIntactCheckpoint
  if every step is damaged. A step without checksums is restored with a warning that it is unverified.
  """
  state, step, skipped = _walk_back(mgr, abstract_state)
  if state is None:
    if skipped:
      raise NoIntactCheckpoint(
        f"No checkpoint in {mgr.directory} restores intact: {_skipped_text(skipped)}. "
        "Move the checkpoints folder away to start over in this --workdir, or use a fresh one."
      )
    return None
  if skipped:
    logging.warning("Restored step %d after skipping damaged checkpoints: %s.", step, _skipped_text(skipped))
  _quarantine(mgr, list(skipped))
  _warn_unverified(mgr, step)
  return state


def restore_verified(
  mgr: ocp.CheckpointManager, abstract_state: Any, step: Optional[int] = None, partial: bool = False
):
  """(state, step) of a finished run for a reader (API, export, kNN, linear evaluation, offline teacher).

  The same checks as training's restore (tree, per-array CRC, finiteness). `step` None: the newest
  intact step, walking back past damaged ones with one warning line (nothing is moved: the run is
  not the reader's); a chosen `step` that does not exist lists the steps; a damaged one is
  NoIntactCheckpoint naming the others. `partial` restores only the arrays `abstract_state` names.
  """
  steps = sorted(mgr.all_steps())
  where = epath.Path(mgr.directory).parent
  if not steps:
    raise FileNotFoundError(f"{where} has no checkpoint yet.")
  if step is None:
    state, chosen, skipped = _walk_back(mgr, abstract_state, partial)
    if state is None:
      raise NoIntactCheckpoint(f"No checkpoint in {mgr.directory} restores intact: {_skipped_text(skipped)}.")
    if skipped:
      logging.warning(
        "Checkpoint %s of %s is damaged (%s); using step %d, the newest intact one.",
        "step " + ", ".join(map(str, skipped)),
        where,
        _skipped_text(skipped),
        chosen,
      )
    _warn_unverified(mgr, chosen)
    return state, chosen
  if int(step) not in steps:
    raise ValueError(
      f"{where} has no checkpoint at step {step}; its steps are {steps} "
      "(or leave the step unset for the newest intact one)."
    )
  return restore_step(mgr, int(step), abstract_state, partial), int(step)


def restore_step(mgr: ocp.CheckpointManager, step: int, abstract_state: Any, partial: bool = False) -> Any:
  """Checkpoint `step` restored and verified (tree, checksums, finiteness) like restore_latest, without a fallback.

  For reading a finished run at a chosen step (offline teacher, kNN, linear evaluation, export):
  a damaged step is an error naming the intact alternative, never silently used.
  """
  try:
    state, why = _try_step(mgr, step, abstract_state, partial)
  except CheckpointMismatch as e:
    raise CheckpointMismatch(
      f"The checkpoint at step {step} in {mgr.directory} does not hold this run's networks: "
      f"{str(e).split(': ', 1)[1].split('. Use a fresh')[0]}."
    ) from None
  if why:
    others = [s for s in mgr.all_steps() if s != step]
    raise NoIntactCheckpoint(
      f"The checkpoint at step {step} in {mgr.directory} is damaged: {why}. "
      + (f"Its other steps are {sorted(others)}." if others else "It has no other step.")
    )
  _warn_unverified(mgr, step)
  return state


def diverged(step: int, what: str, last_saved: Optional[int], advice: str, verified: bool = True) -> FloatingPointError:
  """The error that stops a diverged run; `verified`: the kept step's CRCs were checked (saved or restored so)."""
  if last_saved is None:
    kept = "no checkpoint was saved"
  elif verified:
    kept = f"the last checkpoint (step {last_saved}, verified finite) is kept and a restart resumes from it"
  else:  # restored without a checksum record: a bit flip in it, not the learning rate, may be the cause
    kept = (
      f"the last checkpoint (step {last_saved}) is kept but was restored UNVERIFIED (no checksum file): it "
      "may be damaged, so if lowering the learning rate does not help, start afresh"
    )
  return FloatingPointError(f"{what} at step {step}: training stopped; {kept}. {advice}")


def check_finite_metrics(
  step: int, values: Dict[str, float], last_saved: Optional[int], advice: str, verified: bool = True
) -> None:
  """Stops a run whose logged metrics hold a NaN/Inf (see `diverged`)."""
  bad = {k: v for k, v in values.items() if not math.isfinite(v)}
  if bad:
    raise diverged(step, f"Non-finite metrics {bad}", last_saved, advice, verified)


def save_finite(
  mgr: ocp.CheckpointManager,
  step: int,
  state: Any,
  last_saved: Optional[int],
  advice: str,
  force: bool = False,
  verified: bool = True,
) -> None:
  """`save`, turning a refused non-finite state into the run's divergence stop."""
  try:
    save(mgr, step, state, force=force)
  except FloatingPointError as e:
    raise diverged(step, str(e).split(";")[0], last_saved, advice, verified) from None


def _first_line(e: Exception) -> str:
  text = str(e).strip().splitlines()
  return text[0][:200] if text else ""


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
      f"--config.train.keep_checkpoints."
    )


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
