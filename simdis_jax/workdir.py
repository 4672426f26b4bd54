"""The workdir file contract: what a run leaves behind, by name, and how it is read and written.

A pretraining run writes `config.json` (its config), `run_info.json` (schedule
lengths, devices, step FLOPs), `metrics.jsonl` (one JSON object per logged step)
and, once it reaches its last step, `summary.json`; checkpoints live under
`checkpoints/`. A linear evaluation writes its own `config.json`,
`metrics.jsonl`, `linear_info.json` and `linear_eval.json`. `run_info.json` also records
the versions of the libraries that computed the run (`software_versions`). This module imports
no JAX, so that the report and the study can read workdirs without starting it;
the writers take `is_main` (process 0 writes, the others do not).
"""

import importlib.metadata
import json
import math
import os
from typing import Any, Dict, Mapping, Optional

from etils import epath

CONFIG_FILE = "config.json"
RUN_INFO_FILE = "run_info.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"  # written when a pretraining run reaches its last step
LINEAR_EVAL_FILE = "linear_eval.json"  # a linear evaluation's results
LINEAR_INFO_FILE = "linear_info.json"  # what a linear evaluation's checkpoints were trained on
CHECKPOINT_DIR = "checkpoints"
LINEAR_EVAL_TASK = "linear_eval"  # config.task of a linear-evaluation workdir
# The distributions whose versions decide a run's numbers (run_info.json "versions").
VERSIONED = ("simdis_jax", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy")


def software_versions() -> Dict[str, Optional[str]]:
  """{distribution: installed version} of VERSIONED, None for one not installed (read from metadata, no import)."""
  versions = {}
  for name in VERSIONED:
    try:
      versions[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      versions[name] = None
  return versions


def path(workdir: str, name: str) -> epath.Path:
  """<workdir>/<name> as a path (local or gs://)."""
  return epath.Path(workdir) / name


def absolute(workdir: str) -> str:
  """Local paths made absolute (orbax needs them); URLs such as gs:// are kept as they are."""
  return workdir if "://" in workdir else os.path.abspath(workdir)


def atomic_write_text(target: epath.Path, text: str) -> None:
  """Writes a small file so that readers (and a restart after kill -9) see the old or the new text, never a part."""
  target = epath.Path(target)
  if "://" in str(target):
    target.write_text(text)  # object stores (gs://) publish an object only once it is complete
    return
  tmp = target.parent / f".{target.name}.tmp{os.getpid()}"
  tmp.write_text(text)
  os.replace(tmp, target)


def read_json(workdir: str, name: str) -> Optional[Any]:
  """The parsed JSON file <workdir>/<name>, or None if it does not exist; a clear error if it is not JSON."""
  p = path(workdir, name)
  if not p.exists():
    return None
  try:
    return json.loads(p.read_text())
  except json.JSONDecodeError as e:
    raise ValueError(f"{p} is not valid JSON ({e}); restore it or remove the run's workdir.") from e


def write_json(workdir: str, name: str, value: Any, is_main: bool = True, indent: Optional[int] = None) -> None:
  """Writes <workdir>/<name> atomically (process 0 only)."""
  if is_main:
    atomic_write_text(path(workdir, name), json.dumps(value, indent=indent))


def read_config(workdir: str) -> dict:
  """The config a run saved in its workdir, as a dict."""
  config = read_json(workdir, CONFIG_FILE)
  if config is None:
    raise FileNotFoundError(f"{workdir} holds no {CONFIG_FILE}: it is not a simdis_jax workdir.")
  return config


def write_config(workdir: str, config, is_main: bool = True) -> None:
  """Saves a run's config (a ConfigDict) as JSON, for resume checks, restores and reports."""
  if is_main:
    atomic_write_text(path(workdir, CONFIG_FILE), config.to_json_best_effort(indent=2))


def is_linear_eval(config) -> bool:
  """Whether a saved config (a dict or a ConfigDict) is a linear evaluation's, not a pretraining run's."""
  return hasattr(config, "get") and config.get("task") == LINEAR_EVAL_TASK


def append_line(workdir: str, name: str, line: str) -> None:
  """Appends one line to <workdir>/<name>, first ending a line a crash left cut (its record is lost, not the next)."""
  p = path(workdir, name)
  cut = False
  if p.exists():
    with p.open("rb") as f:
      f.seek(0, os.SEEK_END)
      if f.tell():
        f.seek(-1, os.SEEK_END)
        cut = f.read(1) != b"\n"
  with p.open("a") as f:
    f.write(("\n" if cut else "") + line + "\n")


def append_metrics(workdir: str, step: int, values: Mapping[str, float], is_main: bool = True) -> None:
  """Appends one {"step": step, name: value, ...} line to metrics.jsonl (process 0 only); see `append_line`."""
  if is_main:
    append_line(workdir, METRICS_FILE, json.dumps({"step": int(step), **{k: float(v) for k, v in values.items()}}))


def read_metrics(workdir: str) -> Dict[int, Dict[str, float]]:
  """metrics.jsonl as {step: {name: value}}, steps sorted; a later line overrides an earlier one (resumed runs).

  A line cut by a crash (kill -9 mid-write) is skipped; the rest is still good.
  """
  by_step: Dict[int, Dict[str, float]] = {}
  p = path(workdir, METRICS_FILE)
  if not p.exists():
    return by_step
  for line in p.read_text().splitlines():
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      continue
    if not isinstance(record, dict) or "step" not in record:
      continue
    values = by_step.setdefault(int(record.pop("step")), {})
    values.update({k: float(v) for k, v in record.items() if isinstance(v, (int, float))})
  return dict(sorted(by_step.items()))


def last_value(
  metrics: Mapping[int, Mapping[str, float]],
  key: str,
  up_to_step: Optional[int] = None,
  finite_only: bool = False,
  from_step: int = 0,
) -> Optional[float]:
  """The value of `key` at the latest step in [from_step, up_to_step] that logged it, or None."""
  for step in sorted(metrics, reverse=True):
    if (up_to_step is not None and step > up_to_step) or step < from_step:
      continue
    value = metrics[step].get(key)
    if value is not None and (not finite_only or math.isfinite(value)):
      return value
  return None


def metric_writer(workdir: str, is_main: bool = True):
  """TensorBoard + console metrics on process 0; the other processes write nothing."""
  from clu import metric_writers  # pylint: disable=import-outside-toplevel  (clu's writers start TF)

  if is_main:
    return metric_writers.create_default_writer(workdir)
  return metric_writers.MultiWriter([])
