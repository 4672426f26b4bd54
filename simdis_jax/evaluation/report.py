"""Results report: a markdown/JSON table and PNG figures from pretraining and linear-evaluation workdirs.

Usage: python -m simdis_jax.report <workdir> [<workdir> ...] --out <dir>

Reads only the files a run leaves behind (config.json, run_info.json,
metrics.jsonl, summary.json, linear_eval.json). It deliberately imports
neither JAX nor the model code, so a report can be made on any machine that
has the workdirs, including while the runs are still training.
"""

import argparse
import dataclasses
import json
import math
import os
import re
import sys
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# File names written by simdis_jax/train.py, checkpoint.py and evaluation/linear.py. Repeated here
# rather than imported because importing those modules pulls in JAX.
CONFIG_FILE = "config.json"
RUN_INFO_FILE = "run_info.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
LINEAR_EVAL_FILE = "linear_eval.json"
LINEAR_INFO_FILE = "linear_info.json"  # written by linear.py from its start, with the absolute pretrained path

RESULTS_MD = "results.md"
RESULTS_JSON = "results.json"
ACCURACY_FIGURE = "accuracy_vs_epochs.png"

# The paper's names of the target views (same table as simdis.PAPER_NAMES; tests check they agree).
PAPER_VIEW_NAMES = {"s_dv": "S-v'", "sema_sv": "Ŝ-v", "sema_dv": "Ŝ-v'", "t_sv": "T-v",
                    "t_dv": "T-v'", "tema_sv": "T̂-v", "tema_dv": "T̂-v'"}
METHOD_NAMES = {"byol": "BYOL", "simdis_off": "SimDis-Off", "simdis_on": "SimDis-On", "supervised": "Supervised",
                "moco_v2": "MoCo-v2", "seed": "SEED"}
# The paper's Figure 3 order of the series (top-1 vs epochs per method); other labels follow, by name.
FIGURE3_ORDER = ("MoCo-v2", "BYOL", "SEED", "SimDis-Off", "SimDis-Off-7v", "SimDis-On", "SimDis-On-7v", "Supervised")


def _figure3_key(item) -> Tuple[int, Any]:
  """Sort key of a (method label, network, metric) series: Figure 3's method order first."""
  (method, network, metric), _ = item
  rank = FIGURE3_ORDER.index(method) if method in FIGURE3_ORDER else len(FIGURE3_ORDER)
  return rank, (method, network, metric)
MISSING = "—"

# (header, row key) of the markdown table; results.json holds these keys and more.
COLUMNS = (
    ("run", "run_cell"),
    ("method", "method_label"),
    ("views", "views_cell"),
    ("network", "network_cell"),
    ("teacher", "teacher_arch"),
    ("encoder", "encoder"),
    ("epochs", "epochs_cell"),
    ("batch", "batch_cell"),
    ("kNN top-1 (step 0)", "knn_cell"),
    ("linear top-1", "linear_top1_cell"),
    ("linear top-5", "linear_top5_cell"),
    ("protocol", "protocol_cell"),
    ("wall time", "wall_time_cell"),
    ("images/s", "images_per_sec_cell"),
)


@dataclasses.dataclass
class PretrainRun:
  """What one pretraining workdir holds; `metrics` maps step -> {name: value}."""
  workdir: str
  config: Dict[str, Any]
  run_info: Dict[str, Any]
  metrics: Dict[int, Dict[str, float]]
  summary: Optional[Dict[str, Any]]
  name: str = ""

  @property
  def finished(self) -> bool:
    """True when the run wrote summary.json, i.e. reached its last step."""
    return self.summary is not None


@dataclasses.dataclass
class LinearEval:
  """The contents of one linear_eval.json and where it was found."""
  workdir: str
  result: Dict[str, Any]


# --------------------------------------------------------------------------- reading


def _read_json(path: str) -> Any:
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path} is not valid JSON ({e}).") from e


def read_metrics(path: str) -> Dict[int, Dict[str, float]]:
  """metrics.jsonl as {step: {name: value}}; a later line overrides an earlier one (resumed runs)."""
  by_step: Dict[int, Dict[str, float]] = {}
  if not os.path.exists(path):
    return by_step
  with open(path, encoding="utf-8") as f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        # A process killed mid-write leaves a truncated last line; the rest is still good.
        continue
      if not isinstance(record, dict) or "step" not in record:
        continue
      step = int(record.pop("step"))
      values = by_step.setdefault(step, {})
      for key, value in record.items():
        if isinstance(value, (int, float)):
          values[key] = float(value)
  return dict(sorted(by_step.items()))


