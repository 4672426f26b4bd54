"""Resuming a run: which config changes a checkpoint allows, and the record of each segment's config.

A run resumed under a config that changes what its checkpoint means (the networks, the
method) or the order and content of its data (dataset, image size, batch size, augmentation)
would be a different experiment that looks like a continuation: `check_resume_config` refuses
it, naming the flag that restores the old value. The keys it allows (e.g. more epochs) may
change; `record_config` keeps the config of every segment in `config_segments.jsonl` so that
the record of the first part of a run is never overwritten.
"""

import json
from typing import Any, Optional

from simdis_jax import runs, workdir as workdir_files
from simdis_jax.workdir import CONFIG_FILE

# Keys that fix what a checkpoint holds and means, or the data it continues with: resuming under
# different values is a different experiment, even where the array shapes happen to agree.
RESUME_KEYS = (
  "method",
  "views",
  "head_combination",
  "model.student",
  "model.teacher",
  "model.sync_bn",
  "model.bn_running_var",
  "model.ema_init",
  "optim.name",
  "optim.lars_form",
  "data.name",
  "seed",
  "data.image_size",
  "data.folder",
  "data.pretrain_split",
  "data.shuffle_buffer",
  "data.augment",
  "train.batch_size",
)
SEGMENTS_FILE = "config_segments.jsonl"  # one {"from_step", "config"} line per segment of a resumed run


def _lookup(tree, key: str):
  for part in key.split("."):
    if not isinstance(tree, dict) or part not in tree:
      return None
    tree = tree[part]
  return tree


def _flag_value(value) -> str:
  """`value` as ml_collections' config flags parse it (tuples as Python literals, strings bare)."""
  if isinstance(value, list):
    return '"' + repr(tuple(value)) + '"'  # one shell word
  return str(value)


def check_resume_config(workdir: str, config) -> None:
  """Before restoring: the workdir's checkpoints were written by this model, method and data (RESUME_KEYS)."""
  saved = workdir_files.read_json(workdir, CONFIG_FILE)
  if saved is None:
    return  # nothing to compare with; the restore still checks shapes
  path = workdir_files.path(workdir, CONFIG_FILE)
  # Runs saved before the arch keys existed hold ResNets: both sides read with the defaults filled in.
  saved = runs.with_network_defaults(saved)
  wanted = runs.with_network_defaults(json.loads(config.to_json_best_effort()))
  for key in RESUME_KEYS:
    old, new = _lookup(saved, key), _lookup(wanted, key)
    if old is None or old == new:
      continue
    if isinstance(old, dict) and isinstance(new, dict):  # name the fields: a dict is no single flag
      fields = [k for k in old if old[k] != new.get(k)]
      if not fields:
        continue  # only keys the old run's code did not have yet
      advice = " ".join(f"--config.{key}.{k}={_flag_value(old[k])}" for k in fields)
      have = ", ".join(f"{k}={new.get(k)!r}" for k in fields)
      old = ", ".join(f"{k}={old[k]!r}" for k in fields)
      what = f"config.{key} with {old}, but this config has {have}"
    else:
      advice, what = f"--config.{key}={_flag_value(old)}", f"config.{key}={old!r}, but this config has {new!r}"
    raise ValueError(
      f"{workdir} holds checkpoints of a run with {what}. Resume it with {advice} (the config it was "
      f"written with is {path}), or start this experiment in a fresh --workdir."
    )


def record_config(workdir: str, config, start_step: int, is_main: bool = True) -> None:
  """Writes config.json (the config now running); a resume under a changed config also records each segment.

  `config_segments.jsonl` starts, at the first change, with the config the run was started with
  (from step 0), then holds one line per changed segment from the step it resumed at.
  """
  if not is_main:
    return
  new = json.loads(config.to_json_best_effort())
  old = workdir_files.read_json(workdir, CONFIG_FILE) if start_step else None
  if old is not None and old != new:
    segments = workdir_files.path(workdir, SEGMENTS_FILE)
    if not segments.exists():
      workdir_files.append_line(workdir, SEGMENTS_FILE, json.dumps({"from_step": 0, "config": old}))
    workdir_files.append_line(workdir, SEGMENTS_FILE, json.dumps({"from_step": int(start_step), "config": new}))
  workdir_files.write_config(workdir, config)


def segments(workdir: str) -> list:
  """The recorded segments [{"from_step", "config"}] of a resumed run ([] if its config never changed)."""
  out: list = []
  p = workdir_files.path(workdir, SEGMENTS_FILE)
  if p.exists():
    for line in p.read_text().splitlines():
      record: Optional[Any] = None
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        pass  # a line cut by a crash
      if isinstance(record, dict) and "config" in record:
        out.append(record)
  return out
