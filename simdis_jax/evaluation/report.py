"""Results report: a markdown/JSON table and PNG figures from pretraining and linear-evaluation workdirs.

Usage: simdis-report <workdir> [<workdir> ...] --out <dir> (the command line is simdis_jax/report.py)

The table and the training curves read only the files a run leaves behind
(config.json, run_info.json, metrics.jsonl, summary.json, linear_eval.json)
and build no model nor touch a device (the method registry, which names the
methods, imports JAX but runs nothing), so they can be made on any machine
that has the workdirs, including while the runs are still training. Only the
embedding maps (evaluation/embedding_map.py) read checkpoints, imported when
they are drawn.
"""

import json
import math
import os
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

from simdis_jax import labels, methods
from simdis_jax import workdir as wf
from simdis_jax.evaluation import embedding_map, figures
from simdis_jax.models import archs
from simdis_jax.evaluation.report_tables import MISSING, json_rows, markdown_report
from simdis_jax.evaluation.report_workdirs import (
  LinearEval,
  PretrainRun,
  is_pretrain_dir,
  load_pretrain_run,
  load_workdirs,
  resolve_from,
)

RESULTS_MD = "results.md"
RESULTS_JSON = "results.json"
ACCURACY_FIGURE = "accuracy_vs_epochs.png"

PAPER_VIEW_NAMES = labels.VIEW_NAMES
METHOD_NAMES = labels.METHOD_NAMES


# --------------------------------------------------------------------------- naming


def method_label(method: Optional[str], views: Sequence[str]) -> str:
  """The paper's method name: BYOL, SimDis-Off, SimDis-On, with -7v when all seven views are used."""
  if not method:
    return MISSING
  label = METHOD_NAMES.get(method, method)
  if (
    method in METHOD_NAMES
    and methods.about(method).uses_views
    and methods.about(method).teacher != "none"
    and len(set(views)) == len(PAPER_VIEW_NAMES)
  ):
    label += "-7v"
  return label


def architecture(net: Optional[Dict[str, Any]]) -> str:
  """A model.student / model.teacher config's architecture as its row of models/archs.py names it: an arch built
  at several depths 'ResNet-<depth> w<width>', a ViT its name and patch size, another its name."""
  if not net or "depth" not in net:
    return MISSING
  arch = archs.arch_of(net)
  spec = archs.SPECS.get(arch)
  if spec is None:  # an arch this version does not know: its name
    return arch
  if spec.depths:
    width = f" w{net['width']}" if net.get("width") is not None else ""
    return f"{spec.label or arch}-{net['depth']}{width}"
  return (spec.label or arch) + (f" patch {net['patch_size']}" if spec.patches else "")


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
    epochs = wf.last_value(run.metrics, "epoch")
  if epochs is None and steps_per_epoch:
    epochs = step / steps_per_epoch
  if epochs is None and run.finished and not train_cfg.get("steps"):
    epochs = train_cfg.get("epochs")
  images_per_sec = summary.get("images_per_sec")
  if images_per_sec is None:
    images_per_sec = wf.last_value(run.metrics, "images_per_sec")
  return {
    "step": step,
    "total_steps": total_steps,
    "steps_per_epoch": steps_per_epoch,
    "epochs": epochs,
    "wall_time_s": summary.get("train_wall_time_s"),
    "images_per_sec": images_per_sec,
  }


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
    final = wf.last_value(run.metrics, key, from_step=1)
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


def _make_row(
  run: Optional[PretrainRun], network: str, linear: Optional[LinearEval], fallback_name: str = ""
) -> Dict[str, Any]:
  """One table row (raw values and formatted cells) for a network of a run and an optional linear eval."""
  config = run.config if run else {}
  model = config.get("model", {})
  views = list(config.get("views") or [])
  method = config.get("method")
  progress = _run_progress(run) if run else {}
  knn_final, knn_init = _knn(run, network) if run else (None, None)
  result = linear.result if linear else {}
  encoder_cfg = model.get(network) if network in ("student", "teacher") else None
  has_teacher = methods.teacher_kind(config) != "none" and network == "student"
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
    "teacher_workdir": (
      (config.get("teacher", {}).get("workdir") or None) if methods.teacher_kind(config) == "offline" else None
    ),
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
  row.update(
    {
      "run_cell": run_cell,
      "views_cell": _views_cell(method, network, views, config),
      "network_cell": f"{network} ({weights})" if weights else network,
      "epochs_cell": format_epochs(row["epochs"]),
      "batch_cell": str(batch) if isinstance(batch, int) else MISSING,
      "knn_cell": knn_cell,
      "linear_top1_cell": format_accuracy(row["linear_top1"]),
      "linear_top5_cell": format_accuracy(row["linear_top5"]),
      "protocol_cell": _protocol_cell(result),
      "wall_time_cell": format_duration(row["wall_time_s"]),
      "images_per_sec_cell": format_rate(row["images_per_sec"]),
    }
  )
  return row