def _is_linear_dir(path: str) -> bool:
  # linear.py also writes config.json and metrics.jsonl, so its workdirs are told apart by its own files.
  if any(os.path.isfile(os.path.join(path, f)) for f in (LINEAR_EVAL_FILE, LINEAR_INFO_FILE)):
    return True
  try:
    return _read_json(os.path.join(path, CONFIG_FILE)).get("task") == "linear_eval"
  except (OSError, ValueError, AttributeError):
    return False


def _is_pretrain_dir(path: str) -> bool:
  if not os.path.isfile(os.path.join(path, CONFIG_FILE)):
    return False
  if not _is_linear_dir(path):
    return True
  # A linear evaluation written into the pretraining run's own workdir: the directory is both.
  linear_path = os.path.join(path, LINEAR_EVAL_FILE)
  try:
    target = _read_json(linear_path).get("pretrained_workdir") if os.path.isfile(linear_path) else None
  except (ValueError, AttributeError):
    return False
  return bool(target) and _resolve_from(path, str(target)) == os.path.realpath(path)


def load_pretrain_run(workdir: str) -> PretrainRun:
  """Reads a pretraining workdir (config.json required; the other files optional)."""
  config = _read_json(os.path.join(workdir, CONFIG_FILE))
  info_path = os.path.join(workdir, RUN_INFO_FILE)
  summary_path = os.path.join(workdir, SUMMARY_FILE)
  return PretrainRun(
      workdir=os.path.realpath(workdir),
      config=config,
      run_info=_read_json(info_path) if os.path.exists(info_path) else {},
      metrics=read_metrics(os.path.join(workdir, METRICS_FILE)),
      summary=_read_json(summary_path) if os.path.exists(summary_path) else None,
      name=os.path.basename(os.path.normpath(workdir)))


def load_workdirs(workdirs: Iterable[str]) -> Tuple[List[PretrainRun], List[LinearEval]]:
  """Sorts the given workdirs into pretraining runs and linear evaluations, or raises ValueError."""
  runs: Dict[str, PretrainRun] = {}
  evals: Dict[str, LinearEval] = {}
  for given in workdirs:
    path = os.path.realpath(os.path.expanduser(str(given)))
    if not os.path.isdir(path):
      raise ValueError(f"Workdir {given!r} does not exist (resolved to {path}); expected a pretraining "
                       f"workdir (with {CONFIG_FILE}) or a linear-evaluation workdir (with {LINEAR_EVAL_FILE}).")
    is_pretrain = _is_pretrain_dir(path)
    has_linear = os.path.isfile(os.path.join(path, LINEAR_EVAL_FILE))
    if not is_pretrain and not has_linear and _is_linear_dir(path):
      # A linear evaluation still training has no result yet; skipping it keeps a report of
      # "all workdirs" usable while some are running.
      print(f"simdis_jax.report: warning: {given} is a linear evaluation without {LINEAR_EVAL_FILE} "
            "yet (unfinished); skipped.", file=sys.stderr)
      continue
    if not is_pretrain and not has_linear:
      raise ValueError(f"Workdir {given!r} ({path}) holds neither {CONFIG_FILE} (a pretraining run) nor "
                       f"{LINEAR_EVAL_FILE} (a linear evaluation); nothing to report from it.")
    if is_pretrain and path not in runs:
      runs[path] = load_pretrain_run(path)
    if has_linear and path not in evals:
      result = _read_json(os.path.join(path, LINEAR_EVAL_FILE))
      if not isinstance(result, dict):
        raise ValueError(f"{os.path.join(path, LINEAR_EVAL_FILE)} should hold a JSON object.")
      evals[path] = LinearEval(path, result)
  return list(runs.values()), list(evals.values())


def _resolve_from(base: str, target: str) -> str:
  # linear_eval.json keeps the pretrained workdir as it was typed, possibly relative to where linear.py
  # was launched; linear_info.json beside it has the absolute path, then the cwd and the linear
  # workdir's parent are the best guesses left.
  if os.path.isabs(target):
    return os.path.realpath(target)
  try:
    recorded = _read_json(os.path.join(base, LINEAR_INFO_FILE)).get("pretrained_workdir")
  except (OSError, ValueError, AttributeError):
    recorded = None
  if recorded and os.path.isabs(recorded):
    return os.path.realpath(recorded)
  here = os.path.realpath(target)
  if os.path.exists(here):
    return here
  return os.path.realpath(os.path.join(os.path.dirname(base), target))


