"""What a run keeps in its workdir: orbax checkpoints (periodic saves, resume), config, metric writers."""

import json
import os
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp
from etils import epath

CONFIG_FILE = "config.json"


def absolute(workdir: str) -> str:
  """Local paths made absolute (orbax needs them); URLs such as gs:// are kept as they are."""
  return workdir if "://" in workdir else os.path.abspath(workdir)


def manager(workdir: str, keep: int = 3) -> ocp.CheckpointManager:
  """The CheckpointManager of a workdir (checkpoints under <workdir>/checkpoints)."""
  directory = epath.Path(workdir) / "checkpoints"
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


def write_config(workdir: str, config) -> None:
  """Saves the run's config as JSON (process 0), for resume checks and the offline teacher."""
  if jax.process_index() == 0:
    path = epath.Path(workdir) / CONFIG_FILE
    path.write_text(config.to_json_best_effort(indent=2))


def read_config(workdir: str) -> dict:
  """The config a run saved in its workdir, as a dict."""
  path = epath.Path(workdir) / CONFIG_FILE
  if not path.exists():
    raise FileNotFoundError(f"{workdir} holds no {CONFIG_FILE}: it is not a simdis_jax workdir.")
  return json.loads(path.read_text())


def metric_writer(workdir: str):
  """TensorBoard + console metrics on process 0; the other processes write nothing."""
  from clu import metric_writers  # pylint: disable=import-outside-toplevel
  if jax.process_index() == 0:
    return metric_writers.create_default_writer(workdir)
  return metric_writers.MultiWriter([])


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
