"""The report's view of workdirs: which are pretraining runs, which are linear evaluations, and what they hold.

Reads only the files a run leaves behind, through the workdir contract
(simdis_jax/workdir.py); imports no JAX, so that a report can be made on any
machine that has the workdirs, including while the runs are still training.
"""

import dataclasses
import os
import sys
from typing import Any, Dict, Iterable, List, Optional, Tuple

from simdis_jax import workdir as wf


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


def _is_linear_dir(path: str) -> bool:
  # linear.py also writes config.json and metrics.jsonl, so its workdirs are told apart by its own files.
  if any(os.path.isfile(os.path.join(path, f)) for f in (wf.LINEAR_EVAL_FILE, wf.LINEAR_INFO_FILE)):
    return True
  try:
    return wf.is_linear_eval(wf.read_json(path, wf.CONFIG_FILE))
  except (OSError, ValueError, AttributeError):
    return False


def is_pretrain_dir(path: str) -> bool:
  """Whether `path` holds a pretraining run (a linear evaluation may share its directory)."""
  if not os.path.isfile(os.path.join(path, wf.CONFIG_FILE)):
    return False
  if not _is_linear_dir(path):
    return True
  # A linear evaluation written into the pretraining run's own workdir: the directory is both.
  try:
    target = (wf.read_json(path, wf.LINEAR_EVAL_FILE) or {}).get("pretrained_workdir")
  except (ValueError, AttributeError):
    return False
  return bool(target) and resolve_from(path, str(target)) == os.path.realpath(path)


def load_pretrain_run(workdir: str) -> PretrainRun:
  """Reads a pretraining workdir (config.json required; the other files optional)."""
  return PretrainRun(
    workdir=os.path.realpath(workdir),
    config=wf.read_config(workdir),
    run_info=wf.read_json(workdir, wf.RUN_INFO_FILE) or {},
    metrics=wf.read_metrics(workdir),
    summary=wf.read_json(workdir, wf.SUMMARY_FILE),
    name=os.path.basename(os.path.normpath(workdir)),
  )


def load_workdirs(workdirs: Iterable[str]) -> Tuple[List[PretrainRun], List[LinearEval]]:
  """Sorts the given workdirs into pretraining runs and linear evaluations, or raises ValueError."""
  runs: Dict[str, PretrainRun] = {}
  evals: Dict[str, LinearEval] = {}
  for given in workdirs:
    path = os.path.realpath(os.path.expanduser(str(given)))
    if not os.path.isdir(path):
      raise ValueError(
        f"Workdir {given!r} does not exist (resolved to {path}); expected a pretraining "
        f"workdir (with {wf.CONFIG_FILE}) or a linear-evaluation workdir (with {wf.LINEAR_EVAL_FILE})."
      )
    is_pretrain = is_pretrain_dir(path)
    has_linear = os.path.isfile(os.path.join(path, wf.LINEAR_EVAL_FILE))
    if not is_pretrain and not has_linear and _is_linear_dir(path):
      # A linear evaluation still training has no result yet; skipping it keeps a report of
      # "all workdirs" usable while some are running.
      print(
        f"simdis_jax.report: warning: {given} is a linear evaluation without {wf.LINEAR_EVAL_FILE} "
        "yet (unfinished); skipped.",
        file=sys.stderr,
      )
      continue
    if not is_pretrain and not has_linear:
      raise ValueError(
        f"Workdir {given!r} ({path}) holds neither {wf.CONFIG_FILE} (a pretraining run) nor "
        f"{wf.LINEAR_EVAL_FILE} (a linear evaluation); nothing to report from it."
      )
    if is_pretrain and path not in runs:
      runs[path] = load_pretrain_run(path)
      # The student trained alone beside a distilled one (config.final_eval.student_alone, the demo) is
      # part of that run's result: <workdir>/alone (evaluation/alone.py's ALONE_DIR) comes with it.
      alone = os.path.join(path, "alone")
      if alone not in runs and is_pretrain_dir(alone):
        runs[alone] = load_pretrain_run(alone)
    if has_linear and path not in evals:
      result = wf.read_json(path, wf.LINEAR_EVAL_FILE)
      if not isinstance(result, dict):
        raise ValueError(f"{os.path.join(path, wf.LINEAR_EVAL_FILE)} should hold a JSON object.")
      evals[path] = LinearEval(path, result)
  return list(runs.values()), list(evals.values())


def resolve_from(base: str, target: str) -> str:
  """The pretraining workdir a linear evaluation in `base` names as `target`, as an absolute real path."""
  # linear_eval.json keeps the pretrained workdir as it was typed, possibly relative to where linear.py
  # was launched; linear_info.json beside it has the absolute path, then the cwd and the linear
  # workdir's parent are the best guesses left.
  if os.path.isabs(target):
    return os.path.realpath(target)
  try:
    recorded = (wf.read_json(base, wf.LINEAR_INFO_FILE) or {}).get("pretrained_workdir")
  except (OSError, ValueError, AttributeError):
    recorded = None
  if recorded and os.path.isabs(recorded):
    return os.path.realpath(recorded)
  here = os.path.realpath(target)
  if os.path.exists(here):
    return here
  return os.path.realpath(os.path.join(os.path.dirname(base), target))
