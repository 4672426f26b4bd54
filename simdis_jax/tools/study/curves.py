"""The study's top-1-versus-epochs figures (the paper's Figures 1 and 3), drawn from the finished runs' records.

A preset named `<method>_e<N>` is <method> trained on an N-epoch schedule (configs/fashion_mnist/long.py);
each figure draws one line per method through its schedules (mean ± std over seeds, seeds as dots), the
teacher's own kNN curve (monitored during its run), and the baselines as horizontal lines: the raw-pixel
references of the study and the untrained student.
"""

import math
import os
import re
from typing import Dict, List, Optional, Tuple

from simdis_jax import workdir as workdir_files
from simdis_jax.tools.study.plan import run_dir, teacher_run

SCHEDULE = re.compile(r"(.+)_e(\d+)")
PANELS = ("linear_top1", "fast_linear_top1", "knn_top1")
UNTRAINED = "untrained student"  # the short name of the untrained student's baseline
DRAW_BELOW = 10.0  # a baseline this far under the lowest run is still drawn; further down it is named at the edge


def schedule(preset: str) -> Optional[Tuple[str, int]]:
  """'simdis_off_7v_e20' -> ('simdis_off_7v', 20); None for a preset without a schedule suffix."""
  match = SCHEDULE.fullmatch(preset)
  return (match.group(1), int(match.group(2))) if match else None


def method_points(agg: Dict[str, Dict], method: str, metric: str) -> List[Tuple[int, float, float, List[float]]]:
  """[(epochs, mean, std, per-seed values)] of `method`'s finished schedules, shortest first."""
  points = []
  for preset, entry in agg.items():
    parsed = schedule(preset)
    if parsed is None or parsed[0] != method or not entry["runs"]:
      continue
    mean, std, _ = entry.get(metric, (float("nan"), 0.0, 0))
    if math.isfinite(mean):
      points.append((parsed[1], mean, std, [row[metric] for row in entry["runs"].values()]))
  return sorted(points)


def monitored_knn(directory: str) -> List[Tuple[float, float]]:
  """[(epoch, kNN top-1)] logged during a run (its knn_every_steps evaluations), from its metrics.jsonl."""
  summary = workdir_files.read_json(directory, workdir_files.SUMMARY_FILE) or {}
  steps, epochs = summary.get("steps"), summary.get("epochs")
  if not steps or not epochs or not os.path.exists(os.path.join(directory, workdir_files.METRICS_FILE)):
    return []
  rows = workdir_files.read_metrics(directory)
  return [
    (step * epochs / steps, row["knn_top1/student"]) for step, row in sorted(rows.items()) if "knn_top1/student" in row
  ]


def baselines(study, agg: Dict[str, Dict], metric: str) -> List[Tuple[float, str]]:
  """[(value, short name)]: the study's references for this panel and the untrained student's figure."""
  panel = "knn" if metric == "knn_top1" else "linear"
  lines = [(value, short) for _, value, short, where in study.references if where == panel]
  untrained = agg.get(study.get("untrained_preset", "untrained_student"), {}).get(metric)
  if untrained and untrained[2] and math.isfinite(untrained[0]):
    lines.append((untrained[0], UNTRAINED))
  return lines


def y_limits(shown: List[float], lines: List[Tuple[float, str]]) -> Tuple[float, float, List[Tuple[float, str]]]:
  """(low, high, lines drawn) of one panel: the runs and the raw-pixel references set the range, and the
  untrained student's line widens it when it lies within DRAW_BELOW points under that range's bottom. Further
  down (linear full: 43% against runs at 77-89%) it would flatten every curve; the caller names it at the edge."""
  ranged = shown + [v for v, s in lines if s != UNTRAINED]
  low, high = min(ranged) - 2.0, max(ranged) + 1.5
  drawn = [(v, s) for v, s in lines if s != UNTRAINED or v >= low - DRAW_BELOW]
  low = min([low] + [v - 1.0 for v, _ in drawn])
  return low, high, drawn


def write_epoch_figure(study, agg: Dict[str, Dict], workdir: str, spec, path: str) -> Optional[str]:
  """Draws one top-1-vs-epochs figure (spec: title, methods, with_teacher) into `path`; None if nothing finished."""
  import matplotlib  # pylint: disable=import-outside-toplevel  (the report is the only user; keeps imports light)

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  methods = [m for m in spec["methods"] if any(method_points(agg, m, p) for p in PANELS)]
  if not methods:
    return None
  teacher_preset, teacher_seed = teacher_run(study)
  fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
  ticks = sorted({p[0] for m in methods for metric in PANELS for p in method_points(agg, m, metric)})
  for ax, metric, title in zip(axes, PANELS, study.figure_panel_titles):
    for i, method in enumerate(methods):
      points = method_points(agg, method, metric)
      if not points:
        continue
      color = f"C{i}"
      ax.errorbar(
        [p[0] for p in points],
        [p[1] for p in points],
        yerr=[p[2] for p in points],
        marker="o",
        color=color,
        capsize=3,
        label=study.method_labels.get(method, method),
      )
      for x, _, _, seeds in points:
        ax.plot([x] * len(seeds), seeds, ".", color=color, ms=3, alpha=0.6)
    if spec.get("with_teacher"):
      teacher = agg.get(teacher_preset, {})
      curve = monitored_knn(run_dir(workdir, teacher_preset, teacher_seed)) if metric == "knn_top1" else []
      curve = [c for c in curve if c[0] > 0]  # epoch 0 has no place on a log axis; the untrained line stands for it
      if curve:
        ax.plot(
          [c[0] for c in curve],
          [c[1] for c in curve],
          "k--",
          lw=1,
          label=f"{study.labels.get(teacher_preset)} (monitored)",
        )
      elif teacher.get(metric) and teacher[metric][2] and schedule(teacher_preset):
        ax.plot(schedule(teacher_preset)[1], teacher[metric][0], "k*", ms=10, label=study.labels.get(teacher_preset))
    ax.set_xscale("log")
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.minorticks_off()
    lines = baselines(study, agg, metric)
    low, high, drawn = y_limits([y for line in ax.get_lines() for y in line.get_ydata()], lines)
    ax.set_ylim(low, high)  # a baseline far below the runs is named at the bottom edge, not drawn off scale
    left = ax.get_xlim()[0]
    for value, short in lines:
      color = "C7" if short == UNTRAINED else "C3"
      if (value, short) not in drawn:
        ax.text(left, low, f" {short}: {value:.1f} (below)", va="bottom", fontsize=7, color=color)
        continue
      ax.axhline(value, color=color, ls=":" if short == UNTRAINED else "--", lw=1)
      ax.text(left, value, f" {short}", va="bottom", fontsize=7, color=color)
    ax.set_title(title)
    ax.set_xlabel("pretraining epochs (schedule length)")
    ax.grid(alpha=0.3)
  axes[-1].legend(fontsize=7, loc="lower right")
  fig.suptitle(spec["title"], fontsize=10)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
