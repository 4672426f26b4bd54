"""Throughput of the streaming input: host tf.data pipeline per core and in total, and the device-side augmentations.

    python -m simdis_jax.tools.benchmark.input --config configs/imagenet/simdis_on_7v.py [--folder DIR] [--images 512]

With no --folder it writes ImageNet-like JPEGs (about 500×375, quality 90,
textured so that they compress like photographs) into a temporary folder and
reads them through exactly the pretraining pipeline: file read, random
resized crop fused with the JPEG decode, bicubic resize to the config's
image size, two views per source image, batch assembly and the copy into a
global jax.Array. The host figure is measured with tf.data limited to one
thread (per core) and with its default pool (all cores). The device figure
times the jitted flip / jitter / greyscale / blur / solarize / normalise of
both views. Prints a table and one JSON line.
"""

import json
import os
import statistics
import tempfile
import time
from typing import Dict

import jax
import ml_collections
import numpy as np

from simdis_jax import configuration, parallel
from simdis_jax.data import augment, pipeline


def write_imagenet_like_jpegs(folder: str, count: int, seed: int = 0) -> float:
  """`count` textured ~500×375 JPEGs (some portrait); returns their mean size in KB."""
  from PIL import Image  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(seed)
  os.makedirs(folder, exist_ok=True)
  sizes = []
  for i in range(count):
    h, w = (375, 500) if i % 4 else (500, 375)
    coarse = rng.uniform(0, 255, (h // 25 + 2, w // 25 + 2, 3))
    image = np.asarray(Image.fromarray(coarse.astype(np.uint8)).resize((w, h), Image.BICUBIC), np.float32)
    image += rng.normal(0, 18, (h, w, 3))  # texture: photographs are not smooth
    path = os.path.join(folder, f"img_{i:05d}.jpg")
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path, quality=90)
    sizes.append(os.path.getsize(path))
  return float(np.mean(sizes) / 1024)


def host_throughput(data: ml_collections.ConfigDict, batch: int, steps: int, threads: int) -> Dict[str, float]:
  """Source images/s of the train pipeline (two crops each) with tf.data limited to `threads` (0 = default)."""
  data = ml_collections.ConfigDict(data.to_dict())
  data.host_threads = threads
  ds = pipeline.load(data)
  mesh = parallel.make_mesh(jax.devices()[:1])
  it = ds.train_batches(0, 0, batch, mesh)
  next(it)  # start-up: file listing, graph building, first batch
  t0 = time.perf_counter()
  for _ in range(steps):
    _, images, _ = next(it)
  images.block_until_ready()
  elapsed = time.perf_counter() - t0
  return {"images_per_s": steps * batch / elapsed, "batch_s": elapsed / steps}


def device_augment_cost(aug, batch: int, size: int, repeats: int = 5) -> Dict[str, float]:
  """Median time of the jitted device-side augmentation of [batch, 2, size, size, 3] host crops."""
  fn = jax.jit(lambda key, crops: augment.two_views_of_crops(key, crops, aug))
  crops = jax.device_put(np.random.default_rng(0).integers(0, 256, (batch, 2, size, size, 3), dtype=np.uint8))
  key = jax.random.PRNGKey(0)
  jax.block_until_ready(fn(key, crops))
  times = []
  for i in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(jax.random.fold_in(key, i), crops))
    times.append(time.perf_counter() - t0)
  median = statistics.median(times)
  return {"batch_ms": 1e3 * median, "ms_per_image": 1e3 * median / batch, "device": jax.devices()[0].device_kind}


def run(config, folder: str, images: int, batch: int, steps: int, device_batch: int) -> Dict[str, float]:
  """All figures of the benchmark, as a dict."""
  data = configuration.data_config("folder")
  data.folder = folder
  data.image_size = int(config.data.image_size)
  data.augment = config.data.augment
  cores = os.cpu_count() or 1
  per_core = host_throughput(data, batch, steps, threads=1)
  total = host_throughput(data, batch, steps, threads=0)
  dev = device_augment_cost(config.data.augment, device_batch, int(config.data.image_size))
  return {
    "image_size": int(config.data.image_size),
    "views": 2,
    "batch": batch,
    "steps": steps,
    "folder_images": images,
    "host_cores": cores,
    "host_images_per_s_one_thread": per_core["images_per_s"],
    "host_images_per_s_all_cores": total["images_per_s"],
    "host_images_per_s_per_core": total["images_per_s"] / cores,
    "device_augment_ms_per_image": dev["ms_per_image"],
    "device_augment_batch": device_batch,
    "device": dev["device"],
  }


def main(argv) -> None:
  """Command line: see the module docstring."""
  del argv
  from absl import flags  # pylint: disable=import-outside-toplevel

  f = flags.FLAGS
  config = f.config
  with tempfile.TemporaryDirectory() as tmp:
    folder = f.folder
    kb = None
    if not folder:
      folder = os.path.join(tmp, "jpegs")
      kb = write_imagenet_like_jpegs(folder, f.images)
    results = run(config, folder, f.images, f.batch, f.steps, f.device_batch)
  results["mean_jpeg_kb"] = kb
  print(f"Input benchmark ({results['image_size']} px, two views per source image, {results['host_cores']} host cores)")
  if kb is not None:
    print(f"  source: {f.images} generated JPEGs, ~500x375, mean {kb:.0f} KB")
  print(f"  host pipeline, tf.data on 1 thread : {results['host_images_per_s_one_thread']:8.1f} source images/s")
  print(
    f"  host pipeline, all cores           : {results['host_images_per_s_all_cores']:8.1f} source images/s "
    f"({results['host_images_per_s_per_core']:.1f} per core)"
  )
  print(
    f"  device augmentations ({results['device']}): {results['device_augment_ms_per_image']:.2f} ms per source "
    f"image (both views, batch {f.device_batch})"
  )
  print(json.dumps(results))


if __name__ == "__main__":
  # The same config loading as simdis_jax.main and simdis_jax.benchmark: `file.py[:arg]` plus --config.* overrides.
  from absl import app, flags as absl_flags  # pylint: disable=import-outside-toplevel
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel

  config_flags.DEFINE_config_file(
    "config", None, "A pretraining config (its image size and augmentations).", lock_config=False
  )
  absl_flags.mark_flags_as_required(["config"])
  absl_flags.DEFINE_string("folder", "", "A folder of JPEGs to read (default: generate ImageNet-like ones).")
  absl_flags.DEFINE_integer("images", 1024, "How many JPEGs to generate.")
  absl_flags.DEFINE_integer("batch", 64, "Host batch (source images).")
  absl_flags.DEFINE_integer("steps", 12, "Timed batches per measurement.")
  absl_flags.DEFINE_integer("device_batch", 32, "Batch of the device augmentation timing.")
  app.run(main)
