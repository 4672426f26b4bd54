"""The study's report: its section of RESULTS.md (between two markers), results.json and the figure.

One table row per preset (mean ± sample std over seeds), the comparisons the
study config lists (Welch's t-test over seeds, then the paired t-test over
the seeds both presets ran), the references, the figure. Everything specific
to a study (the paper's figures, labels, comparisons, texts) comes from its
config; this module is not the per-run report (`simdis_jax/evaluation/report.py`).
"""

import datetime
import math
import os
import platform
import subprocess
from typing import Dict, List, Optional, Sequence

from simdis_jax import workdir as workdir_files
from simdis_jax.tools.study.curves import write_epoch_figure
from simdis_jax.tools.study.figure import write_figure
from simdis_jax.tools.study.plan import STATUS_FILE, parse_runs, teacher_run
from simdis_jax.tools.study.results import aggregate, finite_sum, results_json
from simdis_jax.tools.study.significance import common_seeds, difference, paired_difference

BEGIN, END = "<!-- study:begin (written by simdis_jax.study; edits here are overwritten) -->", "<!-- study:end -->"
DEFAULT_CONFIG = "configs/fashion_mnist/study.py"
FIGURE_FILE = "study_top1.png"
RESULTS_JSON = "results.json"
MISSING = "—"
METRICS = (("linear_top1", "linear (full)"), ("fast_linear_top1", "linear (fast)"), ("knn_top1", "kNN"))


def markers(study) -> Sequence[str]:
  """The lines around the study's section of its results file; a named study (config.name) has its own pair,
  so that several studies share one RESULTS.md."""
  name = study.get("name", "")
  if not name:
    return BEGIN, END
  return BEGIN.replace("study:begin", f"study {name}:begin"), END.replace("study:end", f"study {name}:end")


def _pm(stat, digits: int = 2) -> str:
  if not stat or stat[2] == 0 or not math.isfinite(stat[0]):
    return MISSING
  m, s, n = stat
  return f"{m:.{digits}f} ± {s:.{digits}f}" if n > 1 else f"{m:.{digits}f}"


def _one(stat, digits: int = 1) -> str:
  return MISSING if not stat or stat[2] == 0 or not math.isfinite(stat[0]) else f"{stat[0]:.{digits}f}"


def hardware() -> str:
  """This machine in one line: CPU model, cores, OS and Python."""
  model = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    if names:
      model = names[0]
  except OSError:
    pass
  return (
    f"{model}, {os.cpu_count()} cores visible, {platform.system()} {platform.release()}, "
    f"Python {platform.python_version()}"
  )


CODE_PATHS = (":/simdis_jax", ":/configs", ":/setup.py")  # what a run executes; the study's own records
# (RESULTS.md, results/), which the runner rewrites in its checkout after every run, do not make the code dirty


