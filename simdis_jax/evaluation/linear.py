"""Linear evaluation of a pretrained encoder, as its own run, top to bottom (docs/spec.md "Linear evaluation").

A linear classifier (evaluation/classifier.py) is trained on the pooled
encoder output (before the projector) of a FROZEN pretrained network in eval
mode (running BN statistics), then scored top-1 / top-5 on the held-out split.
The schema, protocols and modes are in evaluation/linear_config.py.

Modes (`config.mode`):
- ``fast`` (cached features, no augmentation): features of the whole train and
  held-out splits are extracted once with the eval preprocessing, and the
  classifier trains on them; an epoch is a few milliseconds of matmuls, run as
  one jitted scan between two log / checkpoint steps.
- ``full``: every step augments its batch on the device (random resized crop +
  horizontal flip only), runs the frozen encoder and updates the classifier;
  the held-out split gets resize + centre crop (`data.augment.eval_crop_fraction`,
  0.875 = 256 -> 224 for ImageNet).

The run's checkpoints (orbax, under <workdir>/checkpoints) hold only the
classifier state. A run resumes from its workdir; a finished one only
re-evaluates. Batches follow `data.input.EpochOrder`: a function of (seed,
step), reshuffled per (seed, epoch).

Reported: top-1/top-5 (%) on the held-out split, and `train_top1`, the final
classifier on the training examples with the eval preprocessing (cached
features in fast mode, one extra encoder pass in full mode).
"""

import functools
import logging
import time
from typing import Any, Callable, Dict, Iterator, NamedTuple, Optional, Tuple

import jax
import ml_collections
import numpy as np

from simdis_jax import checkpoint, configuration, parallel, preemption, runs
from simdis_jax import workdir as workdir_files
from simdis_jax.data import input as data_input
from simdis_jax.evaluation import classifier as classifier_lib
from simdis_jax.evaluation import features, linear_config
from simdis_jax.evaluation.linear_config import MODE_NAMES

# What a linear workdir's checkpoints were trained on: a resume must ask for the same.
_IDENTITY_KEYS = ("pretrained_workdir", "network", "weights", "protocol", "mode", "dataset")


def check_pretrained(config) -> Tuple[ml_collections.ConfigDict, int]:
  """(pretraining config, checkpoint step to use), or an error naming the fix; runs before anything compiles."""
  p = config.pretrained
  if not p.workdir:
    raise ValueError(
      "config.pretrained.workdir is not set: pretrain first (python -m simdis_jax.main --config "
      "configs/<experiment>.py --workdir <dir>) and pass --config.pretrained.workdir=<dir>."
    )
  run_config, step = runs.check_finished(
    p.workdir,
    "config.pretrained.workdir",
    p.allow_unfinished,
    step=None if p.step == -1 else p.step,
    allow_flag="--config.pretrained.allow_unfinished",
  )
  if p.network == "teacher" and not configuration.uses_teacher(run_config):
    raise ValueError(
      f"The pretraining run {p.workdir!r} is method={run_config.method!r} and has no teacher; "
      "use --config.pretrained.network=student."
    )
  return run_config, step


def _check_resume_info(workdir: str, info: Dict[str, Any], has_checkpoint: bool) -> Dict[str, Any]:
  """The recorded run identity when resuming (it must match this config), else `info` to record."""
  old = workdir_files.read_json(workdir, workdir_files.LINEAR_INFO_FILE) if has_checkpoint else None
  if old is None:
    return info
  diffs = [
    f"{k}: workdir has {old.get(k)!r}, config wants {info[k]!r}" for k in _IDENTITY_KEYS if old.get(k) != info[k]
  ]
  if info["requested_step"] != -1 and info["pretrained_step"] != old["pretrained_step"]:
    diffs.append(f"pretrained step: workdir has {old['pretrained_step']}, config wants {info['pretrained_step']}")
  if diffs:
    raise ValueError(
      f"--workdir {workdir} holds a linear evaluation of something else ("
      + "; ".join(diffs)
      + "). Use a fresh --workdir."
    )
  return old


