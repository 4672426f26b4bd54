"""A pretraining run's parts, built once: schedule lengths, networks, schedule, optimizer and state.

Training builds them from its config (`build`). Whatever reads a run afterwards
reads its config here (`read_run_config`, completing configs saved before a key
existed); the offline teacher, kNN, linear evaluation and the embedding maps
open the finished run here (`check_finished`, `restore`), while the embedding
API and export restore one network alone (api.restore_variables).
"""

import functools
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax
import ml_collections

from simdis_jax import checkpoint, configuration, methods, optim, parallel, zoo, workdir as workdir_files
from simdis_jax.data import datasets
from simdis_jax.models import archs
from simdis_jax.state import Networks, TrainState, build_networks, create_train_state


def schedule_lengths(train_config, num_train: int, warmup_epochs: float = 0.0) -> Dict[str, int]:
  """Steps per epoch (drop remainder), total steps and warm-up steps: epochs become steps here only.

  `train_config` is a config.train section (batch_size, epochs, steps: > 0 overrides epochs).
  """
  batch = train_config.batch_size
  steps_per_epoch = num_train // batch
  if steps_per_epoch == 0:
    raise ValueError(f"config.train.batch_size={batch} exceeds the {num_train} training examples; lower it.")
  total = (
    train_config.steps if train_config.steps > 0 else optim.steps_from_epochs(train_config.epochs, num_train, batch)
  )
  if total <= 0:
    raise ValueError(f"config.train.epochs={train_config.epochs} gives no whole step at batch {batch}.")
  warmup = int(round(warmup_epochs * steps_per_epoch))
  return {"steps_per_epoch": int(steps_per_epoch), "total_steps": int(total), "warmup_steps": min(warmup, int(total))}


def image_channels(data_name: str) -> int:
  """Channels of a dataset's images as the networks see them (data/datasets.py; Fashion-MNIST is grey)."""
  return datasets.get(data_name).channels


def image_shape(config) -> Tuple[int, int, int]:
  """(H, W, C) of one augmented view, what the networks see."""
  return (config.data.image_size, config.data.image_size, image_channels(config.data.name))


MAX_IMAGE_SIZE = 2048  # 2048² px per view is already ~80x ImageNet's 224²; beyond it memory fails late and silently


def downsampling(net_config) -> int:
  """How many pixels of the input one pixel of a network's last feature map spans (its total stride)."""
  if archs.spec(archs.arch_of(net_config)).patches:
    return int(net_config.get("patch_size", 16))
  return 8 if net_config.get("cifar_stem", False) else 32


def check_image_size(config) -> None:
  """config.data.image_size within what every network of the run can use, or one line naming the fix."""
  size = config.data.image_size
  if size > MAX_IMAGE_SIZE:
    raise ValueError(
      f"config.data.image_size={size} is absurdly large (at most {MAX_IMAGE_SIZE}; ImageNet uses "
      "224, Fashion-MNIST 28): set --config.data.image_size to the size the networks should see."
    )
  for name in ("student", "teacher"):
    net = config.model.get(name)
    if net is None or (name == "teacher" and not configuration.uses_teacher(config)):
      continue
    stride = downsampling(net)
    # A ViT needs one whole patch; a convolutional net at least half its total stride (28 px on a 32x ResNet
    # still gives its last stage a real 2x2 -> 1x1 step), below which its last stages convolve padding only.
    need = stride if archs.spec(archs.arch_of(net)).patches else stride // 2
    if size < need:
      stem = f" (or --config.model.{name}.cifar_stem=True: 8x)" if stride == 32 else ""
      raise ValueError(
        f"config.data.image_size={size} is too small for config.model.{name} (down-sampling "
        f"{stride}x: its last stages would see padding only); use --config.data.image_size>={need}"
        f"{stem}."
      )


class Built(NamedTuple):
  """The parts of a run that its config determines; `create()` makes a fresh train state (pure)."""

  networks: Networks
  schedule: Callable
  tx: Any
  create: Callable[[], TrainState]


def build(config, total_steps: int, warmup_steps: int, steps_per_epoch: Optional[int] = None) -> Built:
  """Networks, LR schedule, optimizer and the state constructor of a pretraining config."""
  networks = build_networks(config)
  schedule = optim.make_schedule(config, total_steps, warmup_steps, steps_per_epoch)
  tx = methods.make_optimizer(config, schedule)  # config.optim's, or the method's own
  create = functools.partial(create_train_state, config, networks, tx, image_shape(config))
  return Built(networks, schedule, tx, create)


class Restored(NamedTuple):
  """A pretraining run read back from its workdir."""

  config: ml_collections.ConfigDict
  networks: Networks
  state: TrainState
  step: int


# The network keys added with the arch choice, and what a section written without them means.
NETWORK_DEFAULTS = dict(
  arch=archs.DEFAULT_ARCH, patch_size=16, drop_path_rate=0.0, style="torchvision", projector="byol", head_bias=True
)


