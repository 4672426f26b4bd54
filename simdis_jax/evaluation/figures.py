"""The report's PNG figures: one run's training curves, and top-1 against pretraining epochs.

Plain matplotlib Figures on an Agg canvas (no pyplot global state, no
dependency on the user's backend); the report decides what goes in them.
"""

import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from simdis_jax import labels


def _new_figure(width: float, height: float, ncols: int = 1):
  # A Figure with an explicit Agg canvas: no pyplot global state, no dependency on the user's backend.
  fig = Figure(figsize=(width, height), dpi=100)
  FigureCanvasAgg(fig)
  axes = fig.subplots(1, ncols)
  return fig, np.atleast_1d(axes)


def _series(metrics: Dict[int, Dict[str, float]], key: str) -> Tuple[np.ndarray, np.ndarray]:
  steps = [s for s in metrics if key in metrics[s]]
  return np.asarray(steps, dtype=float), np.asarray([metrics[s][key] for s in steps], dtype=float)


def figure_file_name(run_name: str) -> str:
  """curves_<run>.png with characters unsafe in file names replaced."""
  return f"curves_{re.sub(r'[^A-Za-z0-9._-]+', '_', run_name) or 'run'}.png"


def plot_curves(metrics: Dict[int, Dict[str, float]], title: str, steps_per_epoch: Optional[float],
                path: str) -> None:
  """Losses (total, student, teacher, per head) and kNN top-1 over steps of one run, as a PNG."""
  fig, (ax_loss, ax_knn) = _new_figure(12, 4.5, ncols=2)
  fig.suptitle(title)

  heads = sorted({k for values in metrics.values() for k in values if k.startswith("loss_head/")})
  for key in heads:
    steps, values = _series(metrics, key)
    head = key.split("/", 1)[1]
    ax_loss.plot(steps, values, linewidth=0.7, alpha=0.7, label=f"head {labels.VIEW_NAMES.get(head, head)}")
  for key, label in (("loss", "total"), ("loss_student", "student"), ("loss_teacher", "teacher")):
    steps, values = _series(metrics, key)
    if steps.size:
      ax_loss.plot(steps, values, linewidth=2.0, marker="." if steps.size < 30 else None, label=label)
  ax_loss.set_title("training losses")
  ax_loss.set_xlabel("step")
  ax_loss.set_ylabel("loss")

  for network in ("student", "teacher"):
    steps, values = _series(metrics, f"knn_top1/{network}")
    if steps.size:
      ax_knn.plot(steps, values, marker="o", label=network)
  ax_knn.set_title("kNN top-1 (step 0 = untrained)")
  ax_knn.set_xlabel("step")
  ax_knn.set_ylabel("top-1 (%)")

  for ax in (ax_loss, ax_knn):
    if ax.lines:
      ax.legend(fontsize="small")
      ax.grid(alpha=0.3)
      if steps_per_epoch:
        # Epochs on the top axis: the paper's schedules are stated in epochs, the logs in steps.
        ax.secondary_xaxis("top", functions=(lambda s: s / steps_per_epoch,
                                             lambda e: e * steps_per_epoch)).set_xlabel("epoch")
    else:
      ax.text(0.5, 0.5, "nothing logged yet", ha="center", va="center", transform=ax.transAxes)
  fig.tight_layout()
  fig.savefig(path)


def figure3_key(item) -> Tuple[int, Any]:
  """Sort key of a ((method label, network, metric), points) series: Figure 3's method order first."""
  (method, network, metric), _ = item
  order = labels.FIGURE3_ORDER
  return (order.index(method) if method in order else len(order)), (method, network, metric)


def plot_accuracy_vs_epochs(rows: Sequence[Dict[str, Any]], path: str) -> None:
  """Top-1 against pretraining epochs, one series per method and metric (cf. the paper's Figs. 1 and 3)."""
  fig, (ax,) = _new_figure(7, 5)
  series: Dict[Tuple[str, str, str], List[Tuple[float, float]]] = {}
  for row in rows:
    if row["epochs"] is None:
      continue
    # Linear top-1 is the paper's measure; kNN stands in for runs not linearly evaluated yet.
    if row["linear_top1"] is not None:
      metric, value = "linear", row["linear_top1"]
    elif row["knn_top1"] is not None:
      metric, value = "kNN", row["knn_top1"]
    else:
      continue
    series.setdefault((row["method_label"], row["network"], metric), []).append((row["epochs"], value))
    if row["finished"] is False:
      # An unfinished run's point is not comparable to the finished ones at the same epochs: say so.
      ax.annotate("unfinished", (row["epochs"], value), textcoords="offset points", xytext=(4, 4),
                  fontsize="x-small", color="grey")
  for (method, network, metric), points in sorted(series.items(), key=figure3_key):
    points.sort()
    xs, ys = zip(*points)
    label = f"{method}{' teacher' if network != 'student' else ''} ({metric} top-1)"
    ax.plot(xs, ys, marker="o" if metric == "linear" else "s",
            linestyle="-" if metric == "linear" else "--", label=label)
  ax.set_xlabel("pretraining epochs")
  ax.set_ylabel("top-1 accuracy (%)")
  ax.set_title("Top-1 vs pretraining epochs (linear eval where available, else kNN)")
  if series:
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
  else:
    ax.text(0.5, 0.5, "no accuracies to plot", ha="center", va="center", transform=ax.transAxes)
  fig.tight_layout()
  fig.savefig(path)
