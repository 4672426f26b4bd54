"""The train step: augment on device, forward every network per view, one update.

`make_train_step` returns a pure function (state, uint8 images) -> (state,
metrics), jitted over the mesh. Augmentation runs on the global batch with one
key per example, so it does not depend on how the batch is split; the rest is
per-device code under `jax.shard_map` where BN statistics are either the
device's own (sync_bn=False) or averaged over the data axis (SyncBN).
"""

import functools
from typing import Callable, Dict

import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from simdis_jax import simdis
from simdis_jax.data import augment
from simdis_jax.parallel import DATA_AXIS, batch_sharded, replicated
from simdis_jax.state import NetState, Networks, TrainState, probe_optimizer, trainable_params


def _forward_two_views(net, params, batch_stats, v1, v2, train: bool, update_stats: bool, axis):
  """Runs each view in its own call (SPEC.md: BN normalises over one view's batch)."""
  outputs = []
  for view in (v1, v2):
    variables = {"params": params, "batch_stats": batch_stats}
    if train:
      out, mutated = net.apply(variables, view, train=True, bn_axis_name=axis, mutable=["batch_stats"])
      if update_stats:
        batch_stats = mutated["batch_stats"]
    else:
      out = net.apply(variables, view, train=False)
    outputs.append(out)
  return outputs[0], outputs[1], batch_stats


def loss_fn(trainable, state: TrainState, v1, v2, *, networks: Networks, config):
  """Total loss (student loss + teacher BYOL loss when online) and (metrics, new BN statistics)."""
  method, views = config.method, tuple(config.views)
  online = method == "simdis_on"
  axis = DATA_AXIS if config.model.sync_bn else None
  needed = simdis.target_networks(views, method)
  fwd = functools.partial(_forward_two_views, axis=axis)
  stats = {}

  s1, s2, stats["student"] = fwd(networks.student, trainable["student"], state.student.batch_stats, v1, v2,
                                 train=True, update_stats=True)
  targets = {"student": (s1["projection"], s2["projection"])}
  if "student_ema" in needed:
    e1, e2, stats["student_ema"] = fwd(networks.student_ema, state.student.ema_params,
                                       state.student.ema_batch_stats, v1, v2, train=True, update_stats=True)
    targets["student_ema"] = (e1["projection"], e2["projection"])
  # The frozen offline teacher keeps its statistics; its BN mode is config.teacher.bn_mode.
  teacher_train = online or config.teacher.bn_mode == "train"
  if "teacher" in needed:
    t_params = trainable["teacher"] if online else jax.lax.stop_gradient(state.teacher.params)
    t1, t2, stats["teacher"] = fwd(networks.teacher, t_params, state.teacher.batch_stats, v1, v2,
                                   train=teacher_train, update_stats=online)
    targets["teacher"] = (t1["projection"], t2["projection"])
  if "teacher_ema" in needed:
    te1, te2, stats["teacher_ema"] = fwd(networks.teacher_ema, state.teacher.ema_params,
                                         state.teacher.ema_batch_stats, v1, v2,
                                         train=teacher_train, update_stats=online)
    targets["teacher_ema"] = (te1["projection"], te2["projection"])
  # Every target is stop-gradient inside simdis.regression_loss.
  targets = jax.lax.stop_gradient(targets)

  predictions = {h: (s1["predictions"][h], s2["predictions"][h]) for h in views}
  loss_student, per_head = simdis.student_loss(predictions, targets, views, config.head_combination)
  metrics = {"loss_student": loss_student}
  metrics.update({f"loss_head/{h}": v for h, v in per_head.items()})
  loss = loss_student
  if online:
    loss_teacher = simdis.teacher_byol_loss(
        (t1["predictions"][simdis.BYOL_HEAD], t2["predictions"][simdis.BYOL_HEAD]), targets["teacher_ema"])
    metrics["loss_teacher"] = loss_teacher
    loss = loss + loss_teacher
  metrics["loss"] = loss
  # Pooled features of view v for the online probe (stop-gradient there).
  features = {"student": s1["feature"]}
  if "teacher" in needed:
    features["teacher"] = t1["feature"]
  return loss, (metrics, stats, features)


def supervised_loss_fn(trainable, state: TrainState, v1, v2, labels, *, networks: Networks, config):
  """method=supervised: softmax cross-entropy of the student's classifier on both views, averaged.

  Same views, augmentations, BN mode and optimizer as the self-supervised students, so that it is
  their upper reference. Examples with a negative label (unlabelled) are left out.
  """
  axis = DATA_AXIS if config.model.sync_bn else None
  o1, o2, new_stats = _forward_two_views(networks.student, trainable["student"], state.student.batch_stats,
                                         v1, v2, train=True, update_stats=True, axis=axis)
  labelled = labels >= 0
  safe = jnp.where(labelled, labels, 0)
  count = jnp.maximum(jnp.sum(labelled), 1)
  losses, correct = [], 0
  for out in (o1, o2):
    ce = optax.softmax_cross_entropy_with_integer_labels(out["logits"], safe)
    losses.append(jnp.sum(ce * labelled) / count)
    correct = correct + jnp.sum((jnp.argmax(out["logits"], -1) == safe) & labelled)
  loss = (losses[0] + losses[1]) / 2
  metrics = {"loss": loss, "loss_student": loss, "train_top1": 100.0 * correct / (2 * count)}
  return loss, (metrics, {"student": new_stats}, {"student": o1["feature"]})


