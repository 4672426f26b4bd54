"""The linear-evaluation classifier: the module, its train state, its SGD step, and scoring.

The classifier trains on pooled encoder features of a frozen network (cached
ones in fast mode, fresh ones of augmented images in full mode); the encoder's
variables are an input of every jitted function, never a trained parameter.
The BN head's batch statistics span the global batch (jit over the mesh), and
flax keeps the biased running variance where PyTorch keeps the unbiased one
(docs/spec.md "Small numerical facts"; negligible at batch 256).
"""

import functools
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from simdis_jax import optim, parallel, runs
from simdis_jax.data import augment
from simdis_jax.data import input as data_input
from simdis_jax.evaluation import linear_config


class LinearClassifier(nn.Module):
  """Linear layer, optionally followed by an affine BatchNorm1d (the authors' head)."""

  num_classes: int
  batch_norm: bool

  @nn.compact
  def __call__(self, x, train: bool = False):
    # N(0, 0.01) weights and zero bias, the usual linear-probe initialisation.
    x = nn.Dense(self.num_classes, kernel_init=nn.initializers.normal(0.01), name="linear")(x)
    if self.batch_norm:
      # PyTorch BatchNorm1d defaults: momentum 0.1 (flax's 0.9), eps 1e-5.
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name="bn")(x)
    return x


@flax.struct.dataclass
class ClassifierState:
  """The whole linear-eval train state (the frozen encoder is not part of it)."""

  step: jnp.ndarray  # int32: completed classifier steps
  rng: jnp.ndarray  # raw uint32[2] key; full mode augments step k with fold_in(rng, k)
  params: Any
  batch_stats: Any  # {} without the BN head
  opt_state: Any


def make_classifier(config, num_classes: int) -> LinearClassifier:
  """The classifier of config.classifier for `num_classes` classes."""
  return LinearClassifier(num_classes=num_classes, batch_norm=bool(config.classifier.batch_norm))


def make_optimizer(config, total_steps: int) -> Tuple[optax.GradientTransformation, Callable]:
  """SGD (momentum / Nesterov, weight decay on all params), LR base x batch/256 cosine to 0, no warm-up."""
  schedule = optim.warmup_cosine_schedule(config.optim.base_lr, config.train.batch_size, total_steps, 0, 0.0)
  sgd = ml_collections.ConfigDict(
    dict(
      name="sgd",
      momentum=config.optim.momentum,
      nesterov=config.optim.nesterov,
      weight_decay=config.optim.weight_decay,
      weight_decay_mask="all",
    )
  )
  return optim.make_optimizer(sgd, schedule), schedule


def init_state(classifier: LinearClassifier, tx, feature_dim: int, seed: int) -> ClassifierState:
  """A fresh classifier state from `seed` (pure; jit it with out_shardings to create it replicated)."""
  rng = jax.random.PRNGKey(seed)
  variables = classifier.init(jax.random.fold_in(rng, 1), jnp.zeros((2, feature_dim), jnp.float32))
  params = variables["params"]
  return ClassifierState(jnp.zeros([], jnp.int32), rng, params, variables.get("batch_stats", {}), tx.init(params))


def sgd_step(classifier, tx, schedule, state: ClassifierState, features, labels):
  """One classifier update on a batch of (stop-gradient) features; returns (state, metrics)."""

  def loss_fn(params):
    logits, updates = classifier.apply(
      {"params": params, "batch_stats": state.batch_stats}, features, train=True, mutable=["batch_stats"]
    )
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, (logits, updates.get("batch_stats", {}))

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  metrics = {
    "loss": loss,
    "train_batch_top1": 100.0 * jnp.mean(jnp.argmax(logits, -1) == labels),
    "lr": schedule(state.step),
  }
  new = state.replace(
    step=state.step + 1, params=optax.apply_updates(state.params, updates), batch_stats=batch_stats, opt_state=opt_state
  )
  return new, metrics


def replicate(value: np.ndarray, mesh) -> jax.Array:
  """A host array (identical on every process) as one global array copied on every device."""
  value = np.asarray(value)
  return jax.make_array_from_callback(value.shape, parallel.replicated(mesh), lambda idx: value[idx])


