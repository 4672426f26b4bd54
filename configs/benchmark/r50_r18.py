"""Throughput benchmark: ResNet-50 teacher -> ResNet-18 student, ImageNet stem, LARS, at a small image size.

The CPU speed target (SimDis-On-7v at 64 px, batch 32 and 64):

    python -m simdis_jax.benchmark --config configs/benchmark/r50_r18.py:on_7v,32 --steps 10
    python -m simdis_jax.benchmark --config configs/benchmark/r50_r18.py:on_7v,64 --steps 10

The argument is `<variant>[,<global batch>[,<image size>]]` (default on_7v,64,64):
variant `on_7v` (SimDis-On-7v), `on` (SimDis-On, 2 views), `off` (SimDis-Off,
2 views; the benchmark gives the frozen teacher random weights), `byol_r50`
(the offline teacher's own BYOL run) or `byol_r18` (the student alone). The
networks, heads, optimizer (LARS, authors' form) and SyncBN are the paper's
standard setting; only batch and image size are small. The same config also
trains (it needs the ImageNet input pipeline, docs/input.md):

    python -m simdis_jax.main --config configs/benchmark/r50_r18.py:on_7v,64 --workdir workdirs/bench
"""

from simdis_jax import configuration

VARIANTS = {  # variant: (method, views preset, student depth)
  "on_7v": ("simdis_on", "simdis_7v", 18),
  "on": ("simdis_on", "simdis_2v", 18),
  "off": ("simdis_off", "simdis_2v", 18),
  "byol_r50": ("byol", "byol", 50),
  "byol_r18": ("byol", "byol", 18),
}


def get_config(arg=None):
  parts = (arg or "on_7v").split(",")
  variant = parts[0]
  if variant not in VARIANTS:
    raise ValueError(f"Unknown variant {variant!r}; choose one of {sorted(VARIANTS)}.")
  batch = int(parts[1]) if len(parts) > 1 else 64
  size = int(parts[2]) if len(parts) > 2 else 64
  method, views, student_depth = VARIANTS[variant]
  c = configuration.base_config()
  c.method = method
  c.views = configuration.VIEW_PRESETS[views]
  c.model.student = configuration.network_config(student_depth, 64, False, 4096, 256)
  c.teacher.workdir = "workdirs/imagenet_byol_r50"  # SimDis-Off only; the benchmark does not read it
  c.train.batch_size = batch
  c.data.image_size = size
  c.knn.networks = ("student",) if method == "byol" else ("student", "teacher")
  return c
