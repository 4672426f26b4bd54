"""The train step: augment on device, run the forwards the method asks for, one update.

`make_train_step` returns a pure function (state, uint8 images) -> (state,
metrics), jitted over the mesh. Augmentation runs on the global batch with one
key per example, so it does not depend on how the batch is split; the rest is
per-device code under `jax.shard_map` where BN statistics are either the
device's own (sync_bn=False) or averaged over the data axis (SyncBN). What is
computed (networks, BN modes, loss, EMA) is the method's: see simdis_jax/methods/.
"""

import functools
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from simdis_jax import methods, optim
from simdis_jax.data import augment
from simdis_jax.methods import common, interface
from simdis_jax.parallel import DATA_AXIS, batch_sharded, make_mesh, replicated
from simdis_jax.state import (
  Networks,
  TrainState,
  build_networks,
  network_variables,
  probe_in_loss,
  probe_optimizer,
  trainable_params,
  with_updates,
)


# Streams of the step's key fold_in(state.rng, state.step): the augmentations draw from the key itself,
# shuffle BN's permutation from fold_in(key, 1), stochastic depth from fold_in(key, 2) and then the device.
DROPOUT_STREAM = 2


def stochastic_depth_networks(config) -> Tuple[str, ...]:
  """Networks whose forwards drop branches: the trainable ones with model.<network>.drop_path_rate > 0.

  Frozen and EMA forwards (the targets) never do, nor does evaluation (it never asks).
  """
  return tuple(
    f.network
    for f in methods.get(config.method).forwards(config)
    if f.trainable and config.model[f.network].get("drop_path_rate", 0.0) > 0
  )


def dropout_key(rng, step):
  """This device's stochastic-depth key for the step (call under shard_map over DATA_AXIS).

  A function of the state's (rng, step) and the device's index only: a resumed run draws what an
  uninterrupted one does, and devices drop different branches of their different examples.
  """
  key = jax.random.fold_in(jax.random.fold_in(rng, step), DROPOUT_STREAM)
  return jax.random.fold_in(key, jax.lax.axis_index(DATA_AXIS))


def forward_views(net, params, batch_stats, views: Sequence, bn: str, update_stats: bool, axis, dropout_key=None):
  """Runs each view in its own call (docs/spec.md: BN normalises over one view's batch): (outputs, batch_stats).

  dropout_key: set for a training forward with stochastic depth; each view draws its own masks.
  """
  outputs = []
  for i, view in enumerate(views):
    variables = {"params": params, "batch_stats": batch_stats}
    # Without a key the calls are exactly those of a network without stochastic depth.
    drop = (
      {} if dropout_key is None else dict(stochastic_depth=True, rngs={"dropout": jax.random.fold_in(dropout_key, i)})
    )
    if bn == "train":
      out, mutated = net.apply(variables, view, train=True, bn_axis_name=axis, mutable=["batch_stats"], **drop)
      if update_stats:
        batch_stats = mutated["batch_stats"]
    else:
      out = net.apply(variables, view, train=False, **drop)
    outputs.append(out)
  return tuple(outputs), batch_stats


def loss_fn(
  trainable, state: TrainState, v1, v2, labels=None, permutation=None, *, networks: Networks, config, dropout_key=None
):
  """The method's loss from the forwards it asks for: loss, (metrics, new BN statistics, outputs).

  outputs[network] = (outputs of each view it saw); batch statistics only of the forwards that keep them.
  `permutation` (int [global batch]) orders the global batch for a `shuffle` forward (shuffle BN).
  `dropout_key`: the step's stochastic-depth key (needed when stochastic_depth_networks(config) is not empty).
  """
  method = methods.get(config.method)
  axis = DATA_AXIS if config.model.sync_bn else None
  views = (v1, v2)
  outputs, stats = {}, {}
  dropping = stochastic_depth_networks(config)
  if dropping and dropout_key is None:
    raise ValueError(
      f"{list(dropping)} train with stochastic depth (drop_path_rate > 0) but the step was given "
      "no dropout_key; pass dropout_key=step.dropout_key(state.rng, state.step)."
    )
  for f in method.forwards(config):
    params, batch_stats = network_variables(state, f.network)
    params = trainable[f.network] if f.trainable else jax.lax.stop_gradient(params)
    inputs = [views[i] for i in f.views]
    if f.shuffle:
      if permutation is None:
        raise ValueError(f"Forward of {f.network} asks for shuffle BN but the step was given no permutation.")
      inputs = [common.shuffle_to_devices(x, permutation, DATA_AXIS) for x in inputs]
    key = None
    if f.trainable and f.network in dropping:  # one stream per network (SimDis-On's teacher may drop too)
      key = jax.random.fold_in(dropout_key, interface.NETWORKS.index(f.network))
    outs, new_stats = forward_views(
      getattr(networks, f.network), params, batch_stats, inputs, f.bn, f.update_stats, axis, key
    )
    if f.shuffle:  # back to this device's own examples, in their order
      outs = tuple(jax.tree.map(lambda y: common.unshuffle_from_devices(y, permutation, DATA_AXIS), o) for o in outs)
    outputs[f.network] = outs
    if f.update_stats:
      stats[f.network] = new_stats
  loss, metrics = method.loss(outputs, labels, state, config)
  for name, outs in outputs.items():
    if "probe_logits" in outs[0]:  # probe.optimizer="main": the classifier's loss joins the objective
      probe_ce, probe_metrics = probe_in_loss_terms(outs[0]["probe_logits"], labels, name)
      loss, metrics = loss + probe_ce, {**metrics, **probe_metrics}
  return loss, ({**metrics, "loss": loss}, stats, outputs)