# --------------------------------------------------------------------------- naming


def method_label(method: Optional[str], views: Sequence[str]) -> str:
  """The paper's method name: BYOL, SimDis-Off, SimDis-On, with -7v when all seven views are used."""
  if not method:
    return MISSING
  label = METHOD_NAMES.get(method, method)
  if method in ("simdis_off", "simdis_on") and len(set(views)) == len(PAPER_VIEW_NAMES):
    label += "-7v"
  return label


def view_names(views: Sequence[str]) -> str:
  """The views in the paper's notation, comma separated (unknown names kept as written)."""
  return ", ".join(PAPER_VIEW_NAMES.get(v, v) for v in views) if views else MISSING


def architecture(net: Optional[Dict[str, Any]]) -> str:
  """'ResNet-<depth> w<width>' (other archs: their name) from a model.student / model.teacher config."""
  if not net or "depth" not in net:
    return MISSING
  if net.get("arch", "resnet") != "resnet":
    return net["arch"] + (f" patch {net['patch_size']}" if net["arch"].startswith("vit") else "")
  width = f" w{net['width']}" if net.get("width") is not None else ""
  return f"ResNet-{net['depth']}{width}"


# --------------------------------------------------------------------------- number formatting


def _finite(x: Any) -> Optional[float]:
  if isinstance(x, bool) or not isinstance(x, (int, float)):
    return None
  return float(x) if math.isfinite(x) else None


def format_accuracy(x: Any) -> str:
  """An accuracy in percent with two decimals, or '—'."""
  x = _finite(x)
  return MISSING if x is None else f"{x:.2f}"


def format_epochs(x: Any) -> str:
  """Whole epochs as integers; fractions with three significant digits (short demo runs)."""
  x = _finite(x)
  if x is None:
    return MISSING
  if abs(x - round(x)) < 1e-6:
    return str(int(round(x)))
  decimals = max(1, 2 - int(math.floor(math.log10(abs(x))))) if x else 1
  return f"{x:.{decimals}f}".rstrip("0").rstrip(".")


def format_duration(seconds: Any) -> str:
  """Seconds as '42 s', '12.5 min' or '3.2 h'."""
  s = _finite(seconds)
  if s is None:
    return MISSING
  if s < 120:
    return f"{s:.0f} s"
  if s < 7200:
    return f"{s / 60:.1f} min"
  return f"{s / 3600:.1f} h"


def format_rate(x: Any) -> str:
  """Images per second: thousands separators when large, one decimal when small."""
  x = _finite(x)
  if x is None:
    return MISSING
  return f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


# --------------------------------------------------------------------------- rows


def _last_value(metrics: Dict[int, Dict[str, float]], key: str,
                min_step: int = 0) -> Tuple[Optional[float], Optional[int]]:
  for step in sorted(metrics, reverse=True):
    if step >= min_step and key in metrics[step]:
      return metrics[step][key], step
  return None, None


def _run_progress(run: PretrainRun) -> Dict[str, Any]:
  """Steps, epochs, wall time and throughput of a run, from summary.json or else the last metrics."""
  info, summary, train_cfg = run.run_info, run.summary or {}, run.config.get("train", {})
  total_steps = summary.get("total_steps", info.get("total_steps"))
  if total_steps is None and (train_cfg.get("steps") or 0) > 0:
    total_steps = train_cfg["steps"]
  step = summary.get("steps", max(run.metrics) if run.metrics else 0)
  steps_per_epoch = info.get("steps_per_epoch")
  epochs = summary.get("epochs")
  if epochs is None:
    epochs, _ = _last_value(run.metrics, "epoch")
  if epochs is None and steps_per_epoch:
    epochs = step / steps_per_epoch
  if epochs is None and run.finished and not train_cfg.get("steps"):
    epochs = train_cfg.get("epochs")
  images_per_sec = summary.get("images_per_sec")
  if images_per_sec is None:
    images_per_sec, _ = _last_value(run.metrics, "images_per_sec")
  return {"step": step, "total_steps": total_steps, "steps_per_epoch": steps_per_epoch, "epochs": epochs,
          "wall_time_s": summary.get("train_wall_time_s"), "images_per_sec": images_per_sec}