def with_network_defaults(run: dict) -> dict:
  """A saved run config (dict) whose network sections lack the arch keys, completed with their defaults."""
  for name in ("student", "teacher"):
    section = run.get("model", {}).get(name)
    if isinstance(section, dict):
      for key, value in {**NETWORK_DEFAULTS, **archs.INPUT_DEFAULTS}.items():
        section.setdefault(key, value)
  return run


def read_run_config(workdir: str) -> ml_collections.ConfigDict:
  """A run's saved config; sections saved before a key existed read with its default (arch = resnet)."""
  return ml_collections.ConfigDict(with_network_defaults(workdir_files.read_config(workdir)))


def checkpoint_steps(workdir: str) -> list:
  """The steps of a workdir's complete checkpoints, ascending."""
  mgr = checkpoint.manager(workdir)
  try:
    return sorted(mgr.all_steps())
  finally:
    mgr.close()


def check_finished(
  workdir: str,
  what: str,
  allow_unfinished: bool = False,
  step: Optional[int] = None,
  allow_flag: str = "",
  first: str = "",
) -> Tuple[ml_collections.ConfigDict, int]:
  """(run config, checkpoint step) of a pretraining workdir, or an error naming the fix; compiles nothing.

  `what` names the config key that points at the run (e.g. "config.teacher.workdir"); `step`
  None means the latest checkpoint, which must be the run's last step unless `allow_unfinished`
  (whose flag `allow_flag` the error names); `first` says what to run when the workdir is missing.
  A zoo name (simdis_jax.zoo) stands for its installed, sha256-checked workdir.
  """
  workdir = zoo.resolve(workdir)
  if not workdir or not workdir_files.path(workdir, "").exists():
    first = first or "pretrain first (python -m simdis_jax.main --config configs/<experiment>.py --workdir <dir>)"
    raise FileNotFoundError(f"{what}={workdir!r} does not exist: {first} and point {what} at <dir>.")
  try:
    run_config = read_run_config(workdir)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"{what}={workdir!r} is not a pretraining workdir ({e}).") from e
  if workdir_files.is_linear_eval(run_config):
    raise ValueError(f"{what}={workdir!r} is a linear-eval workdir; point it at the pretraining run's --workdir.")
  info = workdir_files.read_json(workdir, workdir_files.RUN_INFO_FILE)
  steps = checkpoint_steps(workdir_files.absolute(workdir))
  if not steps:
    raise FileNotFoundError(
      f"The pretraining run {workdir!r} has no checkpoint yet: let it save one (resume it with its own command) first."
    )
  chosen = steps[-1] if step is None else int(step)
  if chosen not in steps:
    raise ValueError(
      f"{workdir!r} has no checkpoint at step {step}; its steps are {steps} (or leave the step unset for the latest)."
    )
  if info is None and not allow_unfinished:  # the run's length is unknown: finished or not cannot be told
    fix = f", or set {allow_flag}=True to use step {chosen} as it is" if allow_flag else ""
    raise FileNotFoundError(
      f"The pretraining run {workdir!r} has checkpoints (steps {steps}) but its "
      f"{workdir_files.RUN_INFO_FILE} is missing, so whether it finished is unknown: resume it "
      f"with its own command to rewrite it{fix}."
    )
  total = int(info["total_steps"]) if info else chosen
  if chosen < total and not allow_unfinished:
    fix = f" or set {allow_flag}=True to use it anyway" if allow_flag else ""
    raise ValueError(
      f"The pretraining run {workdir!r} is unfinished (checkpoint step {chosen} of {total}): "
      f"resume it with its own command until it finishes{fix}."
    )
  return run_config, chosen


def restore(
  workdir: str, mesh=None, step: Optional[int] = None, run_config: Optional[ml_collections.ConfigDict] = None
) -> Restored:
  """A pretraining run's networks and train state at `step` (default: the newest intact), replicated over `mesh`.

  Verified as training's own restore is (checkpoint.restore_verified): a damaged chosen step is an error
  naming the others, a step that does not exist lists the steps.
  """
  workdir = workdir_files.absolute(zoo.resolve(workdir))
  mesh = parallel.make_mesh() if mesh is None else mesh
  if run_config is None:
    run_config = read_run_config(workdir)
  info = workdir_files.read_json(workdir, workdir_files.RUN_INFO_FILE) or {}
  # The schedule's values are not part of the state; only its shape (total steps) must be plausible.
  parts = build(run_config, int(info.get("total_steps", 1)), 0)
  abstract = parallel.replicated_abstract(jax.eval_shape(parts.create), mesh)
  mgr = checkpoint.manager(workdir)
  try:  # verified: tree, CRC per array, finiteness; `step` None walks back past damaged steps
    state, step = checkpoint.restore_verified(mgr, abstract, step)
  finally:
    mgr.close()
  return Restored(run_config, parts.networks, state, int(step))