def probe_in_loss_terms(logits, labels, name: str):
  """DeepMind's online classifier term (byol_experiment.py loss_fn): the mean softmax cross-entropy of view 1's
  logits over the labelled examples (all of them in DeepMind's code), and its metrics."""
  labelled = labels >= 0
  safe = jnp.where(labelled, labels, 0)
  count = jnp.maximum(jnp.sum(labelled), 1)
  ce = jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, safe) * labelled) / count
  top1 = 100.0 * jnp.sum((jnp.argmax(logits, -1) == safe) & labelled) / count
  return ce, {f"probe_loss/{name}": ce, f"probe_top1/{name}": top1}


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
      probe_params, features[name], labels
    )
    total = jnp.maximum(jax.lax.psum(count, DATA_AXIS), 1)
    grads[name] = jax.tree.map(lambda g: jax.lax.psum(g, DATA_AXIS) / total, grad_sum)
    metrics[f"probe_loss/{name}"] = jax.lax.psum(loss_sum, DATA_AXIS) / total
    metrics[f"probe_top1/{name}"] = 100.0 * jax.lax.psum(correct, DATA_AXIS) / total
  updates, opt_state = probe_optimizer(config).update(grads, state.probe_opt_state, state.probe)
  return state.replace(probe=optax.apply_updates(state.probe, updates), probe_opt_state=opt_state), metrics


def update_on_views(
  state: TrainState,
  v1,
  v2,
  labels,
  permutation=None,
  *,
  config,
  networks: Networks,
  tx: optax.GradientTransformation,
  schedule: Callable,
  total_steps: int,
):
  """One train step on augmented views, per device (inside shard_map): (new state, metrics, gradients, logits,
  outputs).

  logits: what the method's loss returned as metrics["logits"] (MoCo-v2, SEED), else None.
  outputs: the forwards' outputs {network: (output dict of each view it saw)} (features, projections,
  predictions), as the loss saw them.
  """
  method = methods.get(config.method)
  # Only a config with stochastic depth computes a key: without, the step is what it was before it existed.
  key = dropout_key(state.rng, state.step) if stochastic_depth_networks(config) else None
  state, method_metrics = method.before_update(state, config, total_steps)
  params = trainable_params(state, config)
  objective = functools.partial(loss_fn, networks=networks, config=config, dropout_key=key)
  (_, (metrics, stats, outputs)), grads = jax.value_and_grad(objective, has_aux=True)(
    params, state, v1, v2, labels, permutation
  )
  logits = metrics.pop("logits", None)  # per example: not a metric to average
  grads = jax.lax.pmean(grads, DATA_AXIS)
  if not config.model.sync_bn:
    # Per-device statistics differ; keep one (averaged) copy in the replicated state.
    stats = jax.lax.pmean(stats, DATA_AXIS)
  updates, opt_state = tx.update(grads, state.opt_state, params)
  params = optax.apply_updates(params, updates)
  new_state = with_updates(state, params, stats).replace(opt_state=opt_state)
  if config.probe.enabled and not probe_in_loss(config):
    unseen = [name for name in new_state.probe if name not in outputs]
    if unseen:
      raise ValueError(
        f"config.probe.enabled: the online probe classifies {unseen}'s features, but this "
        f"method and config.views run no {unseen} forward; add such a view or disable the probe."
      )
    # Pooled features of view v for the online probe (stop-gradient there).
    features = {name: outputs[name][0]["feature"] for name in new_state.probe}
    new_state, probe_metrics = probe_update(new_state, features, labels, config)
    metrics.update(probe_metrics)
  new_state = method.after_update(new_state, outputs, config, total_steps)
  metrics = jax.lax.pmean(metrics, DATA_AXIS)
  metrics.update(
    lr=schedule(state.step),
    **method_metrics,
    grad_norm=optax.tree.norm(grads["student"]),
    param_norm=optax.tree.norm(params["student"]),
  )
  return new_state.replace(step=state.step + 1), metrics, grads, logits, outputs


