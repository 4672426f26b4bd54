"""The report's PNG figures: one run's training curves, and top-1 against pretraining epochs.

Plain matplotlib Figures on an Agg canvas (no pyplot global state, no
dependency on the user's backend); the report decides what goes in them.
"""

import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import matplotlib
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


def plot_curves(
  metrics: Dict[int, Dict[str, float]],
  title: str,
  steps_per_epoch: Optional[float],
  path: str,
  frozen_teacher: bool = False,
) -> Figure:
  """Losses (total, student, teacher, per head) and kNN top-1 over steps of one run, as a PNG.

  `frozen_teacher`: the run's teacher was restored trained and never moves (SimDis-Off, SEED), so its kNN
  at step 0 is a trained network's, not an untrained one's.
  """
  fig, (ax_loss, ax_knn) = _new_figure(14, 4.8, ncols=2)
  fig.suptitle(title)

  heads = sorted({k for values in metrics.values() for k in values if k.startswith("loss_head/")})
  # Seven heads need seven colours that can be told apart (tab10's first seven), none shared with the student,
  # teacher and total curves (grey, olive, black).
  palette = matplotlib.colormaps["tab10"]
  for i, key in enumerate(heads):
    steps, values = _series(metrics, key)
    head = key.split("/", 1)[1]
    ax_loss.plot(
      steps, values, linewidth=0.9, alpha=0.85, color=palette(i % 10), label=f"head {labels.VIEW_NAMES.get(head, head)}"
    )
  total = _series(metrics, "loss")
  student = _series(metrics, "loss_student")
  # BYOL and SimDis-Off train the student alone: total == student, drawn dashed on top so both stay visible.
  same = total[0].size and np.array_equal(total[0], student[0]) and np.allclose(total[1], student[1])
  for key, label, style in (
    ("loss_student", "student", dict(color="dimgrey", linewidth=2.5)),
    ("loss_teacher", "teacher", dict(color="tab:olive", linewidth=2.0)),
    ("loss", "total (= student)" if same else "total", dict(color="black", linewidth=1.6, linestyle="--", zorder=5)),
  ):
    steps, values = _series(metrics, key)
    if steps.size:
      ax_loss.plot(steps, values, marker="." if steps.size < 30 else None, label=label, **style)
  ax_loss.set_title("training losses")
  ax_loss.set_xlabel("step")
  ax_loss.set_ylabel("loss")

  for network in ("student", "teacher"):
    steps, values = _series(metrics, f"knn_top1/{network}")
    if steps.size:
      frozen = network == "teacher" and frozen_teacher
      ax_knn.plot(steps, values, marker="o", label=f"{network} (frozen, trained)" if frozen else network)
  ax_knn.set_title(knn_panel_title(frozen_teacher))
  ax_knn.set_xlabel("step")
  ax_knn.set_ylabel("top-1 (%)")

  for ax in (ax_loss, ax_knn):
    if ax.lines:
      # Outside the axes, so that no legend covers a curve.
      ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
      ax.grid(alpha=0.3)
      if steps_per_epoch:
        # Epochs on the top axis: the paper's schedules are stated in epochs, the logs in steps.
        ax.secondary_xaxis("top", functions=(lambda s: s / steps_per_epoch, lambda e: e * steps_per_epoch)).set_xlabel(
          "epoch"
        )
    else:
      ax.text(0.5, 0.5, "nothing logged yet", ha="center", va="center", transform=ax.transAxes)
  fig.tight_layout()
  fig.savefig(path)
  return fig


def knn_panel_title(frozen_teacher: bool) -> str:
  """The kNN panel's title: what step 0 is (a teacher restored trained and frozen is not untrained there)."""
  return "kNN top-1 (step 0 = the student untrained" + (
    "; the teacher is trained and frozen)" if frozen_teacher else ")"
  )


def plot_embedding_maps(
  maps: Dict[str, Tuple[np.ndarray, np.ndarray]], class_names: Optional[Sequence[str]], title: str, path: str
) -> None:
  """One panel per network: its 2-D points ({network: (xy [N, 2], labels [N])}) coloured by class, as a PNG."""
  fig, axes = _new_figure(6 * len(maps) + 2, 5.5, ncols=len(maps))
  fig.suptitle(title)
  palette = matplotlib.colormaps["tab10" if max(int(l.max()) for _, l in maps.values()) < 10 else "tab20"]
  for ax, (network, (xy, classes)) in zip(axes, maps.items()):
    size = min(30.0, max(4.0, 8000.0 / len(classes)))  # 2,000 points small, a hundred still visible
    for c in np.unique(classes):
      pick = classes == c
      name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
      ax.scatter(xy[pick, 0], xy[pick, 1], s=size, color=palette(int(c) % palette.N), label=name, linewidths=0)
    ax.set_title(f"{network} ({len(classes)} test images)")
    ax.set_xticks([])
    ax.set_yticks([])
  axes[-1].legend(fontsize="small", markerscale=3, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
  fig.tight_layout()
  fig.savefig(path)


def figure3_key(item) -> Tuple[int, Any]:
  """Sort key of a ((method label, network, metric[, architecture]), points) series: Figure 3's order first."""
  (method, network, metric, *arch), _ = item  # (…, architecture) in the report's series
  order = labels.FIGURE3_ORDER
  return (order.index(method) if method in order else len(order)), (method, network, metric, *arch)


def accuracy_series(rows: Sequence[Dict[str, Any]]) -> Dict[Tuple[str, str, str, str], List[Tuple[float, float]]]:
  """{(method label, network, metric, architecture): [(epochs, top-1)]} of the report's rows."""
  series: Dict[Tuple[str, str, str, str], List[Tuple[float, float]]] = {}
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
    # The architecture is part of the series: runs of different networks are not one curve.
    series.setdefault((row["method_label"], row["network"], metric, row.get("encoder") or ""), []).append(
      (row["epochs"], value)
    )
  return series


def plot_accuracy_vs_epochs(rows: Sequence[Dict[str, Any]], path: str) -> None:
  """Top-1 against pretraining epochs, one series per method, network, architecture and metric (cf. Figs. 1, 3)."""
  fig, (ax,) = _new_figure(10, 5)
  series = accuracy_series(rows)
  for row in rows:
    value = row["linear_top1"] if row["linear_top1"] is not None else row["knn_top1"]
    if row["epochs"] is not None and value is not None and row["finished"] is False:
      # An unfinished run's point is not comparable to the finished ones at the same epochs: say so.
      ax.annotate(
        "unfinished",
        (row["epochs"], value),
        textcoords="offset points",
        xytext=(4, 4),
        fontsize="x-small",
        color="grey",
      )
  for (method, network, metric, arch), points in sorted(series.items(), key=figure3_key):
    points.sort()
    xs, ys = zip(*points)
    label = f"{method} {network} {arch} ({metric} top-1)".replace("  ", " ")
    ax.plot(
      xs, ys, marker="o" if metric == "linear" else "s", linestyle="-" if metric == "linear" else "--", label=label
    )
  ax.set_xlabel("pretraining epochs")
  ax.set_ylabel("top-1 accuracy (%)")
  ax.set_title("Top-1 vs pretraining epochs (linear eval where available, else kNN)")
  if series:
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.grid(alpha=0.3)
  else:
    ax.text(0.5, 0.5, "no accuracies to plot", ha="center", va="center", transform=ax.transAxes)
  fig.tight_layout()
  fig.savefig(path)
