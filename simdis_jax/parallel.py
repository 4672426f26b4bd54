"""Device mesh and global arrays: one data axis over every device of every host."""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


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
    raise ValueError(f"config.train.batch_size={batch_size} must be divisible by the number of devices "
                     f"({devices}) and of processes ({hosts}); try {max(devices, 1) * max(1, batch_size // devices)}.")


def global_batch(local: np.ndarray, mesh: Mesh) -> jax.Array:
  """Assembles the global batch array from this process's slice of it."""
  return jax.make_array_from_process_local_data(batch_sharded(mesh), local)