def uses_shuffle(config) -> bool:
  """Whether a forward of config.method runs with shuffle BN (and the step needs a permutation)."""
  return any(f.shuffle for f in methods.get(config.method).forwards(config))


def make_train_step(
  config, networks: Networks, tx: optax.GradientTransformation, schedule: Callable, total_steps: int, mesh
) -> Callable:
  """Builds the jitted, state-donating train step for this config and mesh."""
  aug_config = config.data.augment
  image_size = config.data.image_size
  step = functools.partial(
    update_on_views, config=config, networks=networks, tx=tx, schedule=schedule, total_steps=total_steps
  )

  shuffle = uses_shuffle(config)

  def per_device_step(state: TrainState, v1, v2, labels, permutation):
    new_state, metrics, *_ = step(state, v1, v2, labels, permutation if shuffle else None)
    return new_state, metrics

  sharded_step = jax.shard_map(
    per_device_step,
    mesh=mesh,
    in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS), P(DATA_AXIS), P()),
    out_specs=(P(), P()),
    check_vma=False,
  )

  def train_step(state: TrainState, images, labels):
    key = jax.random.fold_in(state.rng, state.step)
    if images.ndim == 5:  # streaming input: two host crops [B, 2, S, S, C]; the device does the rest
      v1, v2 = augment.two_views_of_crops(key, images, aug_config)
    else:  # in-memory input: whole images; the device crops too
      v1, v2 = augment.two_views(key, images, aug_config, out_size=image_size)
    v1 = jax.lax.with_sharding_constraint(v1, batch_sharded(mesh))
    v2 = jax.lax.with_sharding_constraint(v2, batch_sharded(mesh))
    batch = v1.shape[0]
    # Shuffle BN: one permutation of the global batch per step, the same on every device and host
    # (a stream of its own, so that the augmentations' draws stay what they were).
    permutation = jax.random.permutation(jax.random.fold_in(key, 1), batch) if shuffle else jnp.arange(batch)
    return sharded_step(state, v1, v2, labels, permutation)

  return jax.jit(
    train_step,
    in_shardings=(replicated(mesh), batch_sharded(mesh), batch_sharded(mesh)),
    out_shardings=(replicated(mesh), replicated(mesh)),
    donate_argnums=(0,),
  )


# --- Research step: one step on the caller's views, in their dtype (docs/research_step.md) ---


class ResearchResult(NamedTuple):
  """What research_step returns; every float in the views' dtype."""

  loss: jnp.ndarray  # the total the gradients are of (SimDis-On: student + teacher term)
  per_head: Dict[str, Any]  # {head: its loss}, e.g. {"sema_dv": ..., "tema_dv": ...}; {} for supervised
  grads: Any  # {online network: gradient tree}, averaged over the batch as the optimizer sees it
  state: TrainState  # the state after the step (EMA, BN statistics, optimizer, step + 1)
  metrics: Dict[str, Any]  # every metric of the train step (loss_student, loss_teacher, lr, tau, ...)
  logits: Any = None  # MoCo-v2 / SEED: the loss's logits [B, 1 + K] (positive first), already / T
  queue: Any = None  # MoCo-v2 / SEED: the queue [K, dim] after the step's enqueue (state.method_state's)
  ptr: Any = None  # and its pointer
  # With outputs=True: {network: (output dict of each view it saw)}: "feature" (pooled), "projection",
  # "predictions" {head: ...} of every forward the method ran, in the order of its views (docs/research_step.md).
  outputs: Any = None


