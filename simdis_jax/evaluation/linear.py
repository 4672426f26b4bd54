"""Linear evaluation of a pretrained encoder, as its own run (SPEC.md "Linear evaluation").

A linear classifier is trained on the pooled encoder output (before the
projector) of a FROZEN pretrained network in eval mode (running BN
statistics), then scored top-1 / top-5 on the held-out split.

Protocols (`config.protocol`, set with `apply_protocol`):
- ``authors``: Linear -> BatchNorm1d (affine; batch statistics while training,
  running statistics at test), SGD momentum 0.9, no weight decay,
  LR 0.001 x batch/256, 80 epochs, cosine to 0.
- ``deepmind``: plain Linear, SGD Nesterov momentum 0.9, LR 0.2 x batch/256,
  80 epochs, cosine to 0.
- ``custom``: whatever the optim/classifier keys say. A named protocol must
  match its preset (`validate` checks), so a results file that says "authors"
  really used the authors' settings.

Modes (`config.mode`):
- ``fast`` (cached features, no augmentation): features of the whole train and
  held-out splits are extracted once with the eval preprocessing, and the
  classifier trains on them; an epoch is a few milliseconds of matmuls.
- ``full``: every step augments its batch on the device (random resized crop +
  horizontal flip only), runs the frozen encoder and updates the classifier;
  the held-out split gets resize + centre crop (`data.augment.eval_crop_fraction`,
  0.875 = 256 -> 224 for ImageNet).

The encoder's variables are an input of every jitted function and never part
of the optimized parameters, so they stay bit-identical; the run's checkpoints
(orbax, under <workdir>/checkpoints) hold only the classifier state. A run
resumes from its workdir; a finished one only re-evaluates. Batches follow
`data.input.global_batch_indices`: a function of (seed, step), reshuffled per
(seed, epoch).

Reported: top-1/top-5 (%) on the held-out split, and `train_top1`, the final
classifier on the training examples with the eval preprocessing (cached
features in fast mode, one extra encoder pass in full mode). The BN head's
batch statistics span the global batch (jit over the mesh), and flax keeps
the biased running variance where PyTorch keeps the unbiased one (SPEC.md
"Small numerical facts"; negligible at batch 256).

`data.name=''` (the base default) takes the whole data section (name, data_dir,
image_size, allow_download, augment) from the pretraining run's config.json;
a non-empty `data.name` uses this config's data section as written. Either way
`data.train_examples` / `data.eval_examples` (0 = all) pick fixed random
subsets, to keep CPU runs and tests small.
"""

import functools
import json
import logging
import math
import time
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from etils import epath

from simdis_jax import checkpoint, configuration, optim, parallel, runs
from simdis_jax import workdir as workdir_files
from simdis_jax.data import augment
from simdis_jax.data import input as data_input
from simdis_jax.evaluation import knn

TASK = "linear_eval"
RESULTS_FILE = "linear_eval.json"
INFO_FILE = "linear_info.json"  # what a workdir's checkpoints were trained on, checked on resume
METRICS_FILE = "metrics.jsonl"
PRETRAINED_RUN_INFO = "run_info.json"  # written by simdis_jax.train

PROTOCOLS = {
    "authors": dict(batch_norm=True, base_lr=0.001, momentum=0.9, nesterov=False, weight_decay=0.0),
    "deepmind": dict(batch_norm=False, base_lr=0.2, momentum=0.9, nesterov=True, weight_decay=0.0),
}
PROTOCOL_EPOCHS = 80.0
MODES = ("fast", "full")
MODE_NAMES = {
    "fast": "fast (cached features, no augmentation)",
    "full": "full (frozen encoder, random-resized-crop + flip each step)",
}
NETWORKS = ("student", "teacher")
WEIGHTS = ("online", "ema")


# ----------------------------------------------------------------- config


