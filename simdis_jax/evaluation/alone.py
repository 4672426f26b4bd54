"""The student trained alone beside the distilled one (config.final_eval.student_alone): the demo's comparison.

After a distilling run (SimDis-Off/On, SEED) in <workdir>, the same student network is pretrained
with BYOL alone in <workdir>/alone, with the same steps, batch, optimizer, seed (so the same data
order) and kNN settings. The table then puts the distilled student, the student alone, the teacher
and raw pixels side by side, every kNN on the same training / test subsets.
"""

import os
from typing import Dict, Optional

import ml_collections
import numpy as np

from simdis_jax import configuration, methods
from simdis_jax.methods import recipes
from simdis_jax import workdir as workdir_files

ALONE_DIR = "alone"


def alone_config(config) -> ml_collections.ConfigDict:
  """The distilling config turned into BYOL on its student alone (same network, schedule, seed, data, kNN)."""
  c = ml_collections.ConfigDict(config.to_dict())
  recipes.student_alone(c)
  c.teacher.workdir = ""
  c.knn.networks = tuple(n for n in c.knn.networks if n == "student")
  c.final_eval.linear_networks = tuple(n for n in c.final_eval.linear_networks if n == "student")
  c.final_eval.student_alone = False
  c.final_eval.report = False
  return configuration.validate(c)


def train_alone(config, workdir: str) -> Dict[str, float]:
  """Pretrains the student alone in <workdir>/alone (resumes or just reads back a finished run)."""
  from simdis_jax import train  # pylint: disable=import-outside-toplevel

  return train.train_and_evaluate(alone_config(config), os.path.join(workdir, ALONE_DIR))


def raw_pixel_knn(config) -> Dict[str, float]:
  """Weighted cosine kNN top-1 (%) on raw pixels, on the kNN's own training / test subsets, two ways.

  "normalised": the networks' own input, scaled to [0, 1] and normalised by the dataset's mean and std
  (evaluation/raw_pixels.py, the studies' reference); "0..1": the pixels scaled to [0, 1] only. On
  Fashion-MNIST the normalised pixels are the stronger baseline (85.69 against 84.59 on the full splits).
  """
  from simdis_jax.evaluation import raw_pixels  # pylint: disable=import-outside-toplevel
  from simdis_jax.data import input as data_input  # pylint: disable=import-outside-toplevel
  from simdis_jax.evaluation import knn  # pylint: disable=import-outside-toplevel

  dataset = data_input.load_dataset(config.data)
  if not hasattr(dataset, "split"):
    raise ValueError(f"The raw-pixel kNN needs an in-memory dataset; {config.data.name!r} is streamed.")
  k = config.knn
  bank, bank_y = data_input.subset(*dataset.split("train"), k.train_examples, config.seed)
  queries, query_y = data_input.subset(*dataset.split("eval"), k.eval_examples, config.seed + 1)
  channels = len(config.data.augment.mean)
  out = {}
  for name, (mean, std) in (
    ("normalised", (config.data.augment.mean, config.data.augment.std)),
    ("0..1", ((0.0,) * channels, (1.0,) * channels)),
  ):
    pred, _ = knn.knn_classify(
      raw_pixels.pixel_features(np.asarray(bank), mean, std),
      np.asarray(bank_y),
      raw_pixels.pixel_features(np.asarray(queries), mean, std),
      k.k,
      k.temperature,
      dataset.num_classes,
    )
    out[name] = float(100.0 * np.mean(pred == np.asarray(query_y)))
  return out


def _subset(n: int, split: str) -> str:
  return f"all {split}" if not n else f"{n:,} {split}"


def table(
  config, workdir: str, linear_results: Optional[Dict[str, Dict]] = None, raw_knn: Optional[Dict[str, float]] = None
) -> str:
  """Plain-text table: distilled student, student alone, teacher, raw pixels (kNN, linear where run)."""
  linear_results = linear_results or {}
  distilled = workdir_files.read_json(workdir, workdir_files.SUMMARY_FILE) or {}
  alone_dir = os.path.join(workdir, ALONE_DIR)
  alone = workdir_files.read_json(alone_dir, workdir_files.SUMMARY_FILE) or {}
  alone_linear = workdir_files.read_json(os.path.join(alone_dir, "linear_student"), workdir_files.LINEAR_EVAL_FILE)
  from simdis_jax.evaluation.report import method_label  # pylint: disable=import-outside-toplevel

  method = method_label(config.method, config.views)
  steps = distilled.get("steps", config.train.steps)
  rows = [
    ("network", "kNN top-1", "linear top-1"),
    (
      f"student distilled ({method}, {steps} steps)",
      distilled.get("knn_top1/student"),
      linear_results.get("student", {}).get("top1"),
    ),
    (
      f"student alone (BYOL, {alone.get('steps', steps)} steps)",
      alone.get("knn_top1/student"),
      (alone_linear or {}).get("top1"),
    ),
    ("student untrained (step 0)", distilled.get("knn_top1/student_init"), None),
    (
      "teacher (frozen)" if methods.teacher_kind(config) == "offline" else "teacher",
      distilled.get("knn_top1/teacher"),
      linear_results.get("teacher", {}).get("top1"),
    ),
    *((f"raw pixels ({name}), no network", value, None) for name, value in (raw_knn or {}).items()),
  ]
  rows = [r for r in rows[:1] + [r for r in rows[1:] if r[1] is not None or r[2] is not None]]
  cells = [rows[0]] + [(n, _cell(a), _cell(b)) for n, a, b in rows[1:]]
  if all(c[2] == "-" for c in cells[1:]):
    cells = [c[:2] for c in cells]
  widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
  lines = ["  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(c, widths))) for c in cells]
  lines.insert(1, "  ".join("-" * w for w in widths))
  k = config.knn
  held_out = "validation" if config.data.get("holdout", "none") == "validation" else "test"  # the kNN's queries
  return "\n".join(
    [
      "",
      f"{config.data.name} {held_out} top-1 (%), kNN k={k.k} on "
      f"{_subset(k.train_examples, 'training')} / {_subset(k.eval_examples, held_out)} images:",
      *lines,
    ]
  )


def _cell(value) -> str:
  return "-" if value is None else f"{value:.1f}"