def apply_ema(state: TrainState, tau, online_teacher: bool) -> TrainState:
  """EMA of encoder + projector params for the student (and the teacher when it trains)."""
  student = state.student.replace(ema_params=simdis.ema_update(state.student.ema_params, state.student.params, tau))
  teacher = state.teacher
  if online_teacher:
    teacher = teacher.replace(ema_params=simdis.ema_update(teacher.ema_params, teacher.params, tau))
  return state.replace(student=student, teacher=teacher)


def _with_stats(net: NetState, stats: Dict, online_key: str, ema_key: str) -> NetState:
  return net.replace(batch_stats=stats.get(online_key, net.batch_stats),
                     ema_batch_stats=stats.get(ema_key, net.ema_batch_stats))


def probe_loss(probe_params, features, labels):
  """Summed softmax cross-entropy and correct count of a linear classifier on stop-gradient features.

  Examples with a negative label (unlabelled, e.g. STL-10's `unlabelled` split) are left out; returns
  (loss sum, (correct, labelled count)) so that devices can add them up.
  """
  logits = jax.lax.stop_gradient(features) @ probe_params["kernel"] + probe_params["bias"]
  labelled = labels >= 0
  safe = jnp.where(labelled, labels, 0)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, safe)
  correct = jnp.sum((jnp.argmax(logits, -1) == safe) & labelled)
  return jnp.sum(ce * labelled), (correct, jnp.sum(labelled))


def probe_update(state: TrainState, features, labels, config):
  """One step of the online linear probe (DeepMind BYOL's): separate params, separate optimizer."""
  metrics, grads = {}, {}
  for name, probe_params in state.probe.items():
    (loss_sum, (correct, count)), grad_sum = jax.value_and_grad(probe_loss, has_aux=True)(
        probe_params, features[name], labels)
    total = jnp.maximum(jax.lax.psum(count, DATA_AXIS), 1)
    grads[name] = jax.tree.map(lambda g: jax.lax.psum(g, DATA_AXIS) / total, grad_sum)
    metrics[f"probe_loss/{name}"] = jax.lax.psum(loss_sum, DATA_AXIS) / total
    metrics[f"probe_top1/{name}"] = 100.0 * jax.lax.psum(correct, DATA_AXIS) / total
  updates, opt_state = probe_optimizer(config).update(grads, state.probe_opt_state, state.probe)
  return state.replace(probe=optax.apply_updates(state.probe, updates), probe_opt_state=opt_state), metrics


def make_train_step(config, networks: Networks, tx: optax.GradientTransformation, schedule: Callable,
                    total_steps: int, mesh) -> Callable:
  """Builds the jitted, state-donating train step for this config and mesh."""
  online = config.method == "simdis_on"
  aug_config = config.data.augment
  image_size = config.data.image_size

  def per_device_step(state: TrainState, v1, v2, labels):
    tau = simdis.ema_decay(state.step, total_steps, config.ema.base)
    if config.ema.timing == "before":  # authors: before the loss, with pre-update weights
      state = apply_ema(state, tau, online)
    params = trainable_params(state, config.method)
    if config.method == "supervised":
      objective = functools.partial(supervised_loss_fn, labels=labels, networks=networks, config=config)
    else:
      objective = functools.partial(loss_fn, networks=networks, config=config)
    grad_fn = jax.value_and_grad(objective, has_aux=True)
    (_, (metrics, stats, features)), grads = grad_fn(params, state, v1, v2)
    grads = jax.lax.pmean(grads, DATA_AXIS)
    if not config.model.sync_bn:
      # Per-device statistics differ; keep one (averaged) copy in the replicated state.
      stats = jax.lax.pmean(stats, DATA_AXIS)
    updates, opt_state = tx.update(grads, state.opt_state, params)
    params = optax.apply_updates(params, updates)
    student = _with_stats(state.student.replace(params=params["student"]), stats, "student", "student_ema")
    teacher = state.teacher
    if online:
      teacher = _with_stats(teacher.replace(params=params["teacher"]), stats, "teacher", "teacher_ema")
    new_state = state.replace(student=student, teacher=teacher, opt_state=opt_state)
    if config.probe.enabled:
      new_state, probe_metrics = probe_update(new_state, features, labels, config)
      metrics.update(probe_metrics)
    if config.ema.timing == "after":  # DeepMind: after the update, with the new weights
      new_state = apply_ema(new_state, tau, online)
    metrics = jax.lax.pmean(metrics, DATA_AXIS)
    metrics.update(lr=schedule(state.step), tau=tau, grad_norm=optax.tree.norm(grads["student"]),
                   param_norm=optax.tree.norm(params["student"]))
    return new_state.replace(step=state.step + 1), metrics

  sharded_step = jax.shard_map(per_device_step, mesh=mesh,
                               in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS), P(DATA_AXIS)),
                               out_specs=(P(), P()), check_vma=False)

  def train_step(state: TrainState, images, labels):
    key = jax.random.fold_in(state.rng, state.step)
    if images.ndim == 5:  # streaming input: two host crops [B, 2, S, S, C]; the device does the rest
      v1, v2 = augment.two_views_of_crops(key, images, aug_config)
    else:  # in-memory input: whole images; the device crops too
      v1, v2 = augment.two_views(key, images, aug_config, out_size=image_size)
    v1 = jax.lax.with_sharding_constraint(v1, batch_sharded(mesh))
    v2 = jax.lax.with_sharding_constraint(v2, batch_sharded(mesh))
    return sharded_step(state, v1, v2, labels)

  return jax.jit(train_step, in_shardings=(replicated(mesh), batch_sharded(mesh), batch_sharded(mesh)),
                 out_shardings=(replicated(mesh), replicated(mesh)), donate_argnums=(0,))