def make_feature_chunk_fn(classifier, tx, schedule, mesh) -> Callable:
  """Jitted fn(state, features, labels, idx[n, B]) running n classifier steps on cached features."""
  rep = parallel.replicated(mesh)

  def chunk(state, features, labels, idx):
    def body(state, batch_idx):
      return sgd_step(classifier, tx, schedule, state, features[batch_idx], labels[batch_idx])

    state, metrics = jax.lax.scan(body, state, idx)
    # The chunk's mean loss/accuracy, and the LR of its last step.
    return state, {k: (v[-1] if k == "lr" else jnp.mean(v)) for k, v in metrics.items()}

  return jax.jit(chunk, in_shardings=(rep, rep, rep, rep), out_shardings=(rep, rep), donate_argnums=(0,))


def chunk_ends(start: int, total: int, every: Sequence[int], stop_after: Optional[int] = None) -> List[int]:
  """The steps after `start` where a run of cached-feature steps must pause: multiples of each `every`,
  `stop_after` and `total` (one jitted scan covers each stretch in between)."""
  ends = {total}
  if stop_after is not None and start < stop_after < total:
    ends.add(stop_after)
  for e in every:
    ends.update(range((start // e + 1) * e, total, e))
  return sorted(x for x in ends if x > start and (stop_after is None or x <= stop_after))


def make_full_step(network, classifier, tx, schedule, aug_config, image_size: int, mesh) -> Callable:
  """Jitted fn(state, encoder_vars, images, labels): augment, frozen features, one classifier update."""
  rep, batch = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  train_aug = linear_config.train_augment_config(aug_config)

  def step(state, encoder_vars, images, labels):
    aug = train_aug
    if images.ndim == 5:  # host-cropped [B, 1, S, S, C] (streaming input): the device only flips
      images, aug = images[:, 0], augment.without_crop(train_aug)
    x = augment.augment_view(jax.random.fold_in(state.rng, state.step), images, aug, 0, image_size)
    features = network.apply(encoder_vars, x, train=False, features_only=True)["feature"]
    # The encoder is an input, not a trained parameter; stop_gradient makes that explicit and saves the backward.
    return sgd_step(classifier, tx, schedule, state, jax.lax.stop_gradient(features), labels)

  return jax.jit(step, in_shardings=(rep, rep, batch, batch), out_shardings=(rep, rep), donate_argnums=(0,))


def train_on_features(
  config, features: np.ndarray, labels: np.ndarray, num_classes: int, mesh=None
) -> Tuple[LinearClassifier, ClassifierState]:
  """Trains a fresh classifier on cached features for config's whole schedule; returns (module, state)."""
  mesh = parallel.make_mesh() if mesh is None else mesh
  parallel.check_batch_size(config.train.batch_size, mesh)
  total = runs.schedule_lengths(config.train, features.shape[0])["total_steps"]
  classifier = make_classifier(config, num_classes)
  tx, schedule = make_optimizer(config, total)
  state = jax.jit(
    functools.partial(init_state, classifier, tx, features.shape[1], config.seed),
    out_shardings=parallel.replicated(mesh),
  )()
  chunk_fn = make_feature_chunk_fn(classifier, tx, schedule, mesh)
  feats, labs = replicate(features.astype(np.float32), mesh), replicate(labels.astype(np.int32), mesh)
  order = data_input.EpochOrder(config.seed, features.shape[0], config.train.batch_size)
  # One scan over the whole schedule: nothing to log or save between steps here.
  state, _ = chunk_fn(state, feats, labs, replicate(order.batches(0, total), mesh))
  return classifier, state


def predict_scores(classifier, state: ClassifierState, features: np.ndarray, batch_size: int = 4096) -> np.ndarray:
  """Eval-mode (running BN statistics) logits [N, C] of host features, on the host's default device."""
  # Host copies keep this a per-process computation (replicated arrays would pull in every host's devices).
  variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
  apply = jax.jit(lambda v, x: classifier.apply(v, x, train=False))
  return np.concatenate(
    [np.asarray(apply(variables, features[i : i + batch_size])) for i in range(0, features.shape[0], batch_size)]
  )


def topk_accuracy(scores: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
  """Top-1 and top-5 accuracy (%) of class scores [N, C] (top-5 is top-C when C < 5)."""
  k = min(5, scores.shape[1])
  top = np.argsort(-scores, axis=1)[:, :k]
  hits = top == labels[:, None]
  return {"top1": float(100.0 * hits[:, 0].mean()), "top5": float(100.0 * hits.any(axis=1).mean())}


def evaluate_features(classifier, state: ClassifierState, features: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
  """Top-1/top-5 (%) of the trained classifier on cached features."""
  return topk_accuracy(predict_scores(classifier, state, features), labels)
