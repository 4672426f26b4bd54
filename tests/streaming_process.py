"""One process of the two-process streaming test: reads its folder shard, assembles global batches, saves them."""

import os
import sys

# The flags of conftest.xla_flags(2).
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=0"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402  pylint: disable=wrong-import-position
import numpy as np  # noqa: E402  pylint: disable=wrong-import-position
from jax.experimental import multihost_utils  # noqa: E402  pylint: disable=wrong-import-position


def main(port: str, process_id: str, folder: str, out: str) -> None:
  jax.config.update("jax_platforms", "cpu")
  jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=int(process_id))
  from simdis_jax import configuration, parallel  # pylint: disable=import-outside-toplevel
  from simdis_jax.data import pipeline  # pylint: disable=import-outside-toplevel

  data = configuration.data_config("folder")
  data.folder, data.image_size = folder, 16
  ds = pipeline.load(data)
  mesh = parallel.make_mesh()
  it = ds.train_batches(0, 0, 8, mesh)
  saved = {}
  for _ in range(2):
    step, images, _ = next(it)
    assert images.shape == (8, 2, 16, 16, 3) and len(images.addressable_shards) == 2
    saved[f"local{step}"] = np.concatenate([np.asarray(s.data) for s in images.addressable_shards])
    saved[f"global{step}"] = multihost_utils.process_allgather(images, tiled=True)
  it.close()  # stops the prefetch thread
  saved["files"] = ds.train.files
  np.savez(os.path.join(out, f"process{process_id}.npz"), **saved)


if __name__ == "__main__":
  main(*sys.argv[1:])