def status_note(run: PretrainRun) -> str:
  """'unfinished, step k of K' for a run without summary.json ('' for a finished one)."""
  if run.finished:
    return ""
  progress = _run_progress(run)
  step, total = progress["step"], progress["total_steps"]
  # At its last step but without summary.json: it stopped during the final evaluation, or an older
  # train.py ran it. Calling that "unfinished" would mislead.
  state = "no summary.json" if isinstance(total, int) and step >= total else "unfinished"
  return f"{state}, step {step} of {total if total is not None else '?'}"


def _knn(run: PretrainRun, network: str) -> Tuple[Optional[float], Optional[float]]:
  """(final, step-0) kNN top-1 of one network of a run."""
  key = f"knn_top1/{network}"
  init = run.metrics.get(0, {}).get(key)
  if init is None and run.summary:
    init = run.summary.get(f"{key}_init")
  final = run.summary.get(key) if run.summary else None
  if final is None:
    # An unfinished run reports its latest evaluation after step 0 (step 0 is the untrained net).
    final, _ = _last_value(run.metrics, key, min_step=1)
  return final, init


def _short_weights(weights: Any) -> Optional[str]:
  # Show which weights were evaluated (e.g. online/ema) only when it is a short label, not a path.
  if isinstance(weights, (str, int)) and not isinstance(weights, bool):
    text = str(weights)
    if text and len(text) <= 16 and "/" not in text:
      return text
  return None


def _protocol_cell(result: Dict[str, Any]) -> str:
  protocol = result.get("protocol")
  details = [str(d) for d in (result.get("mode_name") or result.get("mode"),) if d not in (None, "")]
  if _finite(result.get("epochs")) is not None:
    details.append(f"{format_epochs(result['epochs'])} ep")
  if protocol in (None, "") and not details:
    return MISSING
  text = str(protocol) if protocol not in (None, "") else ""
  # Semicolons, because linear.py's mode names carry their own commas and brackets.
  return "; ".join(([text] if text else []) + details)


def _make_row(run: Optional[PretrainRun], network: str, linear: Optional[LinearEval],
              fallback_name: str = "") -> Dict[str, Any]:
  """One table row (raw values and formatted cells) for a network of a run and an optional linear eval."""
  config = run.config if run else {}
  model = config.get("model", {})
  views = list(config.get("views") or [])
  method = config.get("method")
  progress = _run_progress(run) if run else {}
  knn_final, knn_init = _knn(run, network) if run else (None, None)
  result = linear.result if linear else {}
  encoder_cfg = model.get(network) if network in ("student", "teacher") else None
  has_teacher = method in ("simdis_off", "simdis_on") and network == "student"
  name = run.name if run else fallback_name

  row = {
      "run": name,
      "workdir": run.workdir if run else None,
      "finished": run.finished if run else None,
      "step": progress.get("step"),
      "total_steps": progress.get("total_steps"),
      "method": method,
      "method_label": method_label(method, views),
      "views": views,
      "view_names": [PAPER_VIEW_NAMES.get(v, v) for v in views],
      "network": network,
      "weights": result.get("weights"),
      "teacher_arch": architecture(model.get("teacher")) if has_teacher else MISSING,
      "encoder": architecture(encoder_cfg),
      "epochs": _finite(progress.get("epochs")),
      "batch_size": config.get("train", {}).get("batch_size"),
      "data": config.get("data", {}).get("name"),
      "optimizer": config.get("optim", {}).get("name"),
      "seed": config.get("seed"),
      "teacher_workdir": (config.get("teacher", {}).get("workdir") or None) if method == "simdis_off" else None,
      "knn_top1": _finite(knn_final),
      "knn_top1_init": _finite(knn_init),
      "linear_top1": _finite(result.get("top1")),
      "linear_top5": _finite(result.get("top5")),
      "linear_workdir": linear.workdir if linear else None,
      "protocol": result.get("protocol"),
      "mode": result.get("mode"),
      "mode_name": result.get("mode_name"),
      "linear_epochs": _finite(result.get("epochs")),
      "linear_pretrained_step": result.get("pretrained_step"),
      "linear_wall_time_s": _finite(result.get("wall_time_s")),
      "wall_time_s": _finite(progress.get("wall_time_s")),
      "images_per_sec": _finite(progress.get("images_per_sec")),
  }

  run_cell = name
  if run is not None and not run.finished:
    run_cell += f" ({status_note(run)})"
  elif run is None:
    run_cell += " (pretraining workdir not found)"
  weights = _short_weights(row["weights"])
  knn_cell = format_accuracy(row["knn_top1"])
  if row["knn_top1_init"] is not None:
    knn_cell += f" ({format_accuracy(row['knn_top1_init'])})"
  batch = row["batch_size"]
  row.update({
      "run_cell": run_cell,
      "views_cell": view_names(views),
      "network_cell": f"{network} ({weights})" if weights else network,
      "epochs_cell": format_epochs(row["epochs"]),
      "batch_cell": str(batch) if isinstance(batch, int) else MISSING,
      "knn_cell": knn_cell,
      "linear_top1_cell": format_accuracy(row["linear_top1"]),
      "linear_top5_cell": format_accuracy(row["linear_top5"]),
      "protocol_cell": _protocol_cell(result),
      "wall_time_cell": format_duration(row["wall_time_s"]),
      "images_per_sec_cell": format_rate(row["images_per_sec"]),
  })
  return row


