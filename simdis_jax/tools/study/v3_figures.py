"""Study v3's figures: Figure 1 against training cost and against epochs, Figure 3 at the longest schedule.

One colour per method in every figure (METHOD_COLORS), the references in grey, every marker kind in
the legend, 95% t-intervals on every point with two seeds or more, and single-seed points drawn hollow.
The cost of an offline arm counts its teacher's own training run (the paper's Table 1 does the same).
"""

import math
import os
from typing import Dict, List, Optional, Sequence

from simdis_jax.tools.study.significance import mean_interval

REFERENCE_GREY = "#7f7f7f"
METHOD_COLORS = {
  "byol_student": "#1f77b4",  # blue
  "simdis_off_7v": "#d62728",  # red
  "simdis_on_7v": "#ff7f0e",  # orange
  "simdis_off_2v": "#e377c2",  # pink
  "simdis_on_2v": "#bcbd22",  # olive
  "seed": "#2ca02c",  # green
  "moco_v2": "#9467bd",  # purple
  "supervised_standard": "#8c564b",  # brown
  "byol_teacher": "#000000",  # black
}
OFFLINE = ("simdis_off_7v", "simdis_off_2v", "seed")


def arm_points(study, recs, base: str, metric: str = "test_knn") -> List[Dict[str, float]]:
  """One method's points over the schedules: epochs, training PFLOP (teacher counted), mean, 95% CI, seeds."""
  points = []
  for epochs in (5, 10):
    m = study.chosen.get(base)
    runs = recs.get(f"{base}_lr{m}_e{epochs}", {}) if m else {}
    values = [r[metric] for r in runs.values() if math.isfinite(r[metric])]
    if not values:
      continue
    cost = [r["train_pflop"] for r in runs.values() if math.isfinite(r["train_pflop"])]
    cost = sum(cost) / len(cost) if cost else math.nan
    teacher_cost = 0.0
    if base in OFFLINE:
      t = recs.get(f"byol_teacher_lr{study.chosen.get('byol_teacher')}_e{epochs}", {}).get(0)
      teacher_cost = t["train_pflop"] if t else math.nan
    st = mean_interval(values)
    points.append(
      {
        "epochs": epochs,
        "pflop": cost + teacher_cost,
        "mean": st["mean"],
        "low": st["low"],
        "high": st["high"],
        "n": st["n"],
      }
    )
  return points


def _draw_arm(ax, x: List[float], points, color: str, label: str) -> None:
  """A method's line; filled markers with CI bars for several seeds, hollow markers for one seed."""
  ax.plot(x, [p["mean"] for p in points], "-", color=color, label=label, lw=1.5)
  for xi, p in zip(x, points):
    if p["n"] >= 2:
      ax.errorbar(
        [xi], [p["mean"]], yerr=[[p["mean"] - p["low"]], [p["high"] - p["mean"]]], fmt="o", color=color, capsize=3, ms=5
      )
    else:
      ax.plot([xi], [p["mean"]], "o", mfc="white", mec=color, ms=6)