def apply_protocol(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
  """Sets the classifier/optimizer keys and 80 epochs of protocol `name` ('authors' | 'deepmind')."""
  if name not in PROTOCOLS:
    raise ValueError(f"Unknown linear-eval protocol {name!r}; choose one of {sorted(PROTOCOLS)}.")
  preset = PROTOCOLS[name]
  config.protocol = name
  config.classifier.batch_norm = preset["batch_norm"]
  for key in ("base_lr", "momentum", "nesterov", "weight_decay"):
    config.optim[key] = preset[key]
  config.train.epochs = PROTOCOL_EPOCHS
  return config


def base_config() -> ml_collections.ConfigDict:
  """All linear-eval keys with defaults: authors' protocol, fast mode, data from the pretraining run."""
  c = ml_collections.ConfigDict()
  c.task = TASK
  c.seed = 0
  c.protocol = "authors"          # authors | deepmind | custom
  c.mode = "fast"                 # fast (cached features) | full (augmented, encoder every step)

  c.pretrained = ml_collections.ConfigDict()
  c.pretrained.workdir = ""       # a simdis_jax pretraining --workdir
  c.pretrained.network = "student"  # student | teacher
  c.pretrained.weights = "online"   # online (the authors evaluate the online student) | ema
  c.pretrained.step = -1          # -1 = latest checkpoint
  c.pretrained.allow_unfinished = False

  c.classifier = ml_collections.ConfigDict()
  c.classifier.batch_norm = True  # Linear -> BatchNorm1d (authors) | plain Linear (DeepMind)

  c.optim = ml_collections.ConfigDict()
  c.optim.base_lr = 0.001         # x batch/256, cosine to 0, no warm-up
  c.optim.momentum = 0.9
  c.optim.nesterov = False
  c.optim.weight_decay = 0.0

  c.train = ml_collections.ConfigDict()
  c.train.epochs = PROTOCOL_EPOCHS
  c.train.steps = -1              # > 0 overrides epochs
  c.train.batch_size = 256        # global, over all devices and hosts
  c.train.log_every_steps = 100
  c.train.checkpoint_every_steps = 1000
  c.train.keep_checkpoints = 2

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 512         # feature extraction / held-out batches

  # name "" = the pretraining run's whole data section; full mode uses only crop/flip, mean/std, eval_crop_fraction.
  c.data = configuration.data_config(name="")
  c.data.train_examples = 0       # 0 = the whole train split
  c.data.eval_examples = 0        # 0 = the whole held-out split
  return apply_protocol(c, "authors")


def _positive_int(config, key: str, allow_zero: bool = False) -> None:
  value = config
  for part in key.split("."):
    value = value[part]
  low = 0 if allow_zero else 1
  if isinstance(value, bool) or int(value) != value or value < low:
    kind = "a non-negative" if allow_zero else "a positive"
    raise ValueError(f"config.{key}={value!r} must be {kind} integer.")


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Raises ValueError naming the key and the fix for any bad linear-eval value; returns the config."""
  if config.get("task") != TASK:
    raise ValueError(f"config.task={config.get('task')!r}: a linear-eval config has task={TASK!r} "
                     "(start from simdis_jax.evaluation.linear.base_config()).")
  # Same unknown-key / type rules as the pretraining schema, against this schema.
  configuration.check_keys(config, base_config())  # pylint: disable=protected-access
  checks = {"protocol": ("custom",) + tuple(PROTOCOLS), "mode": MODES, "pretrained.network": NETWORKS,
            "pretrained.weights": WEIGHTS}
  for key, choices in checks.items():
    section, _, name = key.rpartition(".")
    value = config[section][name] if section else config[name]
    if value not in choices:
      raise ValueError(f"config.{key}={value!r} is not valid; choose one of {list(choices)}.")
  for key in ("train.batch_size", "train.log_every_steps", "train.checkpoint_every_steps",
              "train.keep_checkpoints", "eval.batch_size", "data.image_size"):
    _positive_int(config, key)
  for key in ("data.train_examples", "data.eval_examples"):
    _positive_int(config, key, allow_zero=True)
  if isinstance(config.pretrained.step, bool) or int(config.pretrained.step) != config.pretrained.step or (
      config.pretrained.step < -1):
    raise ValueError(f"config.pretrained.step={config.pretrained.step!r} must be -1 (latest) or a step >= 0.")
  if config.train.epochs <= 0 and config.train.steps <= 0:
    raise ValueError("Set config.train.epochs > 0 or config.train.steps > 0.")
  if config.optim.base_lr <= 0 or config.optim.weight_decay < 0 or not 0 <= config.optim.momentum < 1:
    raise ValueError("config.optim.base_lr must be > 0, weight_decay >= 0 and momentum in [0, 1).")
  if config.protocol in PROTOCOLS:
    preset = PROTOCOLS[config.protocol]
    got = dict(batch_norm=config.classifier.batch_norm, **{k: config.optim[k] for k in preset if k != "batch_norm"})
    diffs = [f"{'classifier' if k == 'batch_norm' else 'optim'}.{k}={got[k]!r} (the protocol uses {v!r})"
             for k, v in preset.items() if got[k] != v]
    if diffs:
      raise ValueError(
          f"config.protocol={config.protocol!r} but " + ", ".join(diffs) + ". Use "
          f"linear.apply_protocol(config, {config.protocol!r}) (or the config file's argument) to switch "
          "protocols, or set --config.protocol=custom to run your own settings.")
  return config


# ------------------------------------------------------------- classifier


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
  step: jnp.ndarray   # int32: completed classifier steps
  rng: jnp.ndarray    # raw uint32[2] key; full mode augments step k with fold_in(rng, k)
  params: Any
  batch_stats: Any    # {} without the BN head
  opt_state: Any


def make_classifier(config, num_classes: int) -> LinearClassifier:
  """The classifier of config.classifier for `num_classes` classes."""
  return LinearClassifier(num_classes=num_classes, batch_norm=bool(config.classifier.batch_norm))


def schedule_lengths(config, num_train: int) -> Dict[str, int]:
  """Steps per epoch (drop remainder) and total steps of the classifier's schedule."""
  batch = config.train.batch_size
  steps_per_epoch = num_train // batch
  if steps_per_epoch == 0:
    raise ValueError(f"config.train.batch_size={batch} exceeds the {num_train} training examples; lower it "
                     "or raise config.data.train_examples.")
  total = config.train.steps if config.train.steps > 0 else optim.steps_from_epochs(
      config.train.epochs, num_train, batch)
  if total <= 0:
    raise ValueError(f"config.train.epochs={config.train.epochs} gives no whole step at batch {batch}.")
  return {"steps_per_epoch": int(steps_per_epoch), "total_steps": int(total)}


def make_optimizer(config, total_steps: int) -> Tuple[optax.GradientTransformation, Callable]:
  """SGD (momentum / Nesterov, weight decay on all params), LR base x batch/256 cosine to 0, no warm-up."""
  schedule = optim.warmup_cosine_schedule(config.optim.base_lr, config.train.batch_size, total_steps, 0, 0.0)
  sgd = ml_collections.ConfigDict(dict(name="sgd", momentum=config.optim.momentum, nesterov=config.optim.nesterov,
                                       weight_decay=config.optim.weight_decay, weight_decay_mask="all"))
  return optim.make_optimizer(sgd, schedule), schedule


def init_state(classifier: LinearClassifier, tx, feature_dim: int, seed: int) -> ClassifierState:
  """A fresh classifier state from `seed` (pure; jit it with out_shardings to create it replicated)."""
  rng = jax.random.PRNGKey(seed)
  variables = classifier.init(jax.random.fold_in(rng, 1), jnp.zeros((2, feature_dim), jnp.float32))
  params = variables["params"]
  return ClassifierState(jnp.zeros([], jnp.int32), rng, params, variables.get("batch_stats", {}),
                         tx.init(params))


def _sgd_step(classifier, tx, schedule, state: ClassifierState, features, labels):
  """One classifier update on a batch of (stop-gradient) features; returns (state, metrics)."""

  def loss_fn(params):
    logits, updates = classifier.apply({"params": params, "batch_stats": state.batch_stats}, features,
                                       train=True, mutable=["batch_stats"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, (logits, updates.get("batch_stats", {}))

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  metrics = {"loss": loss, "train_batch_top1": 100.0 * jnp.mean(jnp.argmax(logits, -1) == labels),
             "lr": schedule(state.step)}
  new = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                      batch_stats=batch_stats, opt_state=opt_state)
  return new, metrics


def _replicate(value: np.ndarray, mesh) -> jax.Array:
  """A host array (identical on every process) as one global array copied on every device."""
  value = np.asarray(value)
  return jax.make_array_from_callback(value.shape, parallel.replicated(mesh), lambda idx: value[idx])


class _EpochOrder:
  """Batch indices of steps [start, stop): global_batch_indices's order, one permutation per epoch."""

  def __init__(self, seed: int, num_examples: int, batch_size: int):
    self.seed, self.n, self.batch = seed, num_examples, batch_size
    self.per_epoch = num_examples // batch_size
    self._cache = {}

  def indices(self, start: int, stop: int) -> np.ndarray:
    """int32 [stop - start, batch] example indices."""
    rows = []
    for step in range(start, stop):
      epoch, slot = divmod(step, self.per_epoch)
      if epoch not in self._cache:
        # Only the current epoch's permutation is kept.
        self._cache = {epoch: data_input.epoch_permutation(self.seed, epoch, self.n)}
      rows.append(self._cache[epoch][slot * self.batch:(slot + 1) * self.batch])
    return np.stack(rows).astype(np.int32)


def make_feature_chunk_fn(classifier, tx, schedule, mesh) -> Callable:
  """Jitted fn(state, features, labels, idx[n, B]) running n classifier steps on cached features."""
  rep = parallel.replicated(mesh)

  def chunk(state, features, labels, idx):
    def body(state, batch_idx):
      return _sgd_step(classifier, tx, schedule, state, features[batch_idx], labels[batch_idx])
    state, metrics = jax.lax.scan(body, state, idx)
    # The chunk's mean loss/accuracy, and the LR of its last step.
    return state, {k: (v[-1] if k == "lr" else jnp.mean(v)) for k, v in metrics.items()}

  return jax.jit(chunk, in_shardings=(rep, rep, rep, rep), out_shardings=(rep, rep), donate_argnums=(0,))


def _boundaries(start: int, total: int, every: Tuple[int, ...], stop_after: Optional[int]):
  """Chunk ends after `start`: every multiple of each `every`, `stop_after` and `total`."""
  ends = {total}
  if stop_after is not None and start < stop_after < total:
    ends.add(stop_after)
  for e in every:
    ends.update(range((start // e + 1) * e, total, e))
  return sorted(x for x in ends if x > start and (stop_after is None or x <= stop_after))


def train_on_features(config, features: np.ndarray, labels: np.ndarray, num_classes: int, mesh=None,
                      state: Optional[ClassifierState] = None, on_chunk: Optional[Callable] = None,
                      stop_after_steps: Optional[int] = None) -> Tuple[LinearClassifier, ClassifierState]:
  """Trains the linear classifier on cached features for the configured schedule; returns (module, state).

  `on_chunk(state, done, metrics)` is called at every log / checkpoint
  boundary; `state` (a restored ClassifierState) resumes at its step.
  """
  mesh = parallel.make_mesh() if mesh is None else mesh
  parallel.check_batch_size(config.train.batch_size, mesh)
  lengths = schedule_lengths(config, features.shape[0])
  total = lengths["total_steps"]
  classifier = make_classifier(config, num_classes)
  tx, schedule = make_optimizer(config, total)
  if state is None:
    state = jax.jit(functools.partial(init_state, classifier, tx, features.shape[1], config.seed),
                    out_shardings=parallel.replicated(mesh))()
  chunk_fn = make_feature_chunk_fn(classifier, tx, schedule, mesh)
  feats, labs = _replicate(features.astype(np.float32), mesh), _replicate(labels.astype(np.int32), mesh)
  order = _EpochOrder(config.seed, features.shape[0], config.train.batch_size)
  start = int(state.step)
  every = (config.train.log_every_steps, config.train.checkpoint_every_steps)
  for end in _boundaries(start, total, every, stop_after_steps):
    state, metrics = chunk_fn(state, feats, labs, _replicate(order.indices(start, end), mesh))
    if on_chunk is not None:
      on_chunk(state, end, metrics)
    start = end
  return classifier, state


def predict_scores(classifier, state: ClassifierState, features: np.ndarray, batch_size: int = 4096) -> np.ndarray:
  """Eval-mode (running BN statistics) logits [N, C] of host features, on the host's default device."""
  # Host copies keep this a per-process computation (replicated arrays would pull in every host's devices).
  variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
  apply = jax.jit(lambda v, x: classifier.apply(v, x, train=False))
  return np.concatenate([np.asarray(apply(variables, features[i:i + batch_size]))
                         for i in range(0, features.shape[0], batch_size)])


def topk_accuracy(scores: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
  """Top-1 and top-5 accuracy (%) of class scores [N, C] (top-5 is top-C when C < 5)."""
  k = min(5, scores.shape[1])
  top = np.argsort(-scores, axis=1)[:, :k]
  hits = top == labels[:, None]
  return {"top1": float(100.0 * hits[:, 0].mean()), "top5": float(100.0 * hits.any(axis=1).mean())}


def evaluate_features(classifier, state: ClassifierState, features: np.ndarray,
                      labels: np.ndarray) -> Dict[str, float]:
  """Top-1/top-5 (%) of the trained classifier on cached features."""
  return topk_accuracy(predict_scores(classifier, state, features), labels)


# ----------------------------------------------------------- frozen encoder


def _channels(data_name: str) -> int:
  return 1 if data_name == "fashion_mnist" else 3


def check_pretrained(config) -> Tuple[ml_collections.ConfigDict, int]:
  """(pretraining config, checkpoint step to use), or an error naming the fix; runs before anything compiles."""
  p = config.pretrained
  fix = ("pretrain first (python -m simdis_jax.main --config configs/<experiment>.py --workdir <dir>) and pass "
         "--config.pretrained.workdir=<dir>")
  if not p.workdir:
    raise ValueError(f"config.pretrained.workdir is not set: {fix}.")
  workdir = epath.Path(p.workdir)
  if not workdir.exists():
    raise FileNotFoundError(f"config.pretrained.workdir={p.workdir!r} does not exist: {fix}.")
  try:
    raw = workdir_files.read_config(p.workdir)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"config.pretrained.workdir={p.workdir!r} is not a pretraining workdir ({e}): "
                            f"{fix}.") from e
  if raw.get("task") == TASK:
    raise ValueError(f"config.pretrained.workdir={p.workdir!r} is a linear-eval workdir; point it at the "
                     "pretraining run's --workdir.")
  run_config = ml_collections.ConfigDict(raw)
  if p.network == "teacher" and not configuration.uses_teacher(run_config):
    raise ValueError(f"The pretraining run {p.workdir!r} is method={run_config.method!r} and has no teacher; "
                     "use --config.pretrained.network=student.")
  info_path = workdir / PRETRAINED_RUN_INFO
  mgr = checkpoint.manager(workdir_files.absolute(p.workdir))
  steps = sorted(mgr.all_steps())
  mgr.close()
  if not steps or not info_path.exists():
    raise FileNotFoundError(f"The pretraining run {p.workdir!r} has no checkpoint yet: let it save one "
                            "(resume it with its own command) before linear evaluation.")
  total = int(json.loads(info_path.read_text())["total_steps"])
  step = steps[-1] if p.step == -1 else int(p.step)
  if step not in steps:
    raise ValueError(f"config.pretrained.step={p.step} is not among the checkpoints of {p.workdir!r} "
                     f"({steps}); use one of them or -1 for the latest.")
  if step < total and not p.allow_unfinished:
    raise ValueError(f"The pretraining run {p.workdir!r} is unfinished (checkpoint step {step} of {total}). "
                     "Resume it with its own command until it finishes, or set "
                     "--config.pretrained.allow_unfinished=True to evaluate this checkpoint anyway.")
  return run_config, step


def resolve_data_config(config, run_config) -> ml_collections.ConfigDict:
  """The data section to evaluate on: the pretraining run's when data.name is '', else this config's."""
  if config.data.name:
    data = ml_collections.ConfigDict(config.data.to_dict())
  else:
    data = ml_collections.ConfigDict(run_config.data.to_dict())
    data.train_examples = config.data.train_examples
    data.eval_examples = config.data.eval_examples
  pre = run_config.data.name
  if _channels(data.name) != _channels(pre):
    raise ValueError(f"config.data.name={data.name!r} has {_channels(data.name)} channel(s) but the pretrained "
                     f"encoder saw {pre!r} ({_channels(pre)} channel(s)); evaluate on matching images.")
  return data


def frozen_encoder_variables(config, state) -> Dict[str, Any]:
  """The pretrained encoder's params and BN statistics selected by config.pretrained (network, weights)."""
  net = state.student if config.pretrained.network == "student" else state.teacher
  if config.pretrained.weights == "online":
    params, stats = net.params, net.batch_stats
  else:
    params, stats = net.ema_params, net.ema_batch_stats
  # Only the encoder subtree: that is all features_only=True touches, and all this run may read.
  return {"params": {"encoder": params["encoder"]}, "batch_stats": {"encoder": stats["encoder"]}}


def make_feature_fn(network, aug_config, image_size: int, mesh) -> Callable:
  """Jitted fn(variables, uint8 images) -> eval-mode pooled encoder features, batch-sharded."""
  rep, batch = parallel.replicated(mesh), parallel.batch_sharded(mesh)

  def features(variables, images):
    x = augment.eval_view(images, aug_config, out_size=image_size)
    return network.apply(variables, x, train=False, features_only=True)["feature"]

  return jax.jit(features, in_shardings=(rep, batch), out_shardings=batch)


def train_augment_config(aug_config) -> ml_collections.ConfigDict:
  """A copy of the augmentation config doing only random resized crop + flip (linear-eval training)."""
  settings = aug_config.to_dict()
  # A bare 0.0 applies to both views (augment._per_view); rebuilding avoids the per-view tuple's type lock.
  settings.update(jitter_prob=0.0, grey_prob=0.0, blur_prob=0.0, solarize_prob=0.0)
  return ml_collections.ConfigDict(settings)


def make_full_step(network, classifier, tx, schedule, aug_config, image_size: int, mesh) -> Callable:
  """Jitted fn(state, encoder_vars, images, labels): augment, frozen features, one classifier update."""
  rep, batch = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  train_aug = train_augment_config(aug_config)

  def step(state, encoder_vars, images, labels):
    aug = train_aug
    if images.ndim == 5:  # host-cropped [B, 1, S, S, C] (streaming input): the device only flips
      images, aug = images[:, 0], augment.without_crop(train_aug)
    x = augment.augment_view(jax.random.fold_in(state.rng, state.step), images, aug, 0, image_size)
    features = network.apply(encoder_vars, x, train=False, features_only=True)["feature"]
    # The encoder is an input, not a trained parameter; stop_gradient makes that explicit and saves the backward.
    return _sgd_step(classifier, tx, schedule, state, jax.lax.stop_gradient(features), labels)

  return jax.jit(step, in_shardings=(rep, rep, batch, batch), out_shardings=(rep, rep), donate_argnums=(0,))


# ------------------------------------------------------------------- run


def _write_jsonl(workdir: str, step: int, values: Dict[str, float]) -> None:
  if jax.process_index() == 0:
    with (epath.Path(workdir) / METRICS_FILE).open("a") as f:
      f.write(json.dumps({"step": int(step), **{k: float(v) for k, v in values.items()}}) + "\n")


def _check_resume_info(workdir: str, info: Dict[str, Any], has_checkpoint: bool) -> Dict[str, Any]:
  """The recorded run identity when resuming (it must match this config), else `info` to record."""
  path = epath.Path(workdir) / INFO_FILE
  if not has_checkpoint or not path.exists():
    return info
  old = json.loads(path.read_text())
  keys = ("pretrained_workdir", "network", "weights", "protocol", "mode", "dataset")
  diffs = [f"{k}: workdir has {old.get(k)!r}, config wants {info[k]!r}" for k in keys if old.get(k) != info[k]]
  if info["requested_step"] != -1 and info["pretrained_step"] != old["pretrained_step"]:
    diffs.append(f"pretrained step: workdir has {old['pretrained_step']}, config wants {info['pretrained_step']}")
  if diffs:
    raise ValueError(f"--workdir {workdir} holds a linear evaluation of something else (" + "; ".join(diffs)
                     + "). Use a fresh --workdir.")
  return old


def _finite(step: int, values: Dict[str, float], last_saved) -> None:
  if not math.isfinite(values["loss"]):
    raise FloatingPointError(f"Non-finite linear-eval loss at step {step}; the last good checkpoint (step "
                             f"{last_saved}) is kept. Lower config.optim.base_lr.")


def run(config: ml_collections.ConfigDict, workdir: str, stop_after_steps: Optional[int] = None) -> Dict[str, Any]:
  """Linear evaluation as config says, resuming from <workdir>; writes and returns the results."""
  t_start = time.time()
  config = validate(config)
  workdir = workdir_files.absolute(workdir)
  checkpoint.check_writable(workdir)
  is_main = jax.process_index() == 0
  mesh = parallel.make_mesh()
  parallel.check_batch_size(config.train.batch_size, mesh)
  if config.eval.batch_size % mesh.devices.size or config.eval.batch_size % jax.process_count():
    raise ValueError(f"config.eval.batch_size={config.eval.batch_size} must be divisible by the number of "
                     f"devices ({mesh.devices.size}) and processes ({jax.process_count()}).")

  # --- Input first when named here: an input that is not implemented yet (ImageNet) says so at once ---
  dataset = data_input.load_dataset(config.data) if config.data.name else None
  run_config, pre_step = check_pretrained(config)
  data_config = resolve_data_config(config, run_config)
  if dataset is None:
    dataset = data_input.load_dataset(data_config)
  num_train = _count(dataset, "train", data_config.train_examples)
  num_eval = _count(dataset, "eval", data_config.eval_examples)
  lengths = schedule_lengths(config, num_train)
  total = lengths["total_steps"]

  # --- Run identity: a resumed workdir keeps the pretrained step it started from ---
  mgr = checkpoint.manager(workdir, config.train.keep_checkpoints)
  info = {"pretrained_workdir": workdir_files.absolute(config.pretrained.workdir), "network": config.pretrained.network,
          "weights": config.pretrained.weights, "protocol": config.protocol, "mode": config.mode,
          "dataset": data_config.name, "requested_step": int(config.pretrained.step), "pretrained_step": pre_step}
  info = _check_resume_info(workdir, info, mgr.latest_step() is not None)
  pre_step = int(info["pretrained_step"])

  # --- Frozen encoder ---
  _, networks, pre_state, _ = runs.restore(config.pretrained.workdir, mesh, pre_step, run_config)
  encoder_vars = frozen_encoder_variables(config, pre_state)
  network = networks.student if config.pretrained.network == "student" else networks.teacher
  del pre_state  # optimizer state and the other networks are not needed
  feature_fn = functools.partial(make_feature_fn(network, dataset.device_augment_config(data_config.augment),
                                                 data_config.image_size, mesh), encoder_vars)
  eb = config.eval.batch_size

  def features_of(split):
    count = data_config.train_examples if split == "train" else data_config.eval_examples
    return knn.extract_features(feature_fn, dataset.eval_batches(split, count, eb, mesh, config.seed))

  t_feat = time.time()
  cached = None
  if config.mode == "fast":
    cached = {"train": features_of("train"), "eval": features_of("eval")}
    feature_dim = int(cached["train"][0].shape[1])
  else:
    feature_dim = int(jax.eval_shape(feature_fn, jax.ShapeDtypeStruct(
        (eb,) + dataset.image_shape, np.uint8, sharding=parallel.batch_sharded(mesh))).shape[1])
  feature_time = time.time() - t_feat

  # --- Classifier state: restored, or fresh and replicated ---
  classifier = make_classifier(config, dataset.num_classes)
  tx, schedule = make_optimizer(config, total)
  create = functools.partial(init_state, classifier, tx, feature_dim, config.seed)
  abstract = parallel.replicated_abstract(jax.eval_shape(create), mesh)
  state = checkpoint.restore_latest(mgr, abstract)
  if state is None:
    state = jax.jit(create, out_shardings=parallel.replicated(mesh))()
  start_step = int(state.step)
  workdir_files.write_config(workdir, config, is_main)
  if is_main:
    (epath.Path(workdir) / INFO_FILE).write_text(json.dumps(
        {**info, **lengths, "num_train": num_train, "feature_dim": feature_dim}, indent=2))
  logging.info("Linear eval (%s, %s) of %s/%s at step %d: %s from step %d of %d.", config.protocol,
               MODE_NAMES[config.mode], config.pretrained.network, config.pretrained.weights, pre_step,
               "resuming" if start_step else "starting", start_step, total)

  writer = workdir_files.metric_writer(workdir, is_main)
  last_saved = mgr.latest_step()
  t_train = time.time()
  last_log = (t_train, start_step)

  def on_progress(new_state, done, metrics, step_boundary=False):
    """Logs and saves at log / checkpoint boundaries; at any step boundary, stops for a preemption."""
    nonlocal last_saved, last_log
    if step_boundary:
      if preemption.reached(done):  # SIGTERM / maintenance notice: save here, exit 143 (main.py)
        if last_saved != done:
          checkpoint.save(mgr, done, new_state, force=True)
        raise checkpoint.Preempted(done, workdir)
      return
    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
    _finite(done, values, last_saved)
    if done % config.train.log_every_steps == 0 or done == total:
      now = time.time()
      values["epoch"] = done / lengths["steps_per_epoch"]
      # Rate since the previous log line (the first one includes compilation).
      values["examples_per_sec"] = (done - last_log[1]) * config.train.batch_size / max(now - last_log[0], 1e-9)
      last_log = (now, done)
      writer.write_scalars(done, values)
      _write_jsonl(workdir, done, values)
    if done % config.train.checkpoint_every_steps == 0 or done == total or done == stop_after_steps:
      checkpoint.save(mgr, done, new_state)
      last_saved = done
    if done < total:
      on_progress(new_state, done, metrics, step_boundary=True)

  preemption = checkpoint.PreemptionWatch()  # a SIGTERM from here on stops at the next training step
  try:
    if start_step < total:
      if config.mode == "fast":
        _, state = train_on_features(config, *cached["train"], dataset.num_classes, mesh, state, on_progress,
                                     stop_after_steps)
      else:
        state = _train_full(config, network, classifier, tx, schedule, data_config, encoder_vars, state,
                            dataset, mesh, total, stop_after_steps, on_progress)
  finally:
    preemption.close()
    mgr.wait_until_finished()
    mgr.close()
  train_time = time.time() - t_train
  reached = int(state.step)

  # --- Evaluation (also the whole of a rerun of a finished workdir) ---
  if cached is None:
    t_feat = time.time()
    cached = {"train": features_of("train"), "eval": features_of("eval")}
    feature_time += time.time() - t_feat
  held_out = evaluate_features(classifier, state, *cached["eval"])
  train_acc = evaluate_features(classifier, state, *cached["train"])
  finished = reached >= total
  results = {
      "pretrained_workdir": config.pretrained.workdir, "pretrained_step": pre_step,
      "pretrained_method": run_config.method, "network": config.pretrained.network,
      "weights": config.pretrained.weights, "protocol": config.protocol, "mode": config.mode,
      "mode_name": MODE_NAMES[config.mode], "dataset": data_config.name, "image_size": data_config.image_size,
      "epochs": reached / lengths["steps_per_epoch"], "configured_epochs": float(config.train.epochs),
      "steps": reached, "total_steps": total, "steps_per_epoch": lengths["steps_per_epoch"],
      "batch_size": config.train.batch_size, "lr": config.optim.base_lr * config.train.batch_size / 256,
      "batch_norm_head": bool(config.classifier.batch_norm), "nesterov": bool(config.optim.nesterov),
      "train_examples": num_train, "eval_examples": num_eval,
      "num_classes": dataset.num_classes, "feature_dim": feature_dim, "finished": finished,
      "top1": held_out["top1"], "top5": held_out["top5"], "train_top1": train_acc["top1"],
      "trained_steps": reached - start_step, "feature_time_s": feature_time, "train_time_s": train_time,
      "wall_time_s": time.time() - t_start, "devices": jax.device_count(),
  }
  writer.write_scalars(reached, {"eval_top1": results["top1"], "eval_top5": results["top5"],
                                 "train_top1": results["train_top1"]})
  writer.flush()
  _write_jsonl(workdir, reached, {"eval_top1": results["top1"], "eval_top5": results["top5"],
                                  "train_top1": results["train_top1"]})
  if is_main:
    if finished:
      (epath.Path(workdir) / RESULTS_FILE).write_text(json.dumps(results, indent=2))
    status = "Linear eval" if finished else f"Linear eval stopped at step {reached} of {total}"
    print(f"{status} [{config.protocol}, {MODE_NAMES[config.mode]}] of {config.pretrained.network}/"
          f"{config.pretrained.weights} ({run_config.method}, step {pre_step}): top1={results['top1']:.2f}% "
          f"top5={results['top5']:.2f}% (train top1={results['train_top1']:.2f}%) in "
          f"{results['wall_time_s']:.0f}s", flush=True)
  return results


def _count(dataset, split: str, count: int) -> int:
  """Examples a (sub)split holds: all of it when count is 0."""
  total = dataset.num_examples(split)
  return min(int(count), total) if count else total


def _full_batches(config, dataset, data_config, start: int, mesh) -> Iterator[Tuple[int, jax.Array, jax.Array]]:
  """(step, images, labels) of the full mode's training batches from `start`, exact on resume."""
  batch = config.train.batch_size
  if dataset.host_crops:  # streaming: one host crop per example, flipped on the device
    source = dataset.labelled_source("train", data_config.train_examples)
    yield from dataset.train_batches(config.seed, start, batch, mesh, views=1,
                                     aug=train_augment_config(data_config.augment), source=source)
    return
  train_x, train_y = data_input.subset(*dataset.split("train"), data_config.train_examples, config.seed)
  order = _EpochOrder(config.seed, train_x.shape[0], batch)
  step = start
  while True:
    idx = data_input.process_slice(order.indices(step, step + 1)[0], jax.process_index(), jax.process_count())
    yield (step, parallel.global_batch(train_x[idx], mesh),
           parallel.global_batch(train_y[idx].astype(np.int32), mesh))
    step += 1


def _train_full(config, network, classifier, tx, schedule, data_config, encoder_vars, state, dataset,
                mesh, total, stop_after_steps, on_progress) -> ClassifierState:
  """Full-mode loop: each step augments its batch on the device and runs the frozen encoder."""
  step_fn = make_full_step(network, classifier, tx, schedule, data_config.augment, data_config.image_size, mesh)
  start = int(state.step)
  end = total if stop_after_steps is None else min(total, stop_after_steps)
  if start >= end:
    return state
  for step, images, labels in _full_batches(config, dataset, data_config, start, mesh):
    state, metrics = step_fn(state, encoder_vars, images, labels)
    done = step + 1
    if (done % config.train.log_every_steps == 0 or done % config.train.checkpoint_every_steps == 0
        or done in (total, stop_after_steps)):
      on_progress(state, done, metrics)
    elif done < end:
      on_progress(state, done, metrics, step_boundary=True)  # a preemption stops at any step
    if done >= end:
      break
  return state