DIVERGED_ADVICE = "Lower --config.optim.base_lr."


class _Progress:
  """What happens after a training step: metrics at log steps, checkpoints, and stopping for a preemption."""

  def __init__(
    self,
    config,
    workdir: str,
    mgr,
    writer,
    total: int,
    steps_per_epoch: int,
    stop_after_steps: Optional[int],
    start_step: int,
  ):
    self.config, self.workdir, self.mgr, self.writer = config, workdir, mgr, writer
    self.total, self.steps_per_epoch, self.stop_after = total, steps_per_epoch, stop_after_steps
    self.last_saved = mgr.latest_step()
    self.last_log = (time.time(), start_step)
    self.preemption = preemption.PreemptionWatch()  # a SIGTERM from here on stops at the next step boundary
    self.is_main = jax.process_index() == 0

  def after(self, done: int, state, metrics) -> None:
    """Logs and saves at log / checkpoint steps; at any step before the last, stops for a preemption."""
    train = self.config.train
    log = done % train.log_every_steps == 0 or done == self.total
    save = done % train.checkpoint_every_steps == 0 or done in (self.total, self.stop_after)
    if log or save:  # only then are the metrics fetched from the device
      values = {k: float(v) for k, v in jax.device_get(metrics).items()}
      checkpoint.check_finite_metrics(done, {"loss": values["loss"]}, self.last_saved, DIVERGED_ADVICE)
      if log:
        now = time.time()
        values["epoch"] = done / self.steps_per_epoch
        # Rate since the previous log line (the first one includes compilation).
        values["examples_per_sec"] = (done - self.last_log[1]) * train.batch_size / max(now - self.last_log[0], 1e-9)
        self.last_log = (now, done)
        self.writer.write_scalars(done, values)
        workdir_files.append_metrics(self.workdir, done, values, self.is_main)
      if save:
        checkpoint.save_finite(self.mgr, done, state, self.last_saved, DIVERGED_ADVICE)
        self.last_saved = done
    if done < self.total and self.preemption.reached(done):  # SIGTERM / maintenance: save here, exit 143
      if self.last_saved != done:
        checkpoint.save(self.mgr, done, state, force=True)
      raise preemption.Preempted(done, self.workdir)

  def close(self) -> None:
    """Stops watching for a preemption and finishes the asynchronous saves already started."""
    self.preemption.close()
    self.mgr.wait_until_finished()
    self.mgr.close()


class _Inputs(NamedTuple):
  """What a linear evaluation reads: the dataset, the pretraining run and the data config resolved from it."""

  dataset: Any
  run_config: ml_collections.ConfigDict  # the pretraining run's config
  pre_step: int  # the pretraining checkpoint step to use
  data_config: ml_collections.ConfigDict  # linear_config.resolve_data_config
  num_train: int
  num_eval: int


class _Encoder(NamedTuple):
  """The frozen pretrained encoder: its network, its variables, and the feature function with them bound."""

  network: Any
  variables: Any
  feature_fn: Callable[..., Any]