def collect_rows(workdirs: Sequence[str]) -> Tuple[List[PretrainRun], List[Dict[str, Any]]]:
  """Reads the workdirs and joins linear evaluations to their runs: (runs, table rows)."""
  runs, evals = load_workdirs(workdirs)
  by_path = {run.workdir: run for run in runs}
  orphans: Dict[str, List[LinearEval]] = {}
  attached: Dict[Tuple[str, str], List[LinearEval]] = {}
  for ev in evals:
    target = ev.result.get("pretrained_workdir")
    path = _resolve_from(ev.workdir, str(target)) if target else None
    if path and path not in by_path and _is_pretrain_dir(path):
      # The run itself was not listed but is on disk: read it so the row is complete.
      by_path[path] = load_pretrain_run(path)
      runs.append(by_path[path])
    if path in by_path:
      network = str(ev.result.get("network") or "student")
      attached.setdefault((path, network), []).append(ev)
    else:
      print(f"simdis_jax.report: warning: {ev.workdir}/{LINEAR_EVAL_FILE} refers to pretraining workdir "
            f"{target!r}, which was not found; its row has no pretraining details.", file=sys.stderr)
      orphans.setdefault(str(target or ev.workdir), []).append(ev)

  _give_unique_names(runs)
  rows: List[Dict[str, Any]] = []
  for run in runs:
    for ev in attached.get((run.workdir, "student"), [None]):
      rows.append(_make_row(run, "student", ev))
    for network in sorted(n for (p, n) in attached if p == run.workdir and n != "student"):
      for ev in attached[(run.workdir, network)]:
        rows.append(_make_row(run, network, ev))
  for target, orphan_evals in orphans.items():
    for ev in orphan_evals:
      rows.append(_make_row(None, str(ev.result.get("network") or "student"), ev,
                            fallback_name=os.path.basename(os.path.normpath(target))))
  return runs, rows


def _give_unique_names(runs: List[PretrainRun]) -> None:
  # Two workdirs may share a basename (a/run, b/run); their figures must not overwrite each other.
  used = set()
  for run in runs:
    base = name = run.name or "run"
    suffix = 1
    while name in used:
      suffix += 1
      name = f"{base}_{suffix}"
    used.add(name)
    run.name = name


# --------------------------------------------------------------------------- markdown / JSON


def _escape(cell: str) -> str:
  return str(cell).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Dict[str, Any]]) -> str:
  """The rows as a GitHub-flavoured markdown table."""
  lines = ["| " + " | ".join(h for h, _ in COLUMNS) + " |",
           "|" + "|".join("---" for _ in COLUMNS) + "|"]
  for row in rows:
    lines.append("| " + " | ".join(_escape(row[key]) for _, key in COLUMNS) + " |")
  return "\n".join(lines) + "\n"


def markdown_report(rows: Sequence[Dict[str, Any]], figures: Sequence[str]) -> str:
  """results.md: the table, what its columns mean, and links to the figures."""
  parts = ["# Results\n\n", markdown_table(rows),
           "\nkNN top-1: weighted cosine kNN of the encoder at the end of the run (latest evaluation for "
           "an unfinished run), the untrained network's value at step 0 in brackets. Linear top-1/top-5: "
           f"from {LINEAR_EVAL_FILE}. Accuracies in %. Wall time and images/s: the pretraining process "
           "that finished the run (the latest logged value for an unfinished run). "
           f"{MISSING}: not available.\n"]
  if figures:
    parts.append("\n## Figures\n\n" + "\n".join(f"![{f}]({f})" for f in figures) + "\n")
  return "".join(parts)


