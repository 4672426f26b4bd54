"""A study: many pretraining runs (presets x seeds), resumable, then one report with mean ± std.

    python -m simdis_jax.study --config configs/fashion_mnist/study.py --workdir workdirs/fmnist_study

Each run is `python -m simdis_jax.main --config <presets>:<preset> --config.seed=<seed>
--workdir <workdir>/<preset>/seed<seed>` in a subprocess, so each one can be repeated by hand with
that command; its output goes to `<run workdir>/output.log`. A run counts as done when its
pretraining summary and its linear evaluation are both written; the study skips done runs and
resumes unfinished ones from their checkpoints, so the same command continues after any
interruption. SIGTERM/SIGINT are passed on to the running run, which saves and stops; the study then
exits with status 143. A failing run is recorded and the study goes on with the runs that do not
need it. The report (the study's table between two markers in `config.results`, plus figures in
`config.figures`) is rewritten after every finished run; text outside the markers is kept.
`--report_only` writes it from whatever has finished.

Runs also outlive the machine: with `config.archive` set (a folder in the repository), each
finished run's record (config, run info, summary, metrics, linear evaluations, and the
commits it ran on) is copied there, and the offline teacher's run also with its final
checkpoint, which its students need. On a fresh clone the study restores archived runs into
the workdir instead of re-running them, so committing the archive carries the study from one
machine to the next run by run.
"""

import datetime
import functools
import importlib.util
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