def commit(where: Optional[str] = None) -> str:
  """The short commit of the code checked out at `where` (default: this package's checkout), with
  " (with uncommitted changes)" if the code a run executes differs from it, or "unknown"."""
  here = where or os.path.dirname(os.path.abspath(__file__))
  try:
    sha = subprocess.run(
      ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True, cwd=here
    ).stdout.strip()
    dirty = subprocess.run(
      ["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS],
      capture_output=True,
      text=True,
      cwd=here,
    ).stdout.strip()
    return sha + (" (with uncommitted changes)" if dirty else "")
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def _commits_line(status: dict, agg: Dict[str, Dict]) -> str:
  """The commits whose code ran the finished runs (from the study's log of run segments)."""
  finished = {f"{p}/seed{s}" for p, e in agg.items() for s in e["runs"]}
  used = {}
  for segment in status.get("segments", []):
    if segment["run"] in finished:
      used.setdefault(segment.get("commit", "unknown"), set()).add(segment["run"])
  if not used:
    return f"commit {commit()}"
  return (
    "the finished runs ran, whole or in segments, on commit"
    + ("s " if len(used) > 1 else " ")
    + ", ".join(f"{c} ({len(r)} run{'s' if len(r) > 1 else ''})" for c, r in sorted(used.items()))
  )


def _comparison(base: Dict, entry: Dict, metric: str, name: str) -> str:
  """One metric's difference between two presets: Welch over seeds, then paired by seed (or why not)."""
  a, b = base.get(metric), entry.get(metric)
  if not a or not b or not a[2] or not b[2]:
    return f"{name}: not finished"
  d, se, p = difference(a, b)
  if a[2] < 2 or b[2] < 2:  # one side has no spread to test against
    text = f"{name} {d:+.2f} ({a[2]} seed{'s' if a[2] > 1 else ''} vs {b[2]}: no seed spread to test"
    pd, _, _, pn = paired_difference(base["runs"], entry["runs"], metric)
    if pn == 1 and max(a[2], b[2]) > 1:  # the like-for-like figure: same initial student and data order
      text += f"; seed {common_seeds(base['runs'], entry['runs'], metric)[0]} alone: {pd:+.2f}"
    return text + ")"
  noise = "beyond seed noise" if p < 0.05 else "within seed noise"
  text = f"{name} {d:+.2f} ± {se:.2f} ({noise}, p = {p:.3f}"
  pd, pse, pp, pn = paired_difference(base["runs"], entry["runs"], metric)
  if pn >= 2:
    text += f"; paired by seed over {pn}: {pd:+.2f} ± {pse:.2f}, p = {pp:.3f}"
  return text + ")"


def comparison_lines(study, agg: Dict[str, Dict]) -> List[str]:
  """One bullet per comparison of the study whose two presets it runs."""
  label = lambda preset: study.labels.get(preset, preset)  # noqa: E731
  lines = []
  for base_preset, preset, what in study.comparisons:
    if base_preset not in agg or preset not in agg:
      continue
    parts = [_comparison(agg[base_preset], agg[preset], metric, name) for metric, name in METRICS]
    name = label(preset) if base_preset == study.central[0] else f"{label(preset)} − {label(base_preset)}"
    lines.append(f"- {name}{f' ({what})' if what else ''}: " + "; ".join(parts))
  return lines


def report_markdown(
  study,
  workdir: str,
  agg: Dict[str, Dict],
  figure_paths: Sequence[str],
  status: dict,
  config_path: str = DEFAULT_CONFIG,
) -> str:
  """The study's section of RESULTS.md, markers included."""
  runs = parse_runs(study.runs)
  done = sum(len(e["runs"]) for e in agg.values())
  train_min, lin_min = finite_sum(agg, "train_minutes"), finite_sum(agg, "linear_minutes")
  begin, end = markers(study)
  lines = [
    begin,
    "",
    f"**Command** (from the repository root): `python -m simdis_jax.study --config {config_path} "
    f"--workdir {os.path.relpath(workdir) if not os.path.isabs(workdir) else workdir}`  ",
    f"**Hardware**: {hardware()}; one JAX CPU device.  ",
    f"**Code**: {_commits_line(status, agg)}.  ",
    f"**Runs finished**: {done} of {len(runs)}; pretraining {train_min / 60:.2f} h + linear evaluation "
    f"{lin_min / 60:.2f} h = **{(train_min + lin_min) / 60:.2f} h** of wall time (sum over finished runs, "
    f"time waiting for shared cores included; "
    f"report written {datetime.datetime.now().isoformat(timespec='minutes')}).",
    "",
    study.table_note,
    "",
    "| run | seeds | linear top-1 (full) | linear top-1 (fast) | kNN top-1 | kNN untrained | GFLOP/step "
    "| train min | linear min | paper (ImageNet) |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for preset, entry in agg.items():
    seeds = ",".join(str(s) for s in entry["seeds"] if s in entry["runs"]) or MISSING
    if len(entry["runs"]) < len(entry["seeds"]):
      seeds += f" (of {','.join(str(s) for s in entry['seeds'])})"
    paper, source = study.paper.get(preset, (MISSING, ""))
    lines.append(
      f"| {study.labels.get(preset, preset)} | {seeds} | {_pm(entry.get('linear_top1'))} | "
      f"{_pm(entry.get('fast_linear_top1'))} | {_pm(entry.get('knn_top1'))} | "
      f"{_pm(entry.get('knn_top1_init'))} | {_one(entry.get('step_gflops'))} | {_one(entry.get('train_minutes'))} | "
      f"{_one(entry.get('linear_minutes'))} | {paper}{f' ({source})' if source else ''} |"
    )
  offline = teacher_run(study)[0]
  online = agg.get(study.online_teacher_preset, {})
  if online.get("teacher_knn_top1"):
    lines.append("")
    # The offline teacher's own label names its schedule, which need not be the online run's.
    lines.append(
      f"The online teachers of {study.labels.get(study.online_teacher_preset)} reached kNN top-1 "
      f"{_pm(online['teacher_knn_top1'])}; the offline teacher ({study.labels.get(offline, offline)}) "
      f"{_pm(agg.get(offline, {}).get('knn_top1'))}."
    )
  lines += [
    "",
    "**Comparisons** (differences to the student alone unless named, ± the standard error of the "
    "difference from the seeds' spread; Welch's two-sided t-test over seeds, p < 0.05 is marked as beyond "
    "seed noise; then the paired t-test over the seeds both ran, which share the initial student and the "
    "data order):",
    "",
  ]
  lines += comparison_lines(study, agg)
  if status.get("failed"):
    lines += ["", "**Failed runs**: " + "; ".join(f"{k}: {v}" for k, v in status["failed"].items())]
  lines += ["", f"{study.references_title}: " + "; ".join(f"{n} {v:.1f}%" for n, v, _, _ in study.references) + "."]
  for path in figure_paths:
    lines += ["", f"![{os.path.basename(path)}]({path})"]
  lines += ["", end]
  return "\n".join(lines)


def write_study_report(study, workdir: str, results: str, figures: str, config_path: str = DEFAULT_CONFIG) -> str:
  """Writes the study's section of `results` (keeping text outside the markers), results.json and the figure."""
  if study.get("report_kind") == "v3":
    from simdis_jax.tools.study import v3_report  # pylint: disable=import-outside-toplevel

    begin, end = markers(study)
    drawn = v3_report.write_figures(study, workdir, results, figures)
    section = "\n".join([begin, "", v3_report.v3_markdown(study, workdir, drawn), "", end])
  else:
    agg = aggregate(study, workdir)
    status = workdir_files.read_json(workdir, STATUS_FILE) or {}
    os.makedirs(figures, exist_ok=True)
    drawn = [write_figure(study, agg, os.path.join(figures, FIGURE_FILE))]
    for spec in study.get("epoch_figures", ()):
      drawn.append(write_epoch_figure(study, agg, workdir, spec, os.path.join(figures, spec["file"])))
    rel = [os.path.relpath(f, os.path.dirname(os.path.abspath(results))) for f in drawn if f]
    section = report_markdown(study, workdir, agg, rel, status, config_path)
    workdir_files.write_json(figures, RESULTS_JSON, results_json(agg), indent=2)
  text = ""
  if os.path.exists(results):
    with open(results) as f:
      text = f.read()
  begin, end = markers(study)
  if begin in text and end in text:
    head, rest = text.split(begin, 1)
    text = head + section + rest.split(end, 1)[1]
  else:
    text = (text or "# Results\n\n") + "\n" + section + "\n"
  workdir_files.atomic_write_text(
    workdir_files.path(os.path.dirname(os.path.abspath(results)), os.path.basename(results)), text
  )
  return section
