"""Multi-host start-up, device mesh and global arrays: one data axis over every device of every host."""

import logging
import os
from typing import Mapping, Optional

import jax
import numpy as np
from jax._src import distributed as jax_distributed  # the coordination client has no public handle
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
DISTRIBUTED_MODES = ("auto", "yes", "no")
# Variables that SLURM sets in every task of `srun` (jax's SLURM detection reads the same ones).
_SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")


def cluster_environment(env: Optional[Mapping[str, str]] = None) -> Optional[str]:
  """'slurm' or 'tpu_pod' when this process is one of several that a cluster started, else None.

  A plain host, a one-task SLURM job or a single TPU VM gives None: those run
  as one process and need no coordinator.
  """
  env = os.environ if env is None else env
  if all(v in env for v in _SLURM_VARS) and int(env["SLURM_NTASKS"]) > 1:
    return "slurm"
  hosts = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
  if len(hosts) > 1 or env.get("MEGASCALE_COORDINATOR_ADDRESS"):
    return "tpu_pod"
  return None


def initialize_distributed(
  coordinator_address: Optional[str] = None,
  num_processes: Optional[int] = None,
  process_id: Optional[int] = None,
  mode: str = "auto",
) -> bool:
  """Starts jax.distributed when this is a multi-process run; returns whether it did.

  Explicit arguments win (any cluster, or N processes on one machine). With
  none, mode 'auto' starts it only inside a detected SLURM job of several tasks
  or a TPU pod (jax then reads the cluster's own variables), 'yes' always lets
  jax detect the cluster (e.g. a TPU pod whose workers lack the variables
  above), 'no' never starts it.
  """
  if mode not in DISTRIBUTED_MODES:
    raise ValueError(f"--distributed={mode!r}: choose one of {list(DISTRIBUTED_MODES)}.")
  explicit = coordinator_address is not None or num_processes is not None or process_id is not None
  if explicit:
    missing = [
      name
      for name, value in (
        ("--coordinator_address", coordinator_address),
        ("--num_processes", num_processes),
        ("--process_id", process_id),
      )
      if value is None
    ]
    if missing and cluster_environment() is None:
      raise ValueError(
        f"Multi-process start-up outside SLURM/TPU pods needs {', '.join(missing)} as well "
        "(the same --coordinator_address and --num_processes on every process, "
        "--process_id=0..N-1)."
      )
    if num_processes is not None and process_id is not None and not 0 <= process_id < num_processes:
      raise ValueError(f"--process_id={process_id} must lie in [0, --num_processes={num_processes}).")
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
    return True
  if mode == "no":
    return False
  detected = cluster_environment()
  if mode == "yes" or detected is not None:
    logging.info("Starting jax.distributed (%s).", detected or "mode=yes")
    jax.distributed.initialize()
    return True
  return False


def compile_together(jitted, *args, name: str, timeout_s: int = 3600) -> None:
  """Multi-process: compiles `jitted` for `args`, then waits until every process has compiled it too.

  Compilation takes unequal time on different hosts; a process that runs ahead
  would wait inside the step's first collective, whose set-up gives up after
  30 s on CPU (gloo). The coordination service's barrier waits as long as
  needed and touches no device. One process does nothing; jit reuses the
  executable compiled here.
  """
  if jax.process_count() == 1 or not hasattr(jitted, "lower"):
    return
  jitted.lower(*args).compile()
  jax_distributed.global_state.client.wait_at_barrier(f"simdis_jax_compiled_{name}", timeout_s * 1000)


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh over `devices` (default: all devices of all hosts), axis 'data'."""
  # jax.sharding.Mesh gives Auto axes, which jit's sharding propagation needs.
  return Mesh(np.asarray(jax.devices() if devices is None else devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding of a value copied on every device (the train state)."""
  return NamedSharding(mesh, P())


def replicated_abstract(tree, mesh: Mesh):
  """Shapes/dtypes of `tree` with a replicated sharding: the restore target of a train state."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated(mesh)), tree)


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Sharding that splits the leading (batch) axis over the data axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
  """Raises a clear error when the global batch cannot be split evenly over devices and hosts."""
  devices, hosts = mesh.devices.size, jax.process_count()
  if batch_size % devices or batch_size % hosts:
    raise ValueError(
      f"config.train.batch_size={batch_size} must be divisible by the number of devices "
      f"({devices}) and of processes ({hosts}); try {max(devices, 1) * max(1, batch_size // devices)}."
    )


def global_batch(local: np.ndarray, mesh: Mesh) -> jax.Array:
  """Assembles the global batch array from this process's slice of it."""
  return jax.make_array_from_process_local_data(batch_sharded(mesh), local)
