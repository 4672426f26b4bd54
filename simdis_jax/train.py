"""train_and_evaluate(config, workdir): one SimDis / BYOL pretraining run, top to bottom."""

import collections
import dataclasses
import logging
import time
from typing import Any, Dict, NamedTuple, Optional, Tuple

import jax
import ml_collections
from clu import periodic_actions

from simdis_jax import checkpoint, configuration, console, flops, lock, methods, parallel, preemption, resume, runs
from simdis_jax import workdir as workdir_files
from simdis_jax.data import input as data_input
from simdis_jax.evaluation import knn, supervised_top1
from simdis_jax.offline_teacher import INPUT_KEYS, adopt as adopt_offline_teacher
from simdis_jax.state import NetState
from simdis_jax.step import make_train_step
from simdis_jax.workdir import RUN_INFO_FILE, SUMMARY_FILE

MAX_STEPS_IN_FLIGHT = 2


def _teacher_net_config_matches(teacher_run: dict, wanted) -> None:
  got = teacher_run["model"]["student"]
  # The input keys say how this run feeds the teacher (offline_teacher.adopt), not what the teacher run trained.
  diffs = {k: (got.get(k), wanted[k]) for k in wanted.keys() if k not in INPUT_KEYS and got.get(k) != wanted[k]}
  if diffs:
    raise ValueError(
      "The teacher run's network does not match config.model.teacher: "
      + ", ".join(f"{k}: run has {a!r}, config wants {b!r}" for k, (a, b) in diffs.items())
      + ". Point --config.teacher.workdir at a finished run of this architecture, or change config.model.teacher."
    )


def check_offline_teacher(config) -> ml_collections.ConfigDict:
  """Checks, before anything compiles, that config.teacher.workdir is a finished run of config.model.teacher by a
  method whose student can be a teacher (About.teacher_source: BYOL)."""
  sources = [m for m in methods.METHODS if methods.about(m).teacher_source]
  if not config.teacher.workdir:
    raise ValueError(
      f"method {config.method!r} needs a finished teacher run: set --config.teacher.workdir=<workdir "
      f"of a method={sources[0]} run of the teacher network>."
    )
  run, _ = runs.check_finished(
    config.teacher.workdir,
    "config.teacher.workdir",
    config.teacher.allow_unfinished,
    allow_flag="--config.teacher.allow_unfinished",
    first=f"train the teacher first with a method={sources[0]} config (--workdir <dir>)",
  )
  if run.get("method") not in sources:
    raise ValueError(
      f"config.teacher.workdir={config.teacher.workdir!r} is a {run.get('method')!r} run; the "
      f"offline teacher must come from a method={'|'.join(sources)} run."
    )
  _teacher_net_config_matches(run.to_dict(), config.model.teacher)
  return run


def load_offline_teacher(teacher_run, config, state, mesh):
  """Replaces the state's teacher by the student (online + EMA) of the finished teacher run (SimDis-Off, SEED)."""
  restored = runs.restore(config.teacher.workdir, mesh, run_config=teacher_run).state
  s = restored.student
  logging.info("Offline teacher restored from %s at step %d.", config.teacher.workdir, int(restored.step))
  return state.replace(teacher=NetState(s.params, s.batch_stats, s.ema_params, s.ema_batch_stats))


def _previous_train_time(workdir: str, start_step: int) -> float:
  """Training seconds that earlier processes of this run logged up to `start_step` (0 for a new run)."""
  if start_step == 0:
    return 0.0
  return workdir_files.last_value(workdir_files.read_metrics(workdir), "train_time_s", up_to_step=start_step) or 0.0


DIVERGED_ADVICE = "Lower --config.optim.base_lr or lengthen --config.optim.warmup_epochs."