def run(config: ml_collections.ConfigDict, workdir: str, stop_after_steps: Optional[int] = None) -> Dict[str, Any]:
  """Linear evaluation as config says, resuming from <workdir>; writes and returns the results."""
  t_start = time.time()
  config = linear_config.validate(config)
  workdir = workdir_files.absolute(workdir)
  checkpoint.check_writable(workdir)
  is_main = jax.process_index() == 0

  # --- Mesh ---
  mesh = parallel.make_mesh()
  parallel.check_batch_size(config.train.batch_size, mesh)
  eb = config.eval.batch_size
  if eb % mesh.devices.size or eb % jax.process_count():
    raise ValueError(
      f"config.eval.batch_size={eb} must be divisible by the number of devices "
      f"({mesh.devices.size}) and processes ({jax.process_count()})."
    )

  # --- Input: the dataset, the pretraining run, the data config resolved from both ---
  inputs = _open_inputs(config)
  lengths = runs.schedule_lengths(config.train, inputs.num_train)
  lengths = {k: lengths[k] for k in ("steps_per_epoch", "total_steps")}  # no warm-up here
  total = lengths["total_steps"]

  # --- Run identity: a resumed workdir keeps the pretrained step it started from ---
  mgr = checkpoint.manager(workdir, config.train.keep_checkpoints)
  info = {
    "pretrained_workdir": workdir_files.absolute(config.pretrained.workdir),
    "network": config.pretrained.network,
    "weights": config.pretrained.weights,
    "protocol": config.protocol,
    "mode": config.mode,
    "dataset": inputs.data_config.name,
    "requested_step": int(config.pretrained.step),
    "pretrained_step": inputs.pre_step,
  }
  info = _check_resume_info(workdir, info, mgr.latest_step() is not None)
  inputs = inputs._replace(pre_step=int(info["pretrained_step"]))

  # --- Frozen encoder, and in fast mode the features of both splits ---
  encoder = _frozen_encoder(config, inputs, mesh)
  t_feat = time.time()
  cached, feature_dim = _cached_features(config, inputs, encoder, mesh)
  feature_time = time.time() - t_feat

  # --- Classifier and optimizer ---
  classifier = classifier_lib.make_classifier(config, inputs.dataset.num_classes)
  tx, schedule = classifier_lib.make_optimizer(config, total)
  create = functools.partial(classifier_lib.init_state, classifier, tx, feature_dim, config.seed)

  # --- Restore, or start fresh and replicated ---
  abstract = parallel.replicated_abstract(jax.eval_shape(create), mesh)
  state = checkpoint.restore_latest(mgr, abstract)
  if state is None:
    state = jax.jit(create, out_shardings=parallel.replicated(mesh))()
  start_step = int(state.step)
  workdir_files.write_config(workdir, config, is_main)
  workdir_files.write_json(
    workdir,
    workdir_files.LINEAR_INFO_FILE,
    {**info, **lengths, "num_train": inputs.num_train, "feature_dim": feature_dim},
    is_main,
    indent=2,
  )
  logging.info(
    "Linear eval (%s, %s) of %s/%s at step %d: %s from step %d of %d.",
    config.protocol,
    MODE_NAMES[config.mode],
    config.pretrained.network,
    config.pretrained.weights,
    inputs.pre_step,
    "resuming" if start_step else "starting",
    start_step,
    total,
  )

  # --- Loop: one per mode ---
  writer = workdir_files.metric_writer(workdir, is_main)
  progress = _Progress(config, workdir, mgr, writer, total, lengths["steps_per_epoch"], stop_after_steps, start_step)
  t_train = time.time()
  try:
    state = _train(config, inputs, encoder, (classifier, tx, schedule), state, cached, progress, mesh, stop_after_steps)
  finally:
    progress.close()
  train_time = time.time() - t_train

  # --- Evaluation (also the whole of a rerun of a finished workdir) ---
  if cached is None:
    t_feat = time.time()
    cached = {
      "train": _features(config, inputs, encoder, "train", mesh),
      "eval": _features(config, inputs, encoder, "eval", mesh),
    }
    feature_time += time.time() - t_feat
  results = _results(
    config,
    inputs,
    classifier,
    state,
    cached,
    lengths,
    start_step,
    feature_dim,
    {"feature_time_s": feature_time, "train_time_s": train_time},
    t_start,
  )
  _record(config, workdir, writer, results, inputs, is_main)
  return results


def _open_inputs(config) -> _Inputs:
  """The dataset, the pretraining run and the resolved data config; a dataset named here is opened first, so that
  a missing one says so before anything else."""
  dataset = data_input.load_dataset(config.data) if config.data.name else None
  run_config, pre_step = check_pretrained(config)
  data_config = linear_config.resolve_data_config(config, run_config)
  if dataset is None:
    dataset = data_input.load_dataset(data_config)
  num_train = _count(dataset, "train", data_config.train_examples)
  num_eval = _count(dataset, "eval", data_config.eval_examples)
  return _Inputs(dataset, run_config, pre_step, data_config, num_train, num_eval)


