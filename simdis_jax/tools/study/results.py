"""A study's figures: each finished run's numbers read from its workdir, and their mean ± std per preset."""

import math
import os
from typing import Dict, Optional

from simdis_jax import workdir as workdir_files
from simdis_jax.tools.study.plan import FAST_LINEAR_DIR, STUDENT_LINEAR_DIR, is_done, parse_runs, run_dir
from simdis_jax.tools.study.significance import mean_std


def collect(study, directory: str) -> Optional[Dict[str, float]]:
  """One finished run's figures (nan where a figure is missing), or None."""
  if not is_done(study, directory):
    return None
  summary = workdir_files.read_json(directory, workdir_files.SUMMARY_FILE)
  linear = workdir_files.read_json(directory, os.path.join(STUDENT_LINEAR_DIR, workdir_files.LINEAR_EVAL_FILE))
  info = workdir_files.read_json(directory, workdir_files.RUN_INFO_FILE) or {}
  fast = workdir_files.read_json(directory, os.path.join(FAST_LINEAR_DIR, workdir_files.LINEAR_EVAL_FILE)) or {}
  init = summary.get("knn_top1/student_init")
  if init is None:  # the summary of a resumed run lacks it: step 0's kNN line of the first process
    init = workdir_files.read_metrics(directory).get(0, {}).get("knn_top1/student")
  row = {
    "linear_top1": linear["top1"],
    "linear_top5": linear["top5"],
    "fast_linear_top1": fast.get("top1"),
    "knn_top1": summary.get("knn_top1/student"),
    "knn_top1_init": init,
    "teacher_knn_top1": summary.get("knn_top1/teacher"),
    "train_minutes": summary.get("train_time_s", float("nan")) / 60,
    "linear_minutes": linear.get("wall_time_s", float("nan")) / 60,
    "step_gflops": (summary.get("step_flops") or info.get("step_flops") or float("nan")) / 1e9,
    "epochs": summary.get("epochs"),
    "steps": summary.get("steps"),
    "linear_epochs": linear.get("epochs"),
    "images_per_sec": summary.get("images_per_sec"),
  }
  return {k: (float(v) if v is not None else float("nan")) for k, v in row.items()}


def aggregate(study, workdir: str) -> Dict[str, Dict]:
  """preset -> {"seeds": [...], "runs": {seed: row}, metric: (mean, std, n)} for every preset of the study."""
  out = {}
  for preset, seed in parse_runs(study.runs):
    entry = out.setdefault(preset, {"seeds": [], "runs": {}})
    entry["seeds"].append(seed)
    row = collect(study, run_dir(workdir, preset, seed))
    if row is not None:
      entry["runs"][seed] = row
  for entry in out.values():
    metrics = sorted({k for row in entry["runs"].values() for k in row})
    for metric in metrics:
      entry[metric] = mean_std([row[metric] for row in entry["runs"].values()])
  return out


def finite_sum(agg: Dict[str, Dict], metric: str) -> float:
  """The sum of a per-run figure over every finished run of the study (its missing values left out)."""
  return sum(r[metric] for e in agg.values() for r in e["runs"].values() if math.isfinite(r[metric]))


def results_json(agg: Dict[str, Dict]) -> Dict[str, Dict]:
  """The aggregate as results.json holds it: seeds as strings, (mean, std, n) as lists."""
  return {
    p: {
      "seeds": e["seeds"],
      "runs": {str(s): r for s, r in e["runs"].items()},
      **{k: list(v) for k, v in e.items() if k not in ("seeds", "runs")},
    }
    for p, e in agg.items()
  }