def write_figure1(study, recs, references: Dict[str, float], path: str, methods: Sequence[str]) -> Optional[str]:
  """Figure 1: test kNN top-1 against training cost (teacher counted) and against epochs; None without data."""
  series = {b: arm_points(study, recs, b) for b in methods}
  series = {b: s for b, s in series.items() if s}
  if not series:
    return None
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel
  from matplotlib.lines import Line2D  # pylint: disable=import-outside-toplevel

  fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), sharey=True)
  for base, points in series.items():
    label = study.labels.get(base, base)
    _draw_arm(axes[0], [p["pflop"] for p in points], points, METHOD_COLORS.get(base, "k"), label)
    _draw_arm(axes[1], [p["epochs"] for p in points], points, METHOD_COLORS.get(base, "k"), label)
  for ax in axes:
    if "knn" in references:
      ax.axhline(references["knn"], color=REFERENCE_GREY, ls="--", lw=1)
    if "untrained" in references:
      ax.axhline(references["untrained"], color=REFERENCE_GREY, ls=":", lw=1)
    ax.grid(alpha=0.3)
  axes[0].set_xlabel("training cost (PFLOP; offline arms include their teacher's run)")
  axes[1].set_xlabel("schedule (epochs of the 50k training images)")
  axes[1].set_xticks([5, 10])
  axes[0].set_ylabel("student kNN top-1 on the test set (%)")
  handles, labels = axes[1].get_legend_handles_labels()
  handles += [
    Line2D([], [], color="k", marker="o", ls="", label="mean of ≥ 2 seeds, bar: 95% CI"),
    Line2D([], [], color="k", marker="o", mfc="white", ls="", label="one seed"),
    Line2D([], [], color=REFERENCE_GREY, ls="--", label="raw pixels (kNN)"),
    Line2D([], [], color=REFERENCE_GREY, ls=":", label="untrained student"),
  ]
  fig.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)
  fig.suptitle("Figure 1 on Fashion-MNIST (study v3): accuracy against cost and against schedule", fontsize=10)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
  plt.close(fig)
  return path


def write_figure3(
  study, recs, references: Dict[str, float], path: str, methods: Sequence[str], epochs: int = 10
) -> Optional[str]:
  """Figure 3: each method's student at `epochs`, test kNN and linear (fast) top-1 with 95% CIs; None without data."""
  rows = []
  for base in methods:
    m = study.chosen.get(base)
    runs = recs.get(f"{base}_lr{m}_e{epochs}", {}) if m else {}
    stats = {
      k: mean_interval([r[k] for r in runs.values() if math.isfinite(r[k])]) for k in ("test_knn", "test_linear")
    }
    if stats["test_knn"]["n"]:
      rows.append((base, stats))
  if not rows:
    return None
  import matplotlib  # pylint: disable=import-outside-toplevel

  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=import-outside-toplevel
  from matplotlib.lines import Line2D  # pylint: disable=import-outside-toplevel

  fig, axes = plt.subplots(1, 2, figsize=(12, 0.5 * len(rows) + 1.8), sharey=True)
  for ax, metric, ref, title in (
    (axes[0], "test_knn", "knn", "kNN top-1 (%)"),
    (axes[1], "test_linear", "linear", "linear (fast) top-1 (%)"),
  ):
    for y, (base, stats) in enumerate(rows):
      st, color = stats[metric], METHOD_COLORS.get(base, "k")
      if not st["n"]:
        continue
      if st["n"] >= 2:
        ax.errorbar(
          [st["mean"]], [y], xerr=[[st["mean"] - st["low"]], [st["high"] - st["mean"]]], fmt="o", color=color, capsize=3
        )
      else:
        ax.plot([st["mean"]], [y], "o", mfc="white", mec=color, ms=6)
      ax.annotate(
        f"{st['mean']:.2f} (n={st['n']})",
        (st["mean"], y),
        textcoords="offset points",
        xytext=(0, 7),
        ha="center",
        fontsize=7,
      )
    if ref in references:
      ax.axvline(references[ref], color=REFERENCE_GREY, ls="--", lw=1)
    ax.set_xlabel(f"student {title} on the test set, {epochs} epochs")
    ax.grid(alpha=0.3, axis="x")
  axes[0].set_yticks(range(len(rows)))
  axes[0].set_yticklabels([study.labels.get(b, b) for b, _ in rows], fontsize=8)
  axes[0].set_ylim(-0.7, len(rows) - 0.3)
  handles = [
    Line2D([], [], color="k", marker="o", ls="", label="mean of ≥ 2 seeds, bar: 95% CI"),
    Line2D([], [], color="k", marker="o", mfc="white", ls="", label="one seed"),
    Line2D([], [], color=REFERENCE_GREY, ls="--", label="raw pixels"),
  ]
  fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, fontsize=8, frameon=False)
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110, bbox_inches="tight", metadata={"Software": None})
  plt.close(fig)
  return path