def _frozen_encoder(config, inputs: _Inputs, mesh) -> _Encoder:
  """The pretrained network's encoder (config.pretrained.network and weights), restored alone and frozen."""
  pretrained = runs.restore(config.pretrained.workdir, mesh, inputs.pre_step, inputs.run_config)
  network = getattr(pretrained.networks, config.pretrained.network)
  encoder_vars = features.encoder_variables(
    getattr(pretrained.state, config.pretrained.network), config.pretrained.weights
  )
  del pretrained  # optimizer state and the other networks are not needed
  data_config = inputs.data_config
  feature_fn = functools.partial(
    features.make_feature_fn(
      network, inputs.dataset.device_augment_config(data_config.augment), data_config.image_size, mesh
    ),
    encoder_vars,
  )
  return _Encoder(network, encoder_vars, feature_fn)


def _features(config, inputs: _Inputs, encoder: _Encoder, split: str, mesh):
  """(features, labels) of a split's examples (its configured count), with the eval preprocessing."""
  count = inputs.data_config.train_examples if split == "train" else inputs.data_config.eval_examples
  batches = inputs.dataset.eval_batches(split, count, config.eval.batch_size, mesh, config.seed)
  return features.extract_features(encoder.feature_fn, batches)


def _cached_features(config, inputs: _Inputs, encoder: _Encoder, mesh):
  """Fast mode: both splits' features, extracted once, and the feature size; full mode: (None, the size)."""
  if config.mode == "fast":
    cached = {
      "train": _features(config, inputs, encoder, "train", mesh),
      "eval": _features(config, inputs, encoder, "eval", mesh),
    }
    return cached, int(cached["train"][0].shape[1])
  shape = jax.eval_shape(
    encoder.feature_fn,
    jax.ShapeDtypeStruct(
      (config.eval.batch_size,) + inputs.dataset.image_shape, np.uint8, sharding=parallel.batch_sharded(mesh)
    ),
  ).shape
  return None, int(shape[1])


def _train(
  config,
  inputs: _Inputs,
  encoder: _Encoder,
  head,
  state,
  cached,
  progress: _Progress,
  mesh,
  stop_after_steps: Optional[int],
):
  """Trains the classifier (head: classifier, optimizer, schedule) from the state's step; the trained state."""
  classifier, tx, schedule = head
  start_step, total = int(state.step), progress.total
  end = total if stop_after_steps is None else min(total, stop_after_steps)
  if config.mode == "fast" and start_step < end:
    # Cached features: the steps between two log / checkpoint steps run as one jitted scan.
    chunk_fn = classifier_lib.make_feature_chunk_fn(classifier, tx, schedule, mesh)
    feats, labels = (
      classifier_lib.replicate(x.astype(t), mesh) for x, t in zip(cached["train"], (np.float32, np.int32))
    )
    order = data_input.EpochOrder(config.seed, inputs.num_train, config.train.batch_size)
    every = (config.train.log_every_steps, config.train.checkpoint_every_steps)
    step = start_step
    for stop in classifier_lib.chunk_ends(start_step, total, every, stop_after_steps):
      idx = classifier_lib.replicate(order.batches(step, stop), mesh)
      state, metrics = chunk_fn(state, feats, labels, idx)
      progress.after(stop, state, metrics)
      step = stop
  elif config.mode == "full" and start_step < end:
    # Augmented images through the frozen encoder, one classifier step at a time.
    data_config = inputs.data_config
    step_fn = classifier_lib.make_full_step(
      encoder.network, classifier, tx, schedule, data_config.augment, data_config.image_size, mesh
    )
    for step, images, labels in _full_batches(config, inputs.dataset, data_config, start_step, mesh):
      state, metrics = step_fn(state, encoder.variables, images, labels)
      progress.after(step + 1, state, metrics)
      if step + 1 >= end:
        break
  return state