def json_rows(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
  """The rows for results.json: raw values plus the formatted table cells under 'cells'."""
  out = []
  for row in rows:
    item = {k: v for k, v in row.items() if not k.endswith("_cell")}
    item["cells"] = {header: row[key] for header, key in COLUMNS}
    out.append(item)
  return out


# --------------------------------------------------------------------------- figures


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


def plot_curves(run: PretrainRun, path: str) -> None:
  """Losses (total, student, teacher, per head) and kNN top-1 over steps of one run, as a PNG."""
  fig, (ax_loss, ax_knn) = _new_figure(12, 4.5, ncols=2)
  progress = _run_progress(run)
  title = f"{run.name}: {method_label(run.config.get('method'), run.config.get('views') or [])}"
  if not run.finished:
    title += f" ({status_note(run)})"
  fig.suptitle(title)

  heads = sorted({k for values in run.metrics.values() for k in values if k.startswith("loss_head/")})
  for key in heads:
    steps, values = _series(run.metrics, key)
    head = key.split("/", 1)[1]
    ax_loss.plot(steps, values, linewidth=0.7, alpha=0.7, label=f"head {PAPER_VIEW_NAMES.get(head, head)}")
  for key, label in (("loss", "total"), ("loss_student", "student"), ("loss_teacher", "teacher")):
    steps, values = _series(run.metrics, key)
    if steps.size:
      ax_loss.plot(steps, values, linewidth=2.0, marker="." if steps.size < 30 else None, label=label)
  ax_loss.set_title("training losses")
  ax_loss.set_xlabel("step")
  ax_loss.set_ylabel("loss")

  for network in ("student", "teacher"):
    steps, values = _series(run.metrics, f"knn_top1/{network}")
    if steps.size:
      ax_knn.plot(steps, values, marker="o", label=network)
  ax_knn.set_title("kNN top-1 (step 0 = untrained)")
  ax_knn.set_xlabel("step")
  ax_knn.set_ylabel("top-1 (%)")

  steps_per_epoch = progress["steps_per_epoch"]
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
  for (method, network, metric), points in sorted(series.items(), key=_figure3_key):
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


# --------------------------------------------------------------------------- entry points


def write_report(workdirs: Sequence[str], out_dir: str) -> str:
  """Writes results.md, results.json and the PNG figures for `workdirs` into `out_dir`; returns the markdown."""
  if isinstance(workdirs, (str, os.PathLike)):
    workdirs = [workdirs]  # one workdir given bare, not as a list of characters
  if not workdirs:
    raise ValueError("No workdirs given; pass pretraining and/or linear-evaluation workdirs.")
  runs, rows = collect_rows(workdirs)
  os.makedirs(out_dir, exist_ok=True)
  figures = []
  for run in runs:
    name = figure_file_name(run.name)
    plot_curves(run, os.path.join(out_dir, name))
    figures.append(name)
  plot_accuracy_vs_epochs(rows, os.path.join(out_dir, ACCURACY_FIGURE))
  figures.append(ACCURACY_FIGURE)

  markdown = markdown_report(rows, figures)
  with open(os.path.join(out_dir, RESULTS_MD), "w", encoding="utf-8") as f:
    f.write(markdown)
  with open(os.path.join(out_dir, RESULTS_JSON), "w", encoding="utf-8") as f:
    json.dump({"workdirs": [os.path.realpath(str(w)) for w in workdirs], "figures": figures,
               "rows": json_rows(rows)}, f, indent=2, ensure_ascii=False)
  return markdown


def main(argv: Optional[Sequence[str]] = None) -> int:
  """Command line: python -m simdis_jax.report <workdir> [<workdir> ...] --out <dir>."""
  parser = argparse.ArgumentParser(
      prog="python -m simdis_jax.report",
      description="Tabulate and plot SimDis/BYOL pretraining runs and their linear evaluations.")
  parser.add_argument("workdirs", nargs="+", help="pretraining and/or linear-evaluation workdirs, any order")
  parser.add_argument("--out", required=True, help="directory for results.md, results.json and the PNGs")
  args = parser.parse_args(argv)
  try:
    markdown = write_report(args.workdirs, args.out)
  except ValueError as e:
    raise SystemExit(f"simdis_jax.report: error: {e}") from e
  print(_table_only(markdown), end="")
  print(f"\nWrote {os.path.join(args.out, RESULTS_MD)}, {RESULTS_JSON} and figures to {args.out}.",
        file=sys.stderr)
  return 0


def _table_only(markdown: str) -> str:
  # stdout gets just the table, so it can be pasted or piped; results.md has the notes and figures.
  return "".join(line + "\n" for line in markdown.splitlines() if line.startswith("|"))