def _views_cell(method: Optional[str], network: str, views: Sequence[str], config: Dict[str, Any]) -> str:
  # config.views are the student's targets; a teacher row says what the teacher itself learnt from.
  if not method:
    return MISSING
  if network == "teacher":
    return methods.describe_teacher(config)
  return methods.describe_targets({**config, "method": method, "views": tuple(views)})


def collect_rows(workdirs: Sequence[str]) -> Tuple[List[PretrainRun], List[Dict[str, Any]]]:
  """Reads the workdirs and joins linear evaluations to their runs: (runs, table rows)."""
  runs, evals = load_workdirs(workdirs)
  own = own_linear_evals(runs, evals)
  owner = {ev.workdir: run_dir for ev, run_dir in own}  # found inside a run: its run, wherever it now is
  evals += [ev for ev, _ in own]
  by_path = {run.workdir: run for run in runs}
  orphans: Dict[str, List[LinearEval]] = {}
  attached: Dict[Tuple[str, str], List[LinearEval]] = {}
  for ev in evals:
    target = ev.result.get("pretrained_workdir")
    path = owner.get(ev.workdir) or (resolve_from(ev.workdir, str(target)) if target else None)
    if path and path not in by_path and is_pretrain_dir(path):
      # The run itself was not listed but is on disk: read it so the row is complete.
      by_path[path] = load_pretrain_run(path)
      runs.append(by_path[path])
    if path in by_path:
      network = str(ev.result.get("network") or "student")
      attached.setdefault((path, network), []).append(ev)
    else:
      print(
        f"simdis_jax.report: warning: {ev.workdir}/{wf.LINEAR_EVAL_FILE} refers to pretraining workdir "
        f"{target!r}, which was not found; its row has no pretraining details.",
        file=sys.stderr,
      )
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
      rows.append(
        _make_row(
          None, str(ev.result.get("network") or "student"), ev, fallback_name=os.path.basename(os.path.normpath(target))
        )
      )
  return runs, rows


def own_linear_evals(runs: Sequence[PretrainRun], known: Sequence[LinearEval]) -> List[Tuple[LinearEval, str]]:
  """(linear evaluation, its run's workdir) for each finished one inside a run's workdir (final_eval's linear_*)."""
  seen = {ev.workdir for ev in known}
  found = []
  for run in runs:
    try:
      names = sorted(os.listdir(run.workdir))
    except OSError:
      continue
    for name in names:
      path = os.path.join(run.workdir, name)
      if path in seen or not os.path.isfile(os.path.join(path, wf.LINEAR_EVAL_FILE)):
        continue
      result = wf.read_json(path, wf.LINEAR_EVAL_FILE)
      target = result.get("pretrained_workdir") if isinstance(result, dict) else None
      resolved = resolve_from(path, str(target)) if target else None
      # Inside the run and naming it, or naming where the run was before it was moved or archived.
      if resolved and (resolved == run.workdir or not is_pretrain_dir(resolved)):
        found.append((LinearEval(path, result), run.workdir))
  return found


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


# --------------------------------------------------------------------------- entry points


def write_report(
  workdirs: Sequence[str], out_dir: str, embeddings: bool = True, embedding_points: int = embedding_map.POINTS
) -> str:
  """Writes results.md, results.json and the PNG figures for `workdirs` into `out_dir`; returns the markdown.

  With `embeddings`, each finished run's trained networks also get a 2-D map of their test-set embeddings
  (evaluation/embedding_map.py: this part reads checkpoints, so it needs JAX; skipped with a note without it).
  """
  if isinstance(workdirs, (str, os.PathLike)):
    workdirs = [workdirs]  # one workdir given bare, not as a list of characters
  if not workdirs:
    raise ValueError("No workdirs given; pass pretraining and/or linear-evaluation workdirs.")
  runs, rows = collect_rows(workdirs)
  os.makedirs(out_dir, exist_ok=True)
  written = []
  for run in runs:
    name = figures.figure_file_name(run.name)
    title = f"{run.name}: {method_label(run.config.get('method'), run.config.get('views') or [])}"
    if not run.finished:
      title += f" ({status_note(run)})"
    frozen_teacher = methods.teacher_kind(run.config) == "offline"
    figures.plot_curves(
      run.metrics,
      title,
      _run_progress(run)["steps_per_epoch"],
      os.path.join(out_dir, name),
      frozen_teacher=frozen_teacher,
    )
    written.append(name)
  if embeddings:
    written += embedding_map.write_maps(runs, out_dir, points=embedding_points)
  figures.plot_accuracy_vs_epochs(rows, os.path.join(out_dir, ACCURACY_FIGURE))
  written.append(ACCURACY_FIGURE)

  markdown = markdown_report(rows, written)
  with open(os.path.join(out_dir, RESULTS_MD), "w", encoding="utf-8") as f:
    f.write(markdown)
  with open(os.path.join(out_dir, RESULTS_JSON), "w", encoding="utf-8") as f:
    json.dump(
      {"workdirs": [os.path.realpath(str(w)) for w in workdirs], "figures": written, "rows": json_rows(rows)},
      f,
      indent=2,
      ensure_ascii=False,
    )
  return markdown