def _results(
  config,
  inputs: _Inputs,
  classifier,
  state,
  cached,
  lengths,
  start_step: int,
  feature_dim: int,
  times: Dict[str, float],
  t_start: float,
) -> Dict[str, Any]:
  """linear_eval.json's content: the classifier scored on both splits' cached features, and what was run (times:
  feature extraction's and training's seconds; the wall time runs from t_start to the scores)."""
  held_out = classifier_lib.evaluate_features(classifier, state, *cached["eval"])
  train_acc = classifier_lib.evaluate_features(classifier, state, *cached["train"])
  reached, total, data_config = int(state.step), lengths["total_steps"], inputs.data_config
  return {
    "pretrained_workdir": config.pretrained.workdir,
    "pretrained_step": inputs.pre_step,
    "pretrained_method": inputs.run_config.method,
    "network": config.pretrained.network,
    "weights": config.pretrained.weights,
    "protocol": config.protocol,
    "mode": config.mode,
    "mode_name": MODE_NAMES[config.mode],
    "dataset": data_config.name,
    "image_size": data_config.image_size,
    "epochs": reached / lengths["steps_per_epoch"],
    "configured_epochs": float(config.train.epochs),
    "steps": reached,
    "total_steps": total,
    "steps_per_epoch": lengths["steps_per_epoch"],
    "batch_size": config.train.batch_size,
    "lr": config.optim.base_lr * config.train.batch_size / 256,
    "batch_norm_head": bool(config.classifier.batch_norm),
    "nesterov": bool(config.optim.nesterov),
    "train_examples": inputs.num_train,
    "eval_examples": inputs.num_eval,
    "num_classes": inputs.dataset.num_classes,
    "feature_dim": feature_dim,
    "finished": reached >= total,
    "top1": held_out["top1"],
    "top5": held_out["top5"],
    "train_top1": train_acc["top1"],
    "trained_steps": reached - start_step,
    **times,
    "wall_time_s": time.time() - t_start,
    "devices": jax.device_count(),
  }


def _record(config, workdir: str, writer, results: Dict[str, Any], inputs: _Inputs, is_main: bool) -> None:
  """The scores as metrics, linear_eval.json when finished, and the closing line."""
  reached, total = results["steps"], results["total_steps"]
  scores = {"eval_top1": results["top1"], "eval_top5": results["top5"], "train_top1": results["train_top1"]}
  writer.write_scalars(reached, scores)
  writer.flush()
  workdir_files.append_metrics(workdir, reached, scores, is_main)
  if results["finished"]:
    workdir_files.write_json(workdir, workdir_files.LINEAR_EVAL_FILE, results, is_main, indent=2)
  if is_main:
    status = "Linear eval" if results["finished"] else f"Linear eval stopped at step {reached} of {total}"
    print(
      f"{status} [{config.protocol}, {MODE_NAMES[config.mode]}] of {config.pretrained.network}/"
      f"{config.pretrained.weights} ({inputs.run_config.method}, step {inputs.pre_step}): "
      f"top1={results['top1']:.2f}% top5={results['top5']:.2f}% (train top1={results['train_top1']:.2f}%) in "
      f"{results['wall_time_s']:.0f}s",
      flush=True,
    )


def _count(dataset, split: str, count: int) -> int:
  """Examples a (sub)split holds: all of it when count is 0."""
  total = dataset.num_examples(split)
  return min(int(count), total) if count else total


def _full_batches(config, dataset, data_config, start: int, mesh) -> Iterator[Tuple[int, jax.Array, jax.Array]]:
  """(step, images, labels) of the full mode's training batches from `start`, exact on resume."""
  batch = config.train.batch_size
  if dataset.host_crops:  # streaming: one host crop per example, flipped on the device
    source = dataset.labelled_source("train", data_config.train_examples)
    yield from dataset.train_batches(
      config.seed,
      start,
      batch,
      mesh,
      views=1,
      aug=linear_config.train_augment_config(data_config.augment),
      source=source,
    )
    return
  train_x, train_y = data_input.subset(*dataset.split("train"), data_config.train_examples, config.seed)
  order = data_input.EpochOrder(config.seed, train_x.shape[0], batch)
  step = start
  while True:
    idx = data_input.process_slice(order.batch(step), jax.process_index(), jax.process_count())
    yield (step, parallel.global_batch(train_x[idx], mesh), parallel.global_batch(train_y[idx].astype(np.int32), mesh))
    step += 1