def cast_floats(tree, dtype):
  """The tree with every floating-point leaf cast to `dtype` (integer leaves: steps, keys, counts, kept)."""
  return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def make_research_step(
  config,
  total_steps: Optional[int] = None,
  warmup_steps: Optional[int] = None,
  dtype: Any = jnp.float32,
  outputs: bool = False,
) -> Callable[..., ResearchResult]:
  """The jitted research step (state, v1, v2, labels) -> ResearchResult, computing in `dtype` on one device.

  outputs: also return the forwards' outputs (ResearchResult.outputs).
  """
  total_steps = config.train.steps if total_steps is None else total_steps
  if total_steps <= 0:
    raise ValueError(
      f"research step: total_steps={total_steps} (the EMA and LR schedules need it); pass "
      "total_steps=K or set config.train.steps=K."
    )
  if warmup_steps is None:
    if config.optim.warmup_epochs != 0:
      raise ValueError(
        f"research step: config.optim.warmup_epochs={config.optim.warmup_epochs} needs the "
        "dataset's size to become steps; pass warmup_steps=N."
      )
    warmup_steps = 0
  networks = build_networks(config, dtype=dtype)
  schedule = optim.make_schedule(config, total_steps, warmup_steps, dtype=dtype)
  tx = methods.make_optimizer(config, schedule)
  step = functools.partial(
    update_on_views, config=config, networks=networks, tx=tx, schedule=schedule, total_steps=total_steps
  )
  shuffle = uses_shuffle(config)

  # The train step's own per-device code on a one-device mesh: its collectives become identities.
  def one_device(s, a, b, y, perm):
    result = step(s, a, b, y, perm if shuffle else None)
    return result if outputs else result[:4]

  sharded = jax.jit(
    jax.shard_map(
      one_device,
      mesh=make_mesh(jax.devices()[:1]),
      in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS), P(DATA_AXIS), P()),
      out_specs=(P(),) * (5 if outputs else 4),
      check_vma=False,
    )
  )

  def research(state: TrainState, v1, v2, labels, permutation=None) -> ResearchResult:
    perm = jnp.arange(v1.shape[0]) if permutation is None else jnp.asarray(permutation, jnp.int32)
    new_state, metrics, grads, logits, *forward = sharded(
      cast_floats(state, dtype), v1.astype(dtype), v2.astype(dtype), labels, perm
    )
    per_head = {k[len("loss_head/") :]: v for k, v in metrics.items() if k.startswith("loss_head/")}
    queue = new_state.method_state if isinstance(new_state.method_state, dict) else {}
    return ResearchResult(
      metrics["loss"],
      per_head,
      grads,
      new_state,
      metrics,
      logits,
      queue.get("queue"),
      queue.get("ptr"),
      forward[0] if forward else None,
    )

  return research


def research_step(
  config,
  state: TrainState,
  v1,
  v2,
  labels=None,
  *,
  total_steps: Optional[int] = None,
  warmup_steps: Optional[int] = None,
  permutation=None,
  outputs: bool = False,
) -> ResearchResult:
  """One train step of config.method on already augmented float views [B, H, W, C], in the views' dtype.

  MoCo-v2: v1 is the query crop, v2 the key crop; `permutation` (int [B]) is the key encoder's
  shuffle (default: the identity; on one device it changes nothing but the summation order).
  SEED: v1 is the one view student and teacher see; v2 is not used.

  With jax_enable_x64 on and float64 views, every computation is float64: the state's floats are cast
  to the views' dtype and the networks compute in it. Compiles on each call: for a loop, keep
  make_research_step(...)'s function. outputs=True also returns the forwards' outputs (pooled features,
  projections, predictions: ResearchResult.outputs), to compare them one by one.
  """
  dtype = jnp.result_type(v1)
  if not jnp.issubdtype(dtype, jnp.floating) or jnp.result_type(v2) != dtype or v1.shape != v2.shape:
    raise ValueError(
      f"research step: v1 and v2 must be float views of one shape and dtype (already augmented "
      f"and normalised); got {v1.shape} {dtype} and {v2.shape} {jnp.result_type(v2)}."
    )
  if v1.shape[0] != config.train.batch_size:
    raise ValueError(
      f"research step: the views hold {v1.shape[0]} examples but config.train.batch_size="
      f"{config.train.batch_size} (the LR scales with it); set config.train.batch_size="
      f"{v1.shape[0]}."
    )
  if labels is None:
    if methods.about(config.method).needs_labels or config.probe.enabled:
      raise ValueError(
        f"research step: method={config.method!r} / probe.enabled={config.probe.enabled} "
        "needs labels; pass labels=int32 [B] (negative = unlabelled)."
      )
    labels = jnp.full((v1.shape[0],), -1, jnp.int32)
  step = make_research_step(config, total_steps, warmup_steps, dtype, outputs)
  return step(state, v1, v2, jnp.asarray(labels, jnp.int32), permutation)