from absl import app, flags
from ml_collections import config_flags
import scipy.stats

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Study config file (configs/*/study.py).", lock_config=True)
flags.DEFINE_string("workdir", None, "Where the runs' workdirs go: <workdir>/<preset>/seed<seed>.")
flags.DEFINE_string("results", None, "The report's markdown file (default: config.results).")
flags.DEFINE_string("figures", None, "Folder of the report's figures (default: config.figures).")
flags.DEFINE_string("archive", None, "Folder of the finished runs' records, restored on a fresh machine "
                    "(default: config.archive; '' = none).")
flags.DEFINE_bool("report_only", False, "Only write the report from the runs finished so far.")
flags.DEFINE_bool("dry_run", False, "Print each run's command and whether it is done; run nothing.")
flags.mark_flags_as_required(["config", "workdir"])

BEGIN, END = "<!-- study:begin (written by simdis_jax.study; edits here are overwritten) -->", "<!-- study:end -->"
STATUS_FILE = "study_status.json"
DEFAULT_CONFIG = "configs/fashion_mnist/study.py"
PREEMPTED_EXIT_CODE = 143

# Orientation only: the paper's ImageNet linear top-1 (ResNet-50 teacher -> ResNet-18 student).
# Table 1: standard setting (LARS, SyncBN), 100 epochs. Table 2: no LARS/SyncBN, 100 epochs.
PAPER = {
    "byol_teacher": ("65.83", "Table 2 / Sec. 4.3: BYOL ResNet-50 teacher"),
    "byol_student": ("55.96", "Table 2: ResNet-18 alone"),
    "simdis_off_2v": ("61.76 / 62.66", "Table 1 SimDis-Off / Table 2 offline T̂-v'"),
    "simdis_off_7v": ("63.14", "Table 2 offline, 7 views"),
    "simdis_on_2v": ("58.08 / 58.84", "Table 1 SimDis-On / Table 2 online T̂-v'"),
    "simdis_on_7v": ("60.65 / 63.52", "Table 1 SimDis-On-7v / Table 2 online, 7 views"),
    "off_t_sv": ("59.67", "Table 2 offline T-v"),
    "off_t_dv": ("62.08", "Table 2 offline T-v'"),
    "off_tema_sv": ("59.72", "Table 2 offline T̂-v"),
    "supervised": ("—", "Fig. 3 upper bound (value not in the text)"),
    "untrained_student": ("—", ""),
}
LABELS = {
    "byol_teacher": "BYOL teacher (R18 w16)", "byol_student": "BYOL student alone",
    "simdis_off_2v": "SimDis-Off (Ŝ-v', T̂-v')", "simdis_off_7v": "SimDis-Off-7v",
    "simdis_on_2v": "SimDis-On (Ŝ-v', T̂-v')", "simdis_on_7v": "SimDis-On-7v",
    "off_t_sv": "Off, Ŝ-v' + T-v", "off_t_dv": "Off, Ŝ-v' + T-v'", "off_tema_sv": "Off, Ŝ-v' + T̂-v",
    "supervised": "Supervised student (cross-entropy)",
    "untrained_student": "Untrained student (reference)",
}
CENTRAL = ("byol_student", "simdis_off_7v", "simdis_on_7v")
# (baseline, run, the claim it tests): the report gives run - baseline for each pair that the study lists.
COMPARISONS = (
    ("byol_student", "simdis_off_7v", "claim 1"), ("byol_student", "simdis_on_7v", "claim 1"),
    ("byol_student", "supervised", ""), ("byol_student", "simdis_off_2v", "claim 1"),
    ("byol_student", "simdis_on_2v", "claim 1"), ("simdis_on_7v", "simdis_off_7v", "claim 2, 7 views"),
    ("simdis_on_2v", "simdis_off_2v", "claim 2, 2 views"), ("simdis_on_2v", "simdis_on_7v", "claim 3"),
    ("simdis_off_2v", "simdis_off_7v", "views, offline"))
# Measured on Fashion-MNIST (issue #7), for orientation.
REFERENCES = (("logistic regression on raw pixels (linear)", 84.4), ("weighted kNN on raw pixels (k=20)", 84.6),
              ("linear probe on pooled features of an untrained small conv net", 82.0))
SHORT_REFERENCES = {84.4: "pixels, logistic", 84.6: "pixels, kNN", 82.0: "untrained net (issue)"}


def parse_runs(entries: Sequence[str]) -> List[Tuple[str, int]]:
  """["preset:0,1", ...] -> [(preset, 0), (preset, 1), ...] in order, each pair once."""
  runs = []
  for entry in entries:
    preset, sep, seeds = entry.partition(":")
    if not sep or not preset or not seeds:
      raise ValueError(f"Study entry {entry!r} must look like '<preset>:<seed>[,<seed>...]', e.g. 'byol_student:0,1,2'.")
    try:
      seed_list = [int(s) for s in seeds.split(",")]
    except ValueError as e:
      raise ValueError(f"Study entry {entry!r}: seeds must be integers, e.g. 'byol_student:0,1,2'.") from e
    for seed in seed_list:
      if (preset, seed) not in runs:
        runs.append((preset, seed))
  return runs


def run_dir(workdir: str, preset: str, seed: int) -> str:
  return os.path.join(workdir, preset, f"seed{seed}")


def _read_json(path: str) -> Optional[dict]:
  try:
    with open(path) as f:
      return json.load(f)
  except (FileNotFoundError, json.JSONDecodeError):
    return None


FAST_LINEAR_DIR = "linear_fast"


def _done_files(study, directory: str) -> List[str]:
  files = [os.path.join(directory, "summary.json"), os.path.join(directory, "linear_student", "linear_eval.json")]
  if study.get("fast_linear"):
    files.append(os.path.join(directory, FAST_LINEAR_DIR, "linear_eval.json"))
  return files


def is_done(study, directory: str) -> bool:
  """Pretraining finished (summary.json), the student's linear evaluation (and the fast one) written."""
  return all(os.path.exists(f) for f in _done_files(study, directory))


# A finished run's record in the archive (paths relative to its workdir), and its run segments.
ARCHIVE_FILES = ("config.json", "run_info.json", "summary.json", "metrics.jsonl",
                 os.path.join("linear_student", "linear_eval.json"), os.path.join(FAST_LINEAR_DIR, "linear_eval.json"))
SEGMENTS_FILE = "study_segments.json"


def archive_dir(archive: str, preset: str, seed: int) -> str:
  return os.path.join(archive, preset, f"seed{seed}")


def _latest_checkpoint(directory: str) -> Optional[str]:
  """The highest finished step folder under <directory>/checkpoints (orbax's layout), or None."""
  root = os.path.join(directory, "checkpoints")
  steps = [int(d) for d in os.listdir(root) if d.isdigit()
           and os.path.exists(os.path.join(root, d, "commit_success.txt"))] if os.path.isdir(root) else []
  return os.path.join(root, str(max(steps))) if steps else None


def archive_run(study, workdir: str, archive: str, preset: str, seed: int, status: dict,
                with_checkpoint: bool = False) -> str:
  """Copies a finished run's record (and, for the offline teacher, its final checkpoint) into the archive."""
  src, dst = run_dir(workdir, preset, seed), archive_dir(archive, preset, seed)
  if not is_done(study, src):
    raise ValueError(f"{src} is not a finished run; only finished runs are archived.")
  tmp = dst + ".tmp"
  shutil.rmtree(tmp, ignore_errors=True)
  for rel in ARCHIVE_FILES:
    if os.path.exists(os.path.join(src, rel)):
      os.makedirs(os.path.dirname(os.path.join(tmp, rel)), exist_ok=True)
      shutil.copy2(os.path.join(src, rel), os.path.join(tmp, rel))
  name = f"{preset}/seed{seed}"
  _write_json(os.path.join(tmp, SEGMENTS_FILE), [g for g in status.get("segments", []) if g["run"] == name])
  if with_checkpoint:
    latest = _latest_checkpoint(src)
    if latest is None:
      raise FileNotFoundError(f"The teacher run {src} has no finished checkpoint to archive.")
    shutil.copytree(latest, os.path.join(tmp, "checkpoints", os.path.basename(latest)))
  shutil.rmtree(dst, ignore_errors=True)
  os.replace(tmp, dst)
  return dst


def is_archived(study, archive: str, preset: str, seed: int, with_checkpoint: bool = False) -> bool:
  directory = archive_dir(archive, preset, seed)
  return is_done(study, directory) and (not with_checkpoint or _latest_checkpoint(directory) is not None)


def restore_from_archive(study, workdir: str, archive: str, preset: str, seed: int, status: dict) -> bool:
  """Copies an archived run into a workdir where it is not finished; True if it did."""
  src, dst = archive_dir(archive, preset, seed), run_dir(workdir, preset, seed)
  if is_done(study, dst) or not is_done(study, src):
    return False
  for root, _, files in os.walk(src):
    for name in files:
      if name == SEGMENTS_FILE and root == src:
        continue
      target = os.path.join(dst, os.path.relpath(os.path.join(root, name), src))
      os.makedirs(os.path.dirname(target), exist_ok=True)
      shutil.copy2(os.path.join(root, name), target)
  segments = _read_json(os.path.join(src, SEGMENTS_FILE)) or []
  known = {(g["run"], g.get("commit"), g.get("seconds")) for g in status.setdefault("segments", [])}
  status["segments"] += [g for g in segments if (g["run"], g.get("commit"), g.get("seconds")) not in known]
  return True


def command(study, workdir: str, preset: str, seed: int) -> List[str]:
  """The run's own command line (what a person would type to repeat it)."""
  cmd = [sys.executable, "-m", "simdis_jax.main", f"--config={study.presets}:{preset}",
         f"--config.seed={seed}", f"--workdir={run_dir(workdir, preset, seed)}"]
  if _method_of(study, preset) == "simdis_off":
    t_preset, t_seed = parse_runs([study.teacher_run])[0]
    cmd.append(f"--config.teacher.workdir={run_dir(workdir, t_preset, t_seed)}")
  return cmd + list(study.get("overrides", ()))


def commands(study, workdir: str, preset: str, seed: int) -> List[List[str]]:
  """The run's commands still to do: pretraining (+ its final linear eval), then the fast linear eval."""
  directory = run_dir(workdir, preset, seed)
  todo = []
  if not all(os.path.exists(f) for f in _done_files(study, directory)[:2]):
    todo.append(command(study, workdir, preset, seed))
  if study.get("fast_linear") and not os.path.exists(os.path.join(directory, FAST_LINEAR_DIR, "linear_eval.json")):
    todo.append([sys.executable, "-m", "simdis_jax.main", f"--config={study.fast_linear}", f"--config.seed={seed}",
                 f"--workdir={os.path.join(directory, FAST_LINEAR_DIR)}", f"--config.pretrained.workdir={directory}"]
                + list(study.get("fast_linear_overrides", ())))
  return todo


@functools.lru_cache(maxsize=None)
def _presets_module(path: str):
  if not os.path.exists(path):
    raise FileNotFoundError(f"The study's presets file {path!r} does not exist (run from the repository root, "
                            "or set config.presets to its path).")
  spec = importlib.util.spec_from_file_location(f"study_presets_{abs(hash(path))}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _preset_config(study, preset: str):
  """The preset's config, as `--config <presets>:<preset>` gives it to simdis_jax.main."""
  return _presets_module(study.presets).get_config(preset)


def _method_of(study, preset: str) -> str:
  return _preset_config(study, preset).method


class _Forwarder:
  """Passes SIGTERM/SIGINT on to the running child; remembers that the study must stop."""

  def __init__(self):
    self.child: Optional[subprocess.Popen] = None
    self.stopping = False
    self._old = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}

  def _handle(self, signum, frame):
    del frame
    self.stopping = True
    if self.child is not None and self.child.poll() is None:
      self.child.send_signal(signal.SIGTERM)  # the run saves at its next step and exits 143
    print(f"Study: signal {signum}; the running run saves and stops, then the study exits.", flush=True)

  def close(self):
    for s, handler in self._old.items():
      signal.signal(s, handler)


def sync_archive(study, workdir: str, archive: str, status: dict) -> None:
  """Restores archived runs missing from the workdir, and archives finished runs missing from the archive."""
  if not archive:
    return
  teacher = parse_runs([study.teacher_run])[0]
  restored = []
  for preset, seed in parse_runs(study.runs):
    if restore_from_archive(study, workdir, archive, preset, seed, status):
      restored.append(f"{preset}/seed{seed}")
    elif is_done(study, run_dir(workdir, preset, seed)):
      with_checkpoint = (preset, seed) == teacher
      if not is_archived(study, archive, preset, seed, with_checkpoint):
        archive_run(study, workdir, archive, preset, seed, status, with_checkpoint)
  if restored:
    print(f"Study: restored {len(restored)} finished run(s) from {archive}: {', '.join(restored)}", flush=True)
  os.makedirs(workdir, exist_ok=True)
  _write_json(os.path.join(workdir, STATUS_FILE), status)


def run_study(study, workdir: str, results: str, figures: str, config_path: str = DEFAULT_CONFIG,
              archive: str = "") -> int:
  """Runs every (preset, seed) not done yet, in order; writes the report after each; returns an exit code."""
  runs = parse_runs(study.runs)
  teacher = parse_runs([study.teacher_run])[0]
  status = _read_json(os.path.join(workdir, STATUS_FILE)) or {"failed": {}, "segments": []}
  status.setdefault("failed", {})
  sync_archive(study, workdir, archive, status)
  forwarder = _Forwarder()
  failed = set()
  started = time.time()
  try:
    for preset, seed in runs:
      directory = run_dir(workdir, preset, seed)
      if is_done(study, directory):
        continue
      needs_teacher = _method_of(study, preset) == "simdis_off"
      if needs_teacher and teacher in failed:
        print(f"Study: skipping {preset} seed {seed}: its teacher run failed.", flush=True)
        continue
      os.makedirs(directory, exist_ok=True)
      for cmd in commands(study, workdir, preset, seed):
        print(f"Study: {preset} seed {seed}: {' '.join(cmd)}", flush=True)
        t0, commit = time.time(), _commit()  # the code the run starts on (a pull during it changes nothing it runs)
        with open(os.path.join(directory, "output.log"), "a") as log:
          log.write(f"\n=== {datetime.datetime.now().isoformat(timespec='seconds')}: {' '.join(cmd)}\n")
          log.flush()
          forwarder.child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
          code = forwarder.child.wait()
          forwarder.child = None
        status["segments"].append({"run": f"{preset}/seed{seed}", "seconds": time.time() - t0, "exit": code,
                                   "commit": commit})
        if code == 0:
          continue
        if forwarder.stopping or code == PREEMPTED_EXIT_CODE:
          forwarder.stopping = True
        else:
          failed.add((preset, seed))
          status["failed"][f"{preset}/seed{seed}"] = (f"exit status {code}; see "
                                                      f"{os.path.join(directory, 'output.log')}")
          print(f"Study: {preset} seed {seed} FAILED (exit {code}); see {directory}/output.log. "
                "Going on with the other runs.", flush=True)
        break
      if is_done(study, directory):
        status["failed"].pop(f"{preset}/seed{seed}", None)
        print(f"Study: {preset} seed {seed} done.", flush=True)
        if archive:
          print(f"Study: archived in {archive_run(study, workdir, archive, preset, seed, status, (preset, seed) == teacher)}"
                " (commit it to keep it).", flush=True)
      _write_json(os.path.join(workdir, STATUS_FILE), status)
      write_report(study, workdir, results, figures, config_path)
      if forwarder.stopping:
        print("Study: stopped; run the same command to continue.", flush=True)
        return PREEMPTED_EXIT_CODE
  finally:
    forwarder.close()
  write_report(study, workdir, results, figures, config_path)
  todo = [r for r in runs if not is_done(study, run_dir(workdir, *r))]
  print(f"Study: {len(runs) - len(todo)} of {len(runs)} runs done ({time.time() - started:.0f}s this time); "
        f"report in {results}.", flush=True)
  return 1 if todo else 0


def _write_json(path: str, value) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=2)
  os.replace(tmp, path)


# --------------------------------------------------------------------------- results

def collect(study, directory: str) -> Optional[Dict[str, float]]:
  """One finished run's figures, or None."""
  if not is_done(study, directory):
    return None
  summary = _read_json(os.path.join(directory, "summary.json"))
  linear = _read_json(os.path.join(directory, "linear_student", "linear_eval.json"))
  info = _read_json(os.path.join(directory, "run_info.json")) or {}
  fast = _read_json(os.path.join(directory, FAST_LINEAR_DIR, "linear_eval.json")) or {}
  init = summary.get("knn_top1/student_init")
  if init is None:  # the summary of a resumed run lacks it: step 0's kNN line of the first process
    init = _step0_knn(directory)
  row = {
      "linear_top1": linear["top1"], "linear_top5": linear["top5"], "fast_linear_top1": fast.get("top1"),
      "knn_top1": summary.get("knn_top1/student"), "knn_top1_init": init,
      "teacher_knn_top1": summary.get("knn_top1/teacher"),
      "train_minutes": summary.get("train_time_s", float("nan")) / 60,
      "linear_minutes": linear.get("wall_time_s", float("nan")) / 60,
      "step_gflops": (summary.get("step_flops") or info.get("step_flops") or float("nan")) / 1e9,
      "epochs": summary.get("epochs"), "steps": summary.get("steps"), "linear_epochs": linear.get("epochs"),
      "images_per_sec": summary.get("images_per_sec"),
  }
  return {k: (float(v) if v is not None else float("nan")) for k, v in row.items()}


def _step0_knn(directory: str) -> Optional[float]:
  try:
    with open(os.path.join(directory, "metrics.jsonl")) as f:
      for line in f:
        row = json.loads(line)
        if row.get("step") == 0 and "knn_top1/student" in row:
          return row["knn_top1/student"]
  except (OSError, json.JSONDecodeError):
    pass
  return None


def mean_std(values: Sequence[float]) -> Tuple[float, float, int]:
  """Mean, sample standard deviation (ddof=1; 0 for one value) and count of the finite values."""
  xs = [v for v in values if v is not None and math.isfinite(v)]
  if not xs:
    return float("nan"), float("nan"), 0
  m = sum(xs) / len(xs)
  s = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
  return m, s, len(xs)


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


def _pm(stat, digits: int = 2) -> str:
  if not stat or stat[2] == 0 or not math.isfinite(stat[0]):
    return "—"
  m, s, n = stat
  return f"{m:.{digits}f} ± {s:.{digits}f}" if n > 1 else f"{m:.{digits}f}"


def _one(stat, digits: int = 1) -> str:
  return "—" if not stat or stat[2] == 0 or not math.isfinite(stat[0]) else f"{stat[0]:.{digits}f}"


def difference(a, b) -> Tuple[float, float, float]:
  """Mean of b minus mean of a, the standard error of that difference, and Welch's two-sided p-value.

  The standard error and the test use the seeds' sample spread (Welch: unequal variances, the
  Welch-Satterthwaite degrees of freedom). The p-value is nan where either side has fewer than 2 seeds.
  """
  (ma, sa, na), (mb, sb, nb) = a, b
  va, vb = (sa ** 2 / na if na else 0.0), (sb ** 2 / nb if nb else 0.0)
  d, se = mb - ma, math.sqrt(va + vb)
  if na < 2 or nb < 2:
    return d, se, float("nan")
  if se == 0.0:
    return d, se, (1.0 if d == 0.0 else 0.0)
  return d, se, float(scipy.stats.ttest_ind_from_stats(mb, sb, nb, ma, sa, na, equal_var=False).pvalue)


def common_seeds(runs_a: Dict[int, dict], runs_b: Dict[int, dict], metric: str) -> List[int]:
  """The seeds (ascending) where both presets have a finite `metric`."""
  return [k for k in sorted(set(runs_a) & set(runs_b))
          if math.isfinite(runs_a[k].get(metric, math.nan)) and math.isfinite(runs_b[k].get(metric, math.nan))]


def paired_difference(runs_a: Dict[int, dict], runs_b: Dict[int, dict], metric: str) -> Tuple[float, float, float, int]:
  """b minus a over the seeds both finished (same seed: same initial student and data order): mean, s.e., p, n.

  A paired two-sided t-test on the per-seed differences; the p-value is nan below 2 common seeds.
  """
  seeds = common_seeds(runs_a, runs_b, metric)
  a, b = [runs_a[k][metric] for k in seeds], [runs_b[k][metric] for k in seeds]
  diffs = [y - x for x, y in zip(a, b)]
  n = len(diffs)
  if n < 2:
    return (diffs[0] if diffs else math.nan), math.nan, math.nan, n
  mean = sum(diffs) / n
  se = math.sqrt(sum((x - mean) ** 2 for x in diffs) / (n - 1) / n)
  if se == 0.0:
    return mean, se, (1.0 if mean == 0.0 else 0.0), n
  return mean, se, float(scipy.stats.ttest_rel(b, a).pvalue), n


def hardware() -> str:
  model = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    if names:
      model = names[0]
  except OSError:
    pass
  return f"{model}, {os.cpu_count()} cores visible, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def _commit() -> str:
  try:
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                           cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
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
    return f"commit {_commit()}"
  return ("the finished runs ran, whole or in segments, on commit" + ("s " if len(used) > 1 else " ")
          + ", ".join(f"{c} ({len(r)} run{'s' if len(r) > 1 else ''})" for c, r in sorted(used.items())))


def report_markdown(study, workdir: str, agg: Dict[str, Dict], figure_paths: Sequence[str], status: dict,
                    config_path: str = DEFAULT_CONFIG) -> str:
  runs = parse_runs(study.runs)
  done = sum(len(e["runs"]) for e in agg.values())
  train_min = sum(r["train_minutes"] for e in agg.values() for r in e["runs"].values() if math.isfinite(r["train_minutes"]))
  lin_min = sum(r["linear_minutes"] for e in agg.values() for r in e["runs"].values() if math.isfinite(r["linear_minutes"]))
  lines = [
      BEGIN, "",
      f"**Command** (from the repository root): `python -m simdis_jax.study --config {config_path} "
      f"--workdir {os.path.relpath(workdir) if not os.path.isabs(workdir) else workdir}`  ",
      f"**Hardware**: {hardware()}; one JAX CPU device.  ",
      f"**Code**: {_commits_line(status, agg)}.  ",
      f"**Runs finished**: {done} of {len(runs)}; pretraining {train_min / 60:.2f} h + linear evaluation "
      f"{lin_min / 60:.2f} h = **{(train_min + lin_min) / 60:.2f} h** of compute (sum over finished runs; "
      f"report written {datetime.datetime.now().isoformat(timespec='minutes')}).",
      "",
      "Linear (full): DeepMind's protocol, full mode (crop + flip through the frozen encoder), 10 epochs, top-1 on "
      "the 10k test images. Linear (fast): the authors' protocol, 80 epochs on cached features of the whole images "
      "(`configs/fashion_mnist/linear_eval.py:authors,fast`), which converges where 10 full-mode epochs do not. kNN: weighted, k = 20, T = 0.07, 60k train images as the bank. Mean ± sample std over the "
      "seeds listed; one seed shows no ±. GFLOP/step: XLA's cost analysis of the whole train step "
      "(batch 128, both views, every network). Train min: pretraining wall time per run (mean), including the "
      "kNN at the start and the end.",
      "",
      "| run | seeds | linear top-1 (full) | linear top-1 (fast) | kNN top-1 | kNN untrained | GFLOP/step | train min | linear min | paper (ImageNet) |",
      "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for preset, entry in agg.items():
    seeds = ",".join(str(s) for s in entry["seeds"] if s in entry["runs"]) or "—"
    if len(entry["runs"]) < len(entry["seeds"]):
      seeds += f" (of {','.join(str(s) for s in entry['seeds'])})"
    paper, source = PAPER.get(preset, ("—", ""))
    lines.append(
        f"| {LABELS.get(preset, preset)} | {seeds} | {_pm(entry.get('linear_top1'))} | "
        f"{_pm(entry.get('fast_linear_top1'))} | {_pm(entry.get('knn_top1'))} | "
        f"{_pm(entry.get('knn_top1_init'))} | {_one(entry.get('step_gflops'))} | {_one(entry.get('train_minutes'))} | "
        f"{_one(entry.get('linear_minutes'))} | {paper}{f' ({source})' if source else ''} |")
  teacher = agg.get("byol_teacher", {})
  on7 = agg.get("simdis_on_7v", {})
  if on7.get("teacher_knn_top1"):
    lines.append("")
    lines.append(f"The online teachers of SimDis-On-7v reached kNN top-1 {_pm(on7['teacher_knn_top1'])}; the offline "
                 f"teacher (BYOL, same network and epochs) {_pm(teacher.get('knn_top1'))}.")
  lines += ["", "**Comparisons** (differences to the student alone unless named, ± the standard error of the difference "
            "from the seeds' spread; Welch's two-sided t-test over seeds, p < 0.05 is marked as beyond seed noise; then the "
            "paired t-test over the seeds both ran, which share the initial student and the data order):", ""]
  for base_preset, preset, what in COMPARISONS:
    if base_preset not in agg or preset not in agg:
      continue
    base, entry = agg[base_preset], agg[preset]
    parts = []
    for metric, name in (("linear_top1", "linear (full)"), ("fast_linear_top1", "linear (fast)"), ("knn_top1", "kNN")):
      a, b = base.get(metric), entry.get(metric)
      if not a or not b or not a[2] or not b[2]:
        parts.append(f"{name}: not finished")
        continue
      d, se, p = difference(a, b)
      if a[2] < 2 or b[2] < 2:  # one side has no spread to test against
        text = f"{name} {d:+.2f} ({a[2]} seed{'s' if a[2] > 1 else ''} vs {b[2]}: no seed spread to test"
        pd, _, _, pn = paired_difference(base["runs"], entry["runs"], metric)
        if pn == 1 and max(a[2], b[2]) > 1:  # the like-for-like figure: same initial student and data order
          text += f"; seed {common_seeds(base['runs'], entry['runs'], metric)[0]} alone: {pd:+.2f}"
        parts.append(text + ")")
        continue
      noise = "beyond seed noise" if p < 0.05 else "within seed noise"
      text = f"{name} {d:+.2f} ± {se:.2f} ({noise}, p = {p:.3f}"
      pd, pse, pp, pn = paired_difference(base["runs"], entry["runs"], metric)
      if pn >= 2:
        text += f"; paired by seed over {pn}: {pd:+.2f} ± {pse:.2f}, p = {pp:.3f}"
      parts.append(text + ")")
    label = LABELS.get(preset, preset) if base_preset == CENTRAL[0] else (
        f"{LABELS.get(preset, preset)} − {LABELS.get(base_preset, base_preset)}")
    lines.append(f"- {label}{f' ({what})' if what else ''}: " + "; ".join(parts))
  if status.get("failed"):
    lines += ["", "**Failed runs**: " + "; ".join(f"{k}: {v}" for k, v in status["failed"].items())]
  lines += ["", "References on this data (issue #7): " + "; ".join(f"{n} {v:.1f}%" for n, v in REFERENCES) + "."]
  for path in figure_paths:
    lines += ["", f"![{os.path.basename(path)}]({path})"]
  lines += ["", END]
  return "\n".join(lines)


def write_figure(agg: Dict[str, Dict], path: str) -> Optional[str]:
  """Bars of linear and kNN top-1 (mean ± std, seeds as dots) per run, with the raw-pixel references."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  presets = [p for p, e in agg.items() if e["runs"]]
  if not presets:
    return None
  panels = (("linear_top1", "linear top-1, full, 10 ep (%)"), ("fast_linear_top1", "linear top-1, fast, 80 ep (%)"),
            ("knn_top1", "kNN top-1 (%)"))
  fig, axes = plt.subplots(1, 3, figsize=(17, 0.45 * len(presets) + 1.8), sharey=True)
  for ax, (metric, title) in zip(axes, panels):
    ys = list(range(len(presets)))[::-1]
    for y, preset in zip(ys, presets):
      m, s, _ = agg[preset].get(metric, (float("nan"), 0.0, 0))
      if not math.isfinite(m):
        continue
      color = "C0" if preset in CENTRAL else ("C2" if preset == "supervised" else "C7")
      ax.barh(y, m, xerr=s, color=color, alpha=0.75, capsize=3)
      for row in agg[preset]["runs"].values():
        ax.plot(row[metric], y, "k.", ms=4)
      ax.text(m, y, f" {m:.1f}", va="center", fontsize=8)
    for _, value in (REFERENCES[1],) if metric == "knn_top1" else (REFERENCES[0], REFERENCES[2]):
      ax.axvline(value, color="C3", ls="--", lw=1)
      ax.text(value, -0.45, SHORT_REFERENCES[value], rotation=90, va="bottom", ha="right", fontsize=7, color="C3")
    finite = [agg[p][metric][0] for p in presets if metric in agg[p] and math.isfinite(agg[p][metric][0])]
    low = min(finite) if finite else 80.0
    ax.set_xlim(max(0.0, min(low, 80.0) - 3.0), 96.0)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
  axes[0].set_yticks(list(range(len(presets)))[::-1])
  axes[0].set_yticklabels([LABELS.get(p, p) for p in presets], fontsize=8)
  fig.suptitle("Fashion-MNIST study: student ResNet-10 w8, teacher ResNet-18 w16, 3 epochs (bars: mean ± std; dots: seeds)",
               fontsize=10)
  fig.tight_layout()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def write_report(study, workdir: str, results: str, figures: str, config_path: str = DEFAULT_CONFIG) -> str:
  """Writes the study's section of `results` (keeping text outside the markers), results.json and figures."""
  agg = aggregate(study, workdir)
  status = _read_json(os.path.join(workdir, STATUS_FILE)) or {}
  os.makedirs(figures, exist_ok=True)
  figure = write_figure(agg, os.path.join(figures, "study_top1.png"))
  rel = [os.path.relpath(figure, os.path.dirname(os.path.abspath(results)))] if figure else []
  section = report_markdown(study, workdir, agg, rel, status, config_path)
  _write_json(os.path.join(figures, "results.json"), {
      p: {"seeds": e["seeds"], "runs": {str(s): r for s, r in e["runs"].items()},
          **{k: list(v) for k, v in e.items() if k not in ("seeds", "runs")}} for p, e in agg.items()})
  text = ""
  if os.path.exists(results):
    with open(results) as f:
      text = f.read()
  if BEGIN in text and END in text:
    head, rest = text.split(BEGIN, 1)
    text = head + section + rest.split(END, 1)[1]
  else:
    text = (text or "# Results\n\n") + "\n" + section + "\n"
  tmp = results + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, results)
  return section


def main(argv):
  del argv
  study = FLAGS.config
  results = FLAGS.results or study.results
  figures = FLAGS.figures or study.figures
  archive = study.get("archive", "") if FLAGS.archive is None else FLAGS.archive
  for preset, _ in parse_runs(study.runs):
    _preset_config(study, preset)  # a misspelt preset fails now, not hours later
  if FLAGS.dry_run:
    for preset, seed in parse_runs(study.runs):
      todo = commands(study, FLAGS.workdir, preset, seed)
      if todo and archive and is_archived(study, archive, preset, seed):
        print(f"[archived] {preset} seed {seed}: restored from {archive} by the study command")
        continue
      if not todo:
        print(f"[done] {preset} seed {seed}")
      for cmd in todo:
        print(f"[to run] {' '.join(cmd)}")
    return
  if FLAGS.report_only:
    status = _read_json(os.path.join(FLAGS.workdir, STATUS_FILE)) or {"failed": {}, "segments": []}
    sync_archive(study, FLAGS.workdir, archive, status)
    print(write_report(study, FLAGS.workdir, results, figures, FLAGS["config"].config_filename))
    return
  sys.exit(run_study(study, FLAGS.workdir, results, figures, FLAGS["config"].config_filename, archive))


if __name__ == "__main__":
  app.run(main)
