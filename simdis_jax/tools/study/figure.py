"""The study's figure: bars of linear and kNN top-1 (mean ± std, seeds as dots) per preset, with the references."""

import math
import os
from typing import Dict, Optional


def write_figure(study, agg: Dict[str, Dict], path: str) -> Optional[str]:
  """Draws the study's three panels (linear full, linear fast, kNN) into `path`; None if no run has finished."""
  import matplotlib  # pylint: disable=import-outside-toplevel  (the report is the only user; keeps imports light)

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

  presets = [p for p, e in agg.items() if e["runs"]]
  if not presets:
    return None
  panels = tuple(zip(("linear_top1", "fast_linear_top1", "knn_top1"), study.figure_panel_titles))
  fig, axes = plt.subplots(1, 3, figsize=(17, 0.45 * len(presets) + 1.8), sharey=True)
  for ax, (metric, title) in zip(axes, panels):
    ys = list(range(len(presets)))[::-1]
    for y, preset in zip(ys, presets):
      m, s, _ = agg[preset].get(metric, (float("nan"), 0.0, 0))
      if not math.isfinite(m):
        continue
      color = "C0" if preset in study.central else study.figure_colors.get(preset, "C7")
      ax.barh(y, m, xerr=s, color=color, alpha=0.75, capsize=3)
      for row in agg[preset]["runs"].values():
        ax.plot(row[metric], y, "k.", ms=4)
      ax.text(m, y, f" {m:.1f}", va="center", fontsize=8)
    panel = "knn" if metric == "knn_top1" else "linear"
    for _, value, short, where in study.references:
      if where != panel:
        continue
      ax.axvline(value, color="C3", ls="--", lw=1)
      ax.text(value, -0.45, short, rotation=90, va="bottom", ha="right", fontsize=7, color="C3")
    finite = [agg[p][metric][0] for p in presets if metric in agg[p] and math.isfinite(agg[p][metric][0])]
    low = min(finite) if finite else 80.0
    ax.set_xlim(max(0.0, min(low, 80.0) - 3.0), 96.0)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
  axes[0].set_yticks(list(range(len(presets)))[::-1])
  axes[0].set_yticklabels([study.labels.get(p, p) for p in presets], fontsize=8)
  fig.suptitle(study.figure_title, fontsize=10)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