def run_knn(config, networks, state, dataset, mesh) -> Dict[str, float]:
  """kNN top-1 of the online student (and teacher) encoders, as metrics."""
  results = {}
  pairs = {"student": (networks.student, state.student), "teacher": (networks.teacher, state.teacher)}
  for name in config.knn.networks:
    net, net_state = pairs[name]
    if net is None:
      continue
    variables = {"params": net_state.params, "batch_stats": net_state.batch_stats}
    acc = knn.knn_accuracy(
      net, variables, dataset, config.knn, config.data.augment, config.data.image_size, mesh, seed=config.seed
    )
    results[f"knn_top1/{name}"] = acc["knn_top1"]
  return results


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, stop_after_steps: Optional[int] = None
) -> Dict[str, float]:
  """Pretrains as config says, resuming from <workdir>; returns the final metrics.

  `stop_after_steps` ends this process early (after a checkpoint) without
  changing the schedule, as a preemption would; the next call resumes.
  """
  config = configuration.validate(config)
  runs.check_image_size(config)
  workdir = workdir_files.absolute(workdir)
  checkpoint.check_writable(workdir)
  with lock.held(workdir):  # a second run on this workdir stops here
    try:
      return _train_and_evaluate(config, workdir, stop_after_steps)
    except BaseException:
      checkpoint.remove_if_empty(workdir)  # a run that failed before its first save leaves no empty checkpoints/
      raise


class _Run(NamedTuple):
  """A run's parts, built once before its first step (_set_up): what its loop and its end read."""

  config: ml_collections.ConfigDict
  workdir: str
  mgr: Any  # its checkpoint manager
  mesh: Any
  dataset: Any
  lengths: Dict[str, int]  # runs.schedule_lengths
  networks: Any
  train_step: Any
  run_info: Dict[str, Any]  # run_info.json as written; the loop adds step_flops
  is_main: bool

  @property
  def total_steps(self) -> int:
    return self.lengths["total_steps"]


@dataclasses.dataclass
class _Loop:
  """Where the training loop got to: what the run's end reports."""

  state: Any
  start_step: int
  t0: float  # when this process's training started (after the initial kNN)
  time_before: float = 0.0  # training seconds of earlier processes
  images_seen: int = 0
  metrics: Any = None  # the last step's
  final: Dict[str, float] = dataclasses.field(default_factory=dict)


def _train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, stop_after_steps: Optional[int]
) -> Dict[str, float]:
  run, state = _set_up(config, workdir)
  writer = workdir_files.metric_writer(workdir, run.is_main)
  loop = _train(run, state, writer, stop_after_steps)
  return _finish(run, loop)


def _set_up(config: ml_collections.ConfigDict, workdir: str) -> Tuple[_Run, Any]:
  """Mesh, data, networks, the state (restored, or new with its offline teacher), run_info.json, the step."""
  config = adopt_offline_teacher(config)  # an offline teacher's network (and inputs) come with its run
  mgr = checkpoint.manager(workdir, config.train.keep_checkpoints)
  fresh_start = mgr.latest_step() is None
  if not fresh_start:
    resume.check_resume_config(workdir, config)
  offline_teacher = methods.teacher_kind(config) == "offline"
  teacher_run = check_offline_teacher(config) if offline_teacher and fresh_start else None
  is_main = jax.process_index() == 0

  # --- Mesh ---
  mesh = parallel.make_mesh()
  parallel.check_batch_size(config.train.batch_size, mesh)

  # --- Input ---
  dataset = data_input.load_dataset(config.data)
  lengths = runs.schedule_lengths(config.train, dataset.num_train, config.optim.warmup_epochs)
  if (
    (config.probe.enabled or methods.about(config.method).needs_labels)
    and dataset.num_classes
    and config.probe.num_classes != dataset.num_classes
  ):
    raise ValueError(
      f"config.probe.num_classes={config.probe.num_classes} but {config.data.name!r} has "
      f"{dataset.num_classes} classes; set --config.probe.num_classes={dataset.num_classes}."
    )
  total_steps = lengths["total_steps"]

  # --- Model and optimizer ---
  networks, schedule, tx, create = runs.build(config, total_steps, lengths["warmup_steps"], lengths["steps_per_epoch"])

  # --- State: restored if the workdir has a checkpoint, else created directly replicated ---
  abstract = parallel.replicated_abstract(jax.eval_shape(create), mesh)
  checkpoint.check_free_space(workdir, abstract, config.train.keep_checkpoints)
  state = checkpoint.restore_latest(mgr, abstract)
  if state is None:
    state = jax.jit(create, out_shardings=parallel.replicated(mesh))()
    if offline_teacher:
      state = load_offline_teacher(teacher_run, config, state, mesh)
    logging.info("Starting a new run in %s (%d steps, %d per epoch).", workdir, total_steps, lengths["steps_per_epoch"])
  else:
    logging.info("Resumed from %s at step %d.", workdir, int(state.step))
  resume.record_config(workdir, config, int(state.step), is_main)  # a changed config keeps the old one too
  run_info = {
    **lengths,
    "num_train": dataset.num_train,
    "devices": jax.device_count(),
    "processes": jax.process_count(),
    "versions": workdir_files.software_versions(),
  }
  previous_info = workdir_files.read_json(workdir, RUN_INFO_FILE) or {}
  if "step_flops" in previous_info:  # kept across restarts
    run_info["step_flops"] = previous_info["step_flops"]
  workdir_files.write_json(workdir, RUN_INFO_FILE, run_info, is_main)

  # --- Update step ---
  train_step = make_train_step(config, networks, tx, schedule, total_steps, mesh)
  return _Run(config, workdir, mgr, mesh, dataset, lengths, networks, train_step, run_info, is_main), state


