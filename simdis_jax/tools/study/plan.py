"""A study's runs: which (preset, seed) pairs, where each one's workdir is, when it is done, what command runs it.

Each run is `python -m simdis_jax.main --config <presets>:<preset> --config.seed=<seed>
--workdir <workdir>/<preset>/seed<seed>` (plus the offline teacher's workdir for simdis_off
presets), so each one can be repeated by hand with that command. A run is done when its
pretraining summary and its linear evaluation (and the fast one, if the study asks) are written.
"""

import functools
import os
import sys
from typing import List, Optional, Sequence, Tuple

from simdis_jax import config_files
from simdis_jax import workdir as workdir_files

STATUS_FILE = "study_status.json"  # in the study's workdir: failed runs and the run segments (time, commit)
FAST_LINEAR_DIR = "linear_fast"  # in a run's workdir: the second, converged linear evaluation
STUDENT_LINEAR_DIR = "linear_student"  # in a run's workdir: the final linear evaluation that training writes
TEST_DIR = "test"  # in a run's workdir: its one evaluation on the test set (studies with config.test_runs)
TEST_LINEAR_PROTOCOL = "deepmind,fast"  # the test set's linear evaluation (configs/fashion_mnist/linear_eval.py)


def parse_runs(entries: Sequence[str]) -> List[Tuple[str, int]]:
  """["preset:0,1", ...] -> [(preset, 0), (preset, 1), ...] in order, each pair once."""
  runs = []
  for entry in entries:
    preset, sep, seeds = entry.partition(":")
    if not sep or not preset or not seeds:
      raise ValueError(
        f"Study entry {entry!r} must look like '<preset>:<seed>[,<seed>...]', e.g. 'byol_student:0,1,2'."
      )
    try:
      seed_list = [int(s) for s in seeds.split(",")]
    except ValueError as e:
      raise ValueError(f"Study entry {entry!r}: seeds must be integers, e.g. 'byol_student:0,1,2'.") from e
    for seed in seed_list:
      if (preset, seed) not in runs:
        runs.append((preset, seed))
  return runs


def teacher_run(study, preset: Optional[str] = None) -> Tuple[str, int]:
  """The (preset, seed) of the offline teacher run that `preset` distils from.

  A study distils either from one teacher (config.teacher_run) or from a teacher per preset
  (config.teachers: (offline preset, "<teacher preset>:<seed>") pairs, e.g. one per schedule length).
  """
  per_preset = dict(study.get("teachers", ()))
  if preset is not None and preset in per_preset:
    return parse_runs([per_preset[preset]])[0]
  if not study.get("teacher_run"):
    raise ValueError(f"The study names no offline teacher for {preset!r}: add it to config.teachers.")
  return parse_runs([study.teacher_run])[0]


def teacher_runs(study) -> List[Tuple[str, int]]:
  """Every run of the study that an offline preset distils from, or may (its final checkpoint is archived)."""
  out = [parse_runs([study.teacher_run])[0]] if study.get("teacher_run") else []
  for _, entry in study.get("teachers", ()):
    if parse_runs([entry])[0] not in out:
      out.append(parse_runs([entry])[0])
  # Candidates not chosen yet (a teacher's learning-rate sweep) keep their checkpoints too.
  prefixes = tuple(study.get("checkpoint_presets", ()))
  out += [r for r in parse_runs(study.runs) if prefixes and r[0].startswith(prefixes) and r not in out]
  return out


def run_env(study, preset: str) -> dict:
  """Extra environment of a preset's commands: config.run_env's (preset prefix, variable, value) rows."""
  return {var: value for prefix, var, value in study.get("run_env", ()) if preset.startswith(prefix)}


def _preset_and_seed(directory: str) -> Tuple[str, int]:
  """(preset, seed) of a run directory laid out as <...>/<preset>/seed<seed> (workdir and archive alike)."""
  seed = os.path.basename(os.path.normpath(directory))
  return os.path.basename(os.path.dirname(os.path.normpath(directory))), int(seed[len("seed") :])


def tested(study, directory: str) -> bool:
  """Whether the run in `directory` is one of config.test_runs (evaluated once on the test set)."""
  if not study.get("test_runs"):
    return False
  return _preset_and_seed(directory) in parse_runs(study.test_runs)


def test_files(study, directory: str) -> List[str]:
  """The test-set evaluation's files of a run: kNN of the student (and of an online teacher), linear (fast)."""
  files = [
    os.path.join(directory, TEST_DIR, "knn_student.json"),
    os.path.join(directory, TEST_DIR, "linear_fast", workdir_files.LINEAR_EVAL_FILE),
  ]
  if method_of(study, _preset_and_seed(directory)[0]) == "simdis_on":
    files.append(os.path.join(directory, TEST_DIR, "knn_teacher.json"))
  return files


