"""An offline teacher's network travels with its run: SimDis-Off / SEED take it from config.teacher.workdir.

The frozen teacher is a finished BYOL run's student (trained here, imported by import_weights, or
a zoo name). Its network section (architecture, width, stem, style, heads) is that run's
model.student whatever config.model.teacher says, and where the run was trained on other inputs
than this run's data, its own normalisation and channel count go with it
(model.teacher.input_mean / input_std / in_channels, models/input_adapter.py): a 3-channel
teacher on grey Fashion-MNIST sees each grey image replicated to R = G = B, normalised as it was
trained; a grey teacher on colour data is an error. The student's projection size follows the
teacher's (its predictors regress the teacher's projections).
"""

import logging

import ml_collections

from simdis_jax import configuration, console, methods, runs, zoo
from simdis_jax import workdir as workdir_files
from simdis_jax.models.input_adapter import INPUT_DEFAULTS

INPUT_KEYS = tuple(INPUT_DEFAULTS)  # model.teacher's keys for its own inputs, set here, not by the teacher run


def teacher_section(config, run: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """config.model.teacher as the teacher run `run` trained it, with its inputs where they differ from config.data."""
  saved = runs.with_network_defaults({"model": {"student": run.model.student.to_dict()}})
  net = ml_collections.ConfigDict(saved["model"]["student"])
  own_channels = int(net.in_channels) or runs.image_channels(run.data.name)
  own_mean = tuple(net.input_mean) or tuple(run.data.augment.mean)
  own_std = tuple(net.input_std) or tuple(run.data.augment.std)
  channels = runs.image_channels(config.data.name)
  if own_channels != channels and not (own_channels == 3 and channels == 1):
    raise ValueError(
      f"config.teacher.workdir={config.teacher.workdir!r} is a {own_channels}-channel network but "
      f"config.data.name={config.data.name!r} has {channels}-channel images: a grey image can go to "
      "a colour teacher (replicated to R = G = B), not colour to a grey one; use a matching teacher."
    )
  same = (
    own_channels == channels
    and own_mean == tuple(config.data.augment.mean)
    and own_std == tuple(config.data.augment.std)
  )
  net.in_channels = 0 if same else own_channels
  net.input_mean = [] if same else list(own_mean)
  net.input_std = [] if same else list(own_std)
  return net


def adopt(config) -> ml_collections.ConfigDict:
  """The config with model.teacher (and the student's proj_dim) taken from config.teacher.workdir's run."""
  if methods.teacher_kind(config) != "offline" or not config.teacher.workdir:
    return config
  workdir = zoo.resolve(config.teacher.workdir)
  if not workdir_files.path(workdir, workdir_files.CONFIG_FILE).exists():
    return config  # train.check_offline_teacher names what is missing
  run = runs.read_run_config(workdir)
  if run.get("method") not in methods.METHODS or not methods.about(run.get("method")).teacher_source:
    return config  # ditto
  net = teacher_section(config, run)
  changed = {
    k: (config.model.teacher.get(k), v) for k, v in net.items() if _plain(config.model.teacher.get(k)) != _plain(v)
  }
  config = ml_collections.ConfigDict(config.to_dict())
  config.model.teacher = net
  if changed:
    console.say(
      "teacher network from config.teacher.workdir: "
      + ", ".join(f"{k}={_plain(new)!r}" for k, (_, new) in sorted(changed.items()))
    )
    logging.info("config.model.teacher adopted from %s: %s", config.teacher.workdir, changed)
  if config.model.student.proj_dim != net.proj_dim:
    console.say(f"student projection size {config.model.student.proj_dim} -> {net.proj_dim}, the teacher's")
    config.model.student.proj_dim = net.proj_dim
  return configuration.validate(config)


def _plain(value):
  return tuple(value) if isinstance(value, (list, tuple)) else value