def _evaluate(run: _Run, state, writer, step: int, record: bool = True) -> Dict[str, float]:
  """kNN of the state's networks at `step`, said on the console and (if `record`) written as metrics."""
  results = run_knn(run.config, run.networks, state, run.dataset, run.mesh)
  if results:
    console.say(f"step {step}: kNN top-1 " + ", ".join(f"{k.split('/')[-1]} {v:.1f}%" for k, v in results.items()))
  if results and record:  # no kNN networks: no empty metrics line
    writer.write_scalars(step, results)
    workdir_files.append_metrics(run.workdir, step, results, run.is_main)
  return results


def _train(run: _Run, state, writer, stop_after_steps: Optional[int]) -> _Loop:
  """The training loop from the state's step: logs, checkpoints, kNN, a preemption's stop; then the saves finish."""
  config, mgr, total_steps = run.config, run.mgr, run.total_steps
  start_step = int(state.step)
  hooks = []
  if run.is_main:
    hooks.append(
      periodic_actions.ReportProgress(
        num_train_steps=total_steps, writer=writer, every_steps=config.train.log_every_steps
      )
    )
  last_saved = mgr.latest_step()
  verified = last_saved is None or checkpoint.has_checksums(mgr, last_saved)  # restored with its CRCs

  # A SIGTERM from here on (the first kNN included) is honoured at the next step boundary.
  watch = preemption.PreemptionWatch()
  loop = _Loop(state, start_step, time.time())
  loop.time_before = _previous_train_time(run.workdir, start_step)  # training seconds of earlier processes
  in_flight = collections.deque()
  progress = console.Progress(total_steps, start_step, config.train.batch_size)  # prints only from the CLI
  try:
    if start_step == 0 and config.knn.networks:
      loop.final.update({f"{k}_init": v for k, v in _evaluate(run, loop.state, writer, 0).items()})
      loop.t0 = time.time()

    # --- Loop ---
    for step, images, labels in run.dataset.train_batches(config.seed, start_step, config.train.batch_size, run.mesh):
      if step >= total_steps or (stop_after_steps is not None and step >= stop_after_steps):
        break
      if step == start_step:  # several hosts: start the first step together, each with its executable
        run.run_info["step_flops"] = flops.step_flops(config, run.mesh, loop.state, images, labels, run.train_step)
        workdir_files.write_json(run.workdir, RUN_INFO_FILE, run.run_info, run.is_main)
        parallel.compile_together(run.train_step, loop.state, images, labels, name="train_step")
      loop.state, loop.metrics = run.train_step(loop.state, images, labels)
      # Dispatch at most MAX_STEPS_IN_FLIGHT steps ahead of the device: otherwise the host loop can
      # queue dozens of steps, and a SIGTERM's "next step boundary" would come only after all of them.
      in_flight.append(loop.metrics["loss"])
      if len(in_flight) > MAX_STEPS_IN_FLIGHT:
        in_flight.popleft().block_until_ready()
      loop.images_seen += config.train.batch_size
      done = step + 1
      for hook in hooks:
        hook(done)
      if done % config.train.log_every_steps == 0 or done == total_steps:
        progress.loss = _log_step(run, loop, writer, done, last_saved, verified)
      progress.update(done)
      preempted = watch.reached(done)  # every process gets the same answer at the same step
      if (
        done % config.train.checkpoint_every_steps == 0 or done == total_steps or done == stop_after_steps or preempted
      ):
        # Never save a state holding NaN/Inf (checkpoint.save checks every array): the last good one survives.
        checkpoint.save_finite(mgr, done, loop.state, last_saved, DIVERGED_ADVICE, force=preempted, verified=verified)
        last_saved, verified = done, True
      if preempted:
        raise preemption.Preempted(done, run.workdir)
      if done == total_steps or (config.train.knn_every_steps and done % config.train.knn_every_steps == 0):
        loop.final.update(_evaluate(run, loop.state, writer, done))
  finally:
    # Whatever stopped the loop (a preemption included), finish the asynchronous saves already started.
    watch.close()
    writer.flush()
    checkpoint.finish(mgr)  # a save that ran out of disk: one line
  return loop


