"""Runs outlive the machine: each finished run's record is copied into an archive in the repository, and restored.

The record is a run's config, run info, summary, metrics, linear evaluations and
the commits it ran on (its segments of the study's status); the offline teacher's
run also keeps its final checkpoint, which its students need. On a fresh clone
the study restores archived runs into the workdir instead of re-running them, so
committing the archive carries the study from one machine to the next run by run.
"""

import os
import shutil

from simdis_jax import workdir as workdir_files
from simdis_jax.tools.study.plan import (
  FAST_LINEAR_DIR,
  STUDENT_LINEAR_DIR,
  TEST_DIR,
  is_done,
  last_checkpoint,
  parse_runs,
  run_dir,
  teacher_runs,
  write_status,
)

# A finished run's record in the archive (paths relative to its workdir), and its run segments.
ARCHIVE_FILES = (
  workdir_files.CONFIG_FILE,
  workdir_files.RUN_INFO_FILE,
  workdir_files.SUMMARY_FILE,
  workdir_files.METRICS_FILE,
  os.path.join(STUDENT_LINEAR_DIR, workdir_files.LINEAR_EVAL_FILE),
  os.path.join(FAST_LINEAR_DIR, workdir_files.LINEAR_EVAL_FILE),
  os.path.join(TEST_DIR, "knn_student.json"),
  os.path.join(TEST_DIR, "knn_teacher.json"),
  os.path.join(TEST_DIR, "linear_fast", workdir_files.LINEAR_EVAL_FILE),
)
SEGMENTS_FILE = "study_segments.json"


def archive_dir(archive: str, preset: str, seed: int) -> str:
  """Where one run's record lives in the archive."""
  return os.path.join(archive, preset, f"seed{seed}")


def archive_run(
  study, workdir: str, archive: str, preset: str, seed: int, status: dict, with_checkpoint: bool = False
) -> str:
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
  os.makedirs(tmp, exist_ok=True)
  workdir_files.write_json(tmp, SEGMENTS_FILE, [g for g in status.get("segments", []) if g["run"] == name], indent=2)
  if with_checkpoint:
    latest = last_checkpoint(src)
    if latest is None:
      raise FileNotFoundError(f"The teacher run {src} has no finished checkpoint to archive.")
    shutil.copytree(latest, os.path.join(tmp, workdir_files.CHECKPOINT_DIR, os.path.basename(latest)))
  shutil.rmtree(dst, ignore_errors=True)
  os.replace(tmp, dst)
  return dst


def is_archived(study, archive: str, preset: str, seed: int, with_checkpoint: bool = False) -> bool:
  """Whether the archive holds the run's whole record (and, if asked, its final checkpoint)."""
  directory = archive_dir(archive, preset, seed)
  return is_done(study, directory) and (not with_checkpoint or last_checkpoint(directory) is not None)


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
  segments = workdir_files.read_json(src, SEGMENTS_FILE) or []
  known = {(g["run"], g.get("commit"), g.get("seconds")) for g in status.setdefault("segments", [])}
  status["segments"] += [g for g in segments if (g["run"], g.get("commit"), g.get("seconds")) not in known]
  return True


def sync_archive(study, workdir: str, archive: str, status: dict) -> None:
  """Restores archived runs missing from the workdir, and archives finished runs missing from the archive."""
  if not archive:
    return
  teachers = teacher_runs(study)
  restored = []
  for preset, seed in parse_runs(study.runs):
    if restore_from_archive(study, workdir, archive, preset, seed, status):
      restored.append(f"{preset}/seed{seed}")
    elif is_done(study, run_dir(workdir, preset, seed)):
      with_checkpoint = (preset, seed) in teachers
      if not is_archived(study, archive, preset, seed, with_checkpoint):
        archive_run(study, workdir, archive, preset, seed, status, with_checkpoint)
  if restored:
    print(f"Study: restored {len(restored)} finished run(s) from {archive}: {', '.join(restored)}", flush=True)
  write_status(workdir, status)
