"""Study v3's section of RESULTS.md: the references, the validation sweep, the test table and the family.

Written from the finished runs' records alone (config.report_kind = "v3"), so `--report_only` on a fresh
clone regenerates it byte for byte. Validation numbers (the sweep) and test numbers (the chosen runs) are
kept apart and named as such.
"""

import math
import os
from typing import Dict, List, Optional, Sequence

from simdis_jax import workdir as workdir_files
from simdis_jax.tools.study import v3_figures
from simdis_jax.tools.study.plan import TEST_DIR, parse_runs, run_dir
from simdis_jax.tools.study.significance import holm, paired_interval

MISSING = "—"
MULTIPLIERS = ("0.1", "0.3", "1", "3", "9")


def _read(directory: str, name: str) -> dict:
  return workdir_files.read_json(directory, name) or {}


def run_record(directory: str) -> Optional[Dict[str, float]]:
  """A finished run's validation and (where evaluated) test figures, or None before its summary exists."""
  summary = _read(directory, workdir_files.SUMMARY_FILE)
  if not summary:
    return None
  info = _read(directory, workdir_files.RUN_INFO_FILE)
  flops = summary.get("step_flops") or info.get("step_flops")
  row = {
    "val_knn": summary.get("knn_top1/student"),
    "val_teacher_knn": summary.get("knn_top1/teacher"),
    "train_minutes": summary.get("train_time_s", math.nan) / 60,
    "steps": summary.get("steps"),
    "train_pflop": flops * summary["steps"] / 1e15 if flops and summary.get("steps") else None,
    "test_knn": _read(directory, os.path.join(TEST_DIR, "knn_student.json")).get("knn_top1/k20"),
    "test_teacher_knn": _read(directory, os.path.join(TEST_DIR, "knn_teacher.json")).get("knn_top1/k20"),
    "test_linear": _read(directory, os.path.join(TEST_DIR, "linear_fast", workdir_files.LINEAR_EVAL_FILE)).get("top1"),
  }
  return {k: (math.nan if v is None else float(v)) for k, v in row.items()}


def records(study, workdir: str) -> Dict[str, Dict[int, Dict[str, float]]]:
  """preset -> seed -> record, for every finished run of the study."""
  out: Dict[str, Dict[int, Dict[str, float]]] = {}
  for preset, seed in parse_runs(study.runs):
    row = run_record(run_dir(workdir, preset, seed))
    if row is not None:
      out.setdefault(preset, {})[seed] = row
  return out


def _f(value: float, digits: int = 2) -> str:
  return MISSING if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def references_lines(study) -> List[str]:
  """The raw-pixel references on both splits, from their committed records."""
  lines = ["| raw pixels (784 normalised values) | kNN top-1 | linear (fast) top-1 | command |", "|---|---|---|---|"]
  for split in ("validation", "test"):
    ref = _read(study.references_dir, f"raw_pixels_{split}.json")
    lines.append(
      f"| {split} (train on the 50k) | {_f(ref.get('knn_top1/k20'))} | {_f(ref.get('linear_top1'))} | "
      f"`{ref.get('command', MISSING)}` |"
    )
  return lines


def sweep_lines(study, recs) -> List[str]:
  """The validation sweep: final validation kNN top-1 per method and learning-rate multiplier (seed 0)."""
  e = study.sweep_epochs
  lines = [
    f"| method (validation kNN top-1 after {e} epochs, seed 0) | "
    + " | ".join(f"×{m}" for m in MULTIPLIERS)
    + " | chosen | minutes at ×1 |",
    "|---|" + "---|" * (len(MULTIPLIERS) + 2),
  ]
  for base in study.sweep:
    cells = []
    for m in MULTIPLIERS:
      rec = recs.get(f"{base}_lr{m}_e{e}", {}).get(0)
      cell = _f(rec["val_knn"]) if rec else MISSING
      cells.append(f"**{cell}**" if study.chosen.get(base) == m and rec else cell)
    one = recs.get(f"{base}_lr1_e{e}", {}).get(0)
    lines.append(
      f"| {study.labels.get(base, base)} | " + " | ".join(cells) + f" | "
      f"{('×' + study.chosen[base]) if base in study.chosen else 'pending'} | "
      f"{_f(one['train_minutes'], 1) if one else MISSING} |"
    )
  return lines