def _log_step(run: _Run, loop: _Loop, writer, done: int, last_saved: Optional[int], verified: bool) -> float:
  """The metrics line of step `done` (after the divergence check), written; its loss."""
  values = {k: float(v) for k, v in jax.device_get(loop.metrics).items()}
  checkpoint.check_finite_metrics(done, values, last_saved, DIVERGED_ADVICE, verified)
  values["images_per_sec"] = loop.images_seen / max(time.time() - loop.t0, 1e-9)
  values["epoch"] = done / run.lengths["steps_per_epoch"]
  values["train_time_s"] = loop.time_before + time.time() - loop.t0
  if getattr(run.dataset, "stats", None):
    values["input/skipped_images"] = run.dataset.stats["skipped"]
  writer.write_scalars(done, values)
  workdir_files.append_metrics(run.workdir, done, values, run.is_main)
  return values["loss"]


def _finish(run: _Run, loop: _Loop) -> Dict[str, float]:
  """The final metrics: the last step's, a supervised run's classifier, kNN; summary.json and the closing line."""
  config, state, total_steps, final = run.config, loop.state, run.total_steps, loop.final
  if loop.metrics is not None:
    final.update({k: float(v) for k, v in jax.device_get(loop.metrics).items()})
  if methods.about(config.method).needs_labels and int(state.step) >= total_steps:
    # The supervised network's own classifier on the held-out split (the linear protocol is final_eval's).
    variables = {"params": state.student.params, "batch_stats": state.student.batch_stats}
    final["classifier_top1"] = supervised_top1.classifier_top1(
      run.networks.student,
      variables,
      run.dataset,
      config.data.augment,
      config.data.image_size,
      run.mesh,
      config.knn.eval_examples,
      config.knn.batch_size,
      config.seed,
    )
    console.say(f"classifier top-1 on the held-out split: {final['classifier_top1']:.2f}%")
  if loop.start_step >= total_steps:
    logging.info("Run in %s had already finished (step %d of %d).", run.workdir, loop.start_step, total_steps)
    final.update(_evaluate(run, state, None, total_steps, record=False))  # its row is in metrics.jsonl already
  wall = time.time() - loop.t0
  final["train_wall_time_s"] = wall
  reached = int(state.step)
  if run.is_main and reached >= total_steps and loop.images_seen:
    # Wall time and images/s cover the process that finished the run (from its start step).
    workdir_files.write_json(
      run.workdir,
      SUMMARY_FILE,
      {
        **final,
        "images_seen": loop.images_seen,
        "images_per_sec": loop.images_seen / max(wall, 1e-9),
        "train_time_s": loop.time_before + wall,
        "step_flops": run.run_info.get("step_flops"),
        "start_step": loop.start_step,
        "steps": reached,
        "total_steps": total_steps,
        "epochs": reached / run.lengths["steps_per_epoch"],
      },
      indent=2,
    )
  if run.is_main:
    summary = ", ".join(f"{k}={v:.2f}" for k, v in sorted(final.items()) if k.startswith("knn"))
    status = "Finished" if reached >= total_steps else f"Stopped at step {reached} of {total_steps}:"
    what = methods.describe_targets(config)
    print(f"{status} {config.method} ({what}) in {wall:.0f}s: {summary}", flush=True)
  return final