def test_commands(study, directory: str) -> List[List[str]]:
  """The commands still to run of a run's test-set evaluation (config.data.holdout='test')."""
  todo = []
  for path in test_files(study, directory):
    if os.path.exists(path):
      continue
    if path.endswith(".json") and os.path.basename(path).startswith("knn_"):
      network = os.path.basename(path)[len("knn_") : -len(".json")]
      todo.append(
        [
          sys.executable,
          "-m",
          "simdis_jax.evaluation.knn",
          f"--workdir={directory}",
          f"--network={network}",
          "--k=20",
          "--holdout=test",
          f"--out={path}",
        ]
      )
    else:
      todo.append(
        [
          sys.executable,
          "-m",
          "simdis_jax.main",
          f"--config=configs/fashion_mnist/linear_eval.py:{TEST_LINEAR_PROTOCOL}",
          f"--workdir={os.path.dirname(path)}",
          f"--config.pretrained.workdir={directory}",
          "--config.data.holdout=test",
        ]
      )
  return todo


def run_dir(workdir: str, preset: str, seed: int) -> str:
  """The workdir of one run of the study."""
  return os.path.join(workdir, preset, f"seed{seed}")


def pretraining_files(study, directory: str) -> List[str]:
  """The files the pretraining command writes: its summary, and the student's linear evaluation if it runs one."""
  files = [os.path.join(directory, workdir_files.SUMMARY_FILE)]
  if study.get("linear_after_pretraining", True):
    files.append(os.path.join(directory, STUDENT_LINEAR_DIR, workdir_files.LINEAR_EVAL_FILE))
  return files


def done_files(study, directory: str) -> List[str]:
  """The files whose existence marks a run done: summary, the student's linear evaluation (and the fast one)."""
  files = pretraining_files(study, directory)
  if study.get("fast_linear"):
    files.append(os.path.join(directory, FAST_LINEAR_DIR, workdir_files.LINEAR_EVAL_FILE))
  if tested(study, directory):
    files += test_files(study, directory)
  return files


def is_done(study, directory: str) -> bool:
  """Pretraining finished (summary.json), the student's linear evaluation (and the fast one) written."""
  return all(os.path.exists(f) for f in done_files(study, directory))


def command(study, workdir: str, preset: str, seed: int) -> List[str]:
  """The run's own command line (what a person would type to repeat it)."""
  cmd = [
    sys.executable,
    "-m",
    "simdis_jax.main",
    f"--config={study.presets}:{preset}",
    f"--config.seed={seed}",
    f"--workdir={run_dir(workdir, preset, seed)}",
  ]
  if method_of(study, preset) in ("simdis_off", "seed"):
    cmd.append(f"--config.teacher.workdir={run_dir(workdir, *teacher_run(study, preset))}")
  return cmd + list(study.get("overrides", ()))


def commands(study, workdir: str, preset: str, seed: int) -> List[List[str]]:
  """The run's commands still to do: pretraining (+ its final linear eval), then the fast linear eval."""
  directory = run_dir(workdir, preset, seed)
  todo = []
  if not all(os.path.exists(f) for f in pretraining_files(study, directory)):
    todo.append(command(study, workdir, preset, seed))
  fast_done = os.path.exists(os.path.join(directory, FAST_LINEAR_DIR, workdir_files.LINEAR_EVAL_FILE))
  if study.get("fast_linear") and not fast_done:
    todo.append(
      [
        sys.executable,
        "-m",
        "simdis_jax.main",
        f"--config={study.fast_linear}",
        f"--config.seed={seed}",
        f"--workdir={os.path.join(directory, FAST_LINEAR_DIR)}",
        f"--config.pretrained.workdir={directory}",
      ]
      + list(study.get("fast_linear_overrides", ()))
    )
  if tested(study, directory):
    todo += test_commands(study, directory)
  return todo


@functools.lru_cache(maxsize=None)
def _presets_module(path: str):
  if not os.path.exists(path):
    raise FileNotFoundError(
      f"The study's presets file {path!r} does not exist (run from the repository root, "
      "or set config.presets to its path)."
    )
  return config_files.load_module(path)


def preset_config(study, preset: str):
  """The preset's config, as `--config <presets>:<preset>` gives it to simdis_jax.main."""
  return _presets_module(study.presets).get_config(preset)


def method_of(study, preset: str) -> str:
  """The pretraining method of one of the study's presets."""
  return preset_config(study, preset).method


def read_status(workdir: str) -> dict:
  """The study's status (failed runs, run segments) from its workdir; empty for a new study."""
  status = workdir_files.read_json(workdir, STATUS_FILE) if os.path.isdir(workdir) else None
  status = status or {}
  status.setdefault("failed", {})
  status.setdefault("segments", [])
  return status


def write_status(workdir: str, status: dict) -> None:
  """Writes the study's status into its workdir (atomically)."""
  os.makedirs(workdir, exist_ok=True)
  workdir_files.write_json(workdir, STATUS_FILE, status, indent=2)


def last_checkpoint(directory: str) -> Optional[str]:
  """The highest finished step folder under <directory>/checkpoints (orbax's layout), or None."""
  root = os.path.join(directory, workdir_files.CHECKPOINT_DIR)
  steps = (
    [int(d) for d in os.listdir(root) if d.isdigit() and os.path.exists(os.path.join(root, d, "commit_success.txt"))]
    if os.path.isdir(root)
    else []
  )
  return os.path.join(root, str(max(steps))) if steps else None