def family_lines(study, recs, schedule: int = 10) -> List[str]:
  """The family of comparisons on the primary metric: paired mean, 95% CI, signs, p and Holm-adjusted p."""
  rows, pvalues = [], []
  for a, b, name in study.family:
    ra = recs.get(f"{a}_lr{study.chosen.get(a, '1')}_e{schedule}", {})
    rb = recs.get(f"{b}_lr{study.chosen.get(b, '1')}_e{schedule}", {})
    stats = paired_interval({s: r["test_knn"] for s, r in ra.items()}, {s: r["test_knn"] for s, r in rb.items()})
    rows.append((name, a, b, stats))
    pvalues.append(stats["p"])
  adjusted = holm(pvalues)
  lines = [
    "| comparison (test kNN top-1, b − a) | seeds | mean | 95% CI | signs (+/−) | p | Holm p |",
    "|---|---|---|---|---|---|---|",
  ]
  for (name, a, b, st), adj in zip(rows, adjusted):
    ci = MISSING if not math.isfinite(st["low"]) else f"[{st['low']:+.2f}, {st['high']:+.2f}]"
    lines.append(
      f"| {name}: {study.labels.get(b, b)} − {study.labels.get(a, a)} | {st['n']} | "
      f"{_f(st['mean'])} | {ci} | {st['positive']}/{st['negative']} | {_f(st['p'], 3)} | "
      f"{_f(adj, 3)} |"
    )
  return lines


def v3_markdown(study, workdir: str, figure_paths: Sequence[str] = ()) -> str:
  """The study's section (between its markers) as markdown."""
  recs = records(study, workdir)
  runs = parse_runs(study.runs)
  done = sum(1 for p, s in runs if s in recs.get(p, {}))
  minutes = sum(
    r["train_minutes"] for seeds in recs.values() for r in seeds.values() if math.isfinite(r["train_minutes"])
  )
  untrained = recs.get("untrained_student", {}).get(0)
  lines = [
    f"**Runs finished**: {done} of the {len(runs)} listed so far; pretraining wall time "
    f"{minutes / 60:.2f} h (runs at nice 10 beside other work: wall time, not compute).",
    "",
    "**References** (raw pixels through the networks' kNN and fast linear evaluation):",
    "",
  ]
  lines += references_lines(study)
  if untrained:
    lines += [
      "",
      f"The untrained student (its initial weights): validation kNN {_f(untrained['val_knn'])}, "
      f"test kNN {_f(untrained['test_knn'])}, test linear (fast) {_f(untrained['test_linear'])}.",
    ]
  lines += ["", "**Phase 1, the validation sweep** (learning rate × the method's recipe rate; bold: chosen):", ""]
  lines += sweep_lines(study, recs)
  if any(k.endswith("_e10") for k in recs):
    lines += ["", "**The family** (primary metric, 10 epochs):", ""] + family_lines(study, recs)
  for path in figure_paths:
    lines += ["", f"![{os.path.basename(path)}]({path})"]
  return "\n".join(lines)


FIGURE1_METHODS = ("simdis_off_7v", "simdis_on_7v", "simdis_off_2v", "simdis_on_2v", "seed", "byol_student")
FIGURE3_METHODS = (
  "moco_v2",
  "byol_student",
  "seed",
  "simdis_on_2v",
  "simdis_off_2v",
  "simdis_on_7v",
  "simdis_off_7v",
  "supervised_standard",
)


def write_figures(study, workdir: str, results: str, figures: str) -> List[str]:
  """Draws Figures 1 and 3 from the records (where test numbers exist); their paths relative to `results`."""
  recs = records(study, workdir)
  ref = _read(study.references_dir, "raw_pixels_test.json")
  references = {"knn": ref.get("knn_top1/k20"), "linear": ref.get("linear_top1")}
  untrained = recs.get("untrained_student", {}).get(0)
  if untrained and math.isfinite(untrained["test_knn"]):
    references["untrained"] = untrained["test_knn"]
  references = {k: v for k, v in references.items() if v is not None}
  drawn = [
    v3_figures.write_figure1(study, recs, references, os.path.join(figures, "v3_figure1_cost.png"), FIGURE1_METHODS),
    v3_figures.write_figure3(study, recs, references, os.path.join(figures, "v3_figure3.png"), FIGURE3_METHODS),
  ]
  return [os.path.relpath(f, os.path.dirname(os.path.abspath(results))) for f in drawn if f]
