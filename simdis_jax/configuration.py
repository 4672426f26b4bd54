"""The configuration schema: every key with its default, presets, and validation.

Experiment files in configs/ start from `base_config()` and change what they
need; `validate(config)` rejects unknown keys, wrong types and impossible
combinations with an error that names the key and the fix, before anything is
compiled.
"""

from typing import Any, NamedTuple, Optional, Sequence

import ml_collections

from simdis_jax import methods
from simdis_jax.optim_choices import LARS_FORMS, OPTIMIZERS, SCHEDULES, WEIGHT_DECAY_MASKS
from simdis_jax.data import datasets
from simdis_jax.models import archs

# Presets of the student's target views (docs/spec.md "Presets", paper Table 2), from the method modules.
VIEW_PRESETS = methods.VIEW_PRESETS
EMA_TIMINGS = ("before", "after")
TEACHER_BN_MODES = ("train", "eval")
EMA_INITS = ("copy", "separate")
COMPUTE_DTYPES = ("auto", "float32", "bfloat16")
CONV_IMPLS = ("auto", "xla", "matmul", "mixed")
BN_RUNNING_VARS = ("biased", "unbiased")


def network_config(
  depth: int,
  width: int,
  cifar_stem: bool,
  hidden_dim: int,
  proj_dim: int,
  arch: str = archs.DEFAULT_ARCH,
  patch_size: int = 16,
  drop_path_rate: float = 0.0,
  style: str = "torchvision",
  projector: str = "byol",
  head_bias: bool = True,
):
  """A config.model.{student,teacher} section (arch: a row of models/archs.py; depth/width are ResNet's)."""
  # cifar_stem: the small-image variant of every convolutional arch; patch_size: ViTs; drop_path_rate: stochastic
  # depth of EfficientNet and ViTs (0 = off); style: torchvision's ResNet or DeepMind's Haiku one (padding,
  # shortcuts, init, BN averages: models/resnet.py); projector: byol (Linear-BN-ReLU-Linear) | moco (no BN: MoCo-v2's,
  # SEED's student's); head_bias=False: the projector's and predictors' last Linear without bias (DeepMind's).
  return ml_collections.ConfigDict(dict(locals(), **archs.INPUT_DEFAULTS))


def data_config(name: str = "imagenet2012") -> ml_collections.ConfigDict:
  """A config.data section: which images, where, which splits, and their augmentations."""
  d = ml_collections.ConfigDict()
  d.name = name  # fashion_mnist (in memory) | any tfds name (streamed) | folder
  d.data_dir = ""  # tfds data_dir ("" = tfds's default) / folder of Fashion-MNIST's IDX files
  d.manual_dir = ""  # tfds manual_dir (ImageNet's archives): prepares the dataset on the first run
  d.allow_download = False  # let tfds download public datasets (this machine has no internet)
  d.folder = ""  # name='folder': a directory tree of JPEG/PNG files, or a glob
  d.pretrain_split = "train"  # tfds split(s) of the pretraining images, e.g. "train+unlabelled" for stl10
  d.train_split = "train"  # labelled split: kNN memory bank, linear-eval training
  d.eval_split = "validation"  # labelled held-out split: kNN queries, linear-eval test
  d.eval_name = ""  # tfds dataset of the labelled splits ("" = name; needed for folders)
  d.holdout = "none"  # fashion_mnist: none | validation | test (docs/input.md, "A validation split")
  d.image_key = "image"
  d.label_key = "label"
  d.image_size = 224
  d.shuffle_buffer = 10_000  # encoded examples in the tf.data shuffle buffer, per process
  d.prefetch = 2  # batches prepared ahead, per process
  d.host_threads = 0  # tf.data's thread pool per process (0 = one per core)
  d.augment = datasets.augment_config(3)
  return d


def base_config() -> ml_collections.ConfigDict:
  """All keys with defaults: the paper's ImageNet SimDis-On-7v standard setting."""
  c = ml_collections.ConfigDict()
  c.method = methods.default_method()  # one of methods.METHODS (simdis_jax/methods/; docs/methods.md)
  c.seed = 0

  c.model = ml_collections.ConfigDict()
  c.model.student = network_config(18, 64, False, 4096, 256)
  c.model.teacher = network_config(50, 64, False, 4096, 256)
  c.model.sync_bn = True  # global-batch BN statistics; False = per device
  c.model.ema_init = "copy"  # copy (authors) | separate (DeepMind)
  # Compute dtype of convolutions and matmuls; params, optimizer state, BN statistics
  # and the losses stay float32. auto = bfloat16 on GPU/TPU, float32 on CPU.
  c.model.compute_dtype = "auto"  # auto | float32 | bfloat16
  # How convolutions are computed (same params either way): xla = lax convolutions;
  # matmul = one matmul over gathered taps (XLA:CPU's conv gradients are slow); mixed = lax on maps of
  # >= 8x8, matmul below. auto = mixed on CPU for ResNets of width >= 32 and the mobile networks, xla otherwise.
  c.model.conv_impl = "auto"  # auto | xla | matmul | mixed
  # What BN running variances accumulate: biased (Flax) | unbiased (PyTorch, the authors' code).
  # Eval-mode outputs use the stored value either way (models/batch_norm.py).
  c.model.bn_running_var = "biased"
  c.model.matmul_conv_vjp = True  # matmul convs: hand-written backward, not autodiff (speed only, same results)
  c.model.matmul_max_pool = True  # matmul convs: the stem's max-pool as 9 strided slices (speed only)
  c.model.depthwise_impl = "auto"  # depthwise convs: xla | shifted (models/depthwise.py); auto = shifted on CPU

  c.teacher = ml_collections.ConfigDict()
  c.teacher.workdir = ""  # an offline teacher's method: a finished BYOL run whose student becomes the teacher
  c.teacher.bn_mode = "train"  # frozen offline teacher: batch statistics (authors) | eval (running statistics)
  c.teacher.allow_unfinished = False

  c.ema = ml_collections.ConfigDict()
  c.ema.base = 0.99
  c.ema.timing = "before"  # before the loss with pre-update weights (authors) | after the update (DeepMind)

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "lars"
  c.optim.lars_form = "authors"
  c.optim.base_lr = 0.3  # × batch/256
  c.optim.momentum = 0.9
  c.optim.nesterov = False
  c.optim.weight_decay = 1e-4
  c.optim.weight_decay_mask = "all"
  c.optim.trust_coefficient = 1e-3
  c.optim.warmup_epochs = 10.0
  c.optim.warmup_init_lr = 1e-6
  c.optim.schedule = "cosine"  # after the warm-up: cosine to 0 | step (x0.1 every optim.step_epochs epochs)
  c.optim.step_epochs = 30.0  # schedule=step: epochs between the x0.1 decays (torchvision's supervised recipe)

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 2048  # global, over all devices and hosts
  c.train.epochs = 100.0
  c.train.steps = -1  # > 0 overrides epochs
  c.train.log_every_steps = 50
  c.train.checkpoint_every_steps = 1000
  c.train.keep_checkpoints = 3
  c.train.knn_every_steps = 5000  # 0 = only at the start and the end

  c.data = data_config()

  c.probe = ml_collections.ConfigDict()
  c.probe.enabled = False  # online linear probe on stop-gradient encoder features (needs labels)
  c.probe.learning_rate = 0.2  # optimizer=own: its own SGD (Nesterov momentum 0.9), constant rate
  c.probe.optimizer = "own"  # own | main: in the loss, by the main optimizer (DeepMind's classifier)
  c.probe.num_classes = 1000  # the dataset's classes (also method=supervised's classifier)
  c.final_eval = ml_collections.ConfigDict()
  c.final_eval.linear_networks = ()  # e.g. ("student", "teacher"): linear eval after pretraining
  c.final_eval.linear_protocol = "authors"
  c.final_eval.linear_mode = "fast"  # fast: cached features, no augmentation | full
  c.final_eval.linear_epochs = 0.0  # 0 = the protocol's 80 epochs
  c.final_eval.linear_batch_size = 256
  c.final_eval.linear_train_examples = 0  # 0 = the whole train split (a subset makes quick checks quicker)
  c.final_eval.linear_eval_examples = 0
  c.final_eval.report = False  # write <workdir>/report (results.md + figures) and print it
  c.final_eval.student_alone = False  # also BYOL on the same student in <workdir>/alone, and the kNN table

  c.knn = ml_collections.ConfigDict()
  c.knn.k = 20
  c.knn.temperature = 0.07
  c.knn.train_examples = 100_000  # memory bank: a fixed subset of the train split (0 = all of it)
  c.knn.eval_examples = 0  # 0 = the whole held-out split
  c.knn.batch_size = 512
  c.knn.networks = ("student", "teacher")

  # Each method module's own keys and sections (views, config.moco, ...: methods/interface.py `defaults`).
  methods.add_defaults(c)
  return c


def fashion_mnist_augment() -> ml_collections.ConfigDict:
  """BYOL augmentations for 28×28 grey images (colour ops are identities on one channel): data/datasets.py's preset."""
  return datasets.augment_preset("fashion_mnist")


def check_keys(config, reference, prefix=""):
  """Unknown keys and wrong types (bool / number / string / section) against a reference schema."""
  for key in config.keys():
    name = f"{prefix}{key}"
    if key not in reference:
      raise ValueError(f"Unknown config key '{name}'. Valid keys here: {sorted(reference.keys())}.")
    value, ref = config[key], reference[key]
    if isinstance(ref, ml_collections.ConfigDict):
      if not isinstance(value, ml_collections.ConfigDict):
        raise ValueError(f"config.{name} must be a section (ConfigDict), got {value!r}.")
      check_keys(value, ref, name + ".")
    elif isinstance(ref, bool) and not isinstance(value, bool):
      raise ValueError(f"config.{name} must be True or False, got {value!r}.")
    elif (
      isinstance(ref, (int, float))
      and not isinstance(ref, bool)
      and (isinstance(value, bool) or not isinstance(value, (int, float)))
    ):
      raise ValueError(f"config.{name} must be a number, got {value!r}.")
    elif isinstance(ref, str) and not isinstance(value, str):
      raise ValueError(f"config.{name} must be a string, got {value!r}.")


class Rule(NamedTuple):
  """One row of a validation table: the key, what its value must be, and what the error adds.

  A value must be one of `choices` (every item of it when `each`), or a number within the
  bounds that are set (`low`/`high` inclusive, `above`/`below` exclusive), a whole one when
  `whole`. `message` replaces the generated description of the rule; `hint` follows it.
  """

  key: str
  choices: Optional[Sequence[Any]] = None
  each: bool = False
  low: Optional[float] = None
  high: Optional[float] = None
  above: Optional[float] = None
  below: Optional[float] = None
  whole: bool = False
  message: str = ""
  hint: str = ""


def one_of(key: str, choices: Sequence[Any], **kw) -> Rule:
  """A row: the value is one of `choices`."""
  return Rule(key, choices=tuple(choices), **kw)


def whole_number(key: str, low: int = 1, hint: str = "") -> Rule:
  """A row: the value is a whole number >= low (default: a positive integer)."""
  return Rule(key, low=low, whole=True, hint=hint)


def number(key: str, hint: str = "", **bounds) -> Rule:
  """A row: the value is a number within `bounds` (low / high inclusive, above / below exclusive)."""
  return Rule(key, hint=hint, **bounds)


def _describe(rule: Rule) -> str:
  """What a value breaking `rule` is told it must be."""
  if rule.message:
    return rule.message
  if rule.choices is not None:
    return (
      f"has {{}}; use any of {list(rule.choices)}"
      if rule.each
      else (f"is not valid; choose one of {list(rule.choices)}")
    )
  if rule.whole and rule.high is None and rule.above is None and rule.below is None and rule.low in (0, 1):
    return "must be a positive integer" if rule.low == 1 else "must be an integer >= 0"
  bounds = [
    f"{op} {b}"
    for op, b in ((">=", rule.low), (">", rule.above), ("<=", rule.high), ("<", rule.below))
    if b is not None
  ]
  return f"is out of range: it must be {'a whole number ' if rule.whole else ''}" + " and ".join(bounds)


def _breaks(rule: Rule, value) -> Any:
  """The offending part of `value` under `rule` (the value itself, or the bad items), or None."""
  if rule.choices is not None:
    if rule.each:
      bad = [v for v in value if v not in rule.choices]
      return bad or None
    return None if value in rule.choices else value
  out = (
    (rule.whole and int(value) != value)
    or (rule.low is not None and value < rule.low)
    or (rule.high is not None and value > rule.high)
    or (rule.above is not None and value <= rule.above)
    or (rule.below is not None and value >= rule.below)
  )
  return value if out else None


def check_rules(config, rules: Sequence[Rule]) -> None:
  """Walks a validation table: the first value breaking its row raises an error naming the key and the fix.

  A key absent from the config (a config file built from plain dicts) is skipped; check_keys
  has already rejected unknown keys and wrong types.
  """
  for rule in rules:
    value = config
    for part in rule.key.split("."):
      if part not in value:
        break
      value = value[part]
    else:
      bad = _breaks(rule, value)
      if bad is not None:
        what = _describe(rule).replace("{}", repr(bad))
        hint = f" ({rule.hint})" if rule.hint else ""
        raise ValueError(f"config.{rule.key}={value!r} {what}{hint}.")


NETWORK_NAMES = ("student", "teacher")

# The pretraining schema's per-key rules (cross-key rules are in `validate`).
RULES = (
  one_of("method", methods.METHODS),
  one_of("model.ema_init", EMA_INITS),
  one_of("model.compute_dtype", COMPUTE_DTYPES),
  one_of("model.conv_impl", CONV_IMPLS),
  one_of("model.depthwise_impl", archs.DEPTHWISE_IMPLS),
  one_of("model.bn_running_var", BN_RUNNING_VARS),  # absent in configs saved before the key: biased
  one_of("teacher.bn_mode", TEACHER_BN_MODES),
  one_of("ema.timing", EMA_TIMINGS),
  one_of("optim.name", OPTIMIZERS),
  one_of("optim.lars_form", LARS_FORMS),
  one_of("optim.weight_decay_mask", WEIGHT_DECAY_MASKS),
  one_of("final_eval.linear_mode", ("fast", "full")),
  one_of("final_eval.linear_protocol", ("authors", "deepmind")),
  one_of("knn.networks", NETWORK_NAMES, each=True),
  one_of("final_eval.linear_networks", NETWORK_NAMES, each=True),
  *(whole_number(f"model.{net}.{key}") for net in NETWORK_NAMES for key in ("width", "hidden_dim", "proj_dim")),
  whole_number("train.batch_size"),
  whole_number("train.log_every_steps", hint="e.g. 50"),
  whole_number("train.checkpoint_every_steps", hint="e.g. 1000"),
  whole_number("train.keep_checkpoints", hint="e.g. 3"),
  whole_number("train.knn_every_steps", 0, hint="0 = start and end only"),
  whole_number("train.steps", -1, hint="-1 = use train.epochs"),
  number("ema.base", low=0.0, high=1.0, message="must lie in [0, 1]", hint="the paper uses 0.99"),
  number("optim.base_lr", above=0.0),
  number("optim.weight_decay", low=0.0),
  number("optim.warmup_epochs", low=0.0),
  number("optim.momentum", low=0.0, high=0.999999, hint="the paper uses 0.9"),
  number("optim.trust_coefficient", low=1e-12, hint="the paper uses 1e-3"),
  number("optim.warmup_init_lr", low=0.0, hint="e.g. 1e-6"),
  whole_number("knn.k"),
  whole_number("knn.batch_size"),
  number("knn.temperature", above=0.0),
  whole_number("knn.train_examples", 0, hint="0 = the whole split"),
  whole_number("knn.eval_examples", 0, hint="0 = the whole split"),
  whole_number("probe.num_classes", hint="the dataset's class count"),
  whole_number("final_eval.linear_batch_size", hint="e.g. 256"),
  number("final_eval.linear_epochs", low=0.0, hint="0 = the protocol's 80"),
  whole_number("data.image_size"),
  one_of("data.holdout", ("none", "validation", "test"), hint="fashion_mnist's 50k/10k validation split"),
  whole_number("data.shuffle_buffer"),
  whole_number("data.prefetch", 0),
  whole_number("data.host_threads", 0),
  number("data.augment.jitter_prob", low=0.0, high=1.0, hint="BYOL uses 0.8"),
  number("data.augment.grey_prob", low=0.0, high=1.0, hint="BYOL uses 0.2"),
  one_of("optim.schedule", SCHEDULES),
  number("optim.step_epochs", above=0.0, hint="torchvision uses 30"),
  one_of("probe.optimizer", ("own", "main")),
  *(one_of(f"model.{net}.projector", archs.PROJECTORS) for net in NETWORK_NAMES),
  *(Rule(**row) for row in methods.rules()),  # each method module's rows (methods/interface.py RULES)
)


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Raises ValueError naming the key and the fix for any bad value; returns the config."""
  check_keys(config, base_config())
  check_rules(config, RULES)
  _check_data(config)
  methods.validate(config)  # the method's cross-key rules (its module's `validate`)
  if methods.about(config.method).needs_labels and not has_labels(config.data):
    raise ValueError(
      f"method {config.method!r} trains on labels, but the image folder {config.data.folder!r} has "
      "none; use a labelled dataset (config.data.name) or a self-supervised method."
    )
  # An offline teacher's workdir is checked when a run starts (train.check_offline_teacher): a research step
  # or an evaluation of the config never reads it.
  check_schedule(config)
  if config.probe.enabled and (config.probe.num_classes < 2 or config.probe.learning_rate <= 0):
    raise ValueError("config.probe needs num_classes >= 2 and learning_rate > 0.")
  low, high = config.data.augment.crop_scale
  if not 0.0 < low <= high <= 1.0:
    raise ValueError(
      f"config.data.augment.crop_scale={tuple(config.data.augment.crop_scale)} must satisfy "
      "0 < low <= high <= 1 (BYOL uses (0.08, 1.0))."
    )
  for name in NETWORK_NAMES:
    _check_network(config, name)
  return config


def check_schedule(config) -> None:
  """A run needs a length: config.train.epochs or config.train.steps (shared with linear evaluation)."""
  if config.train.epochs <= 0 and config.train.steps <= 0:
    raise ValueError("Set config.train.epochs > 0 or config.train.steps > 0.")


# Methods whose teacher is a finished BYOL run, restored frozen (train.load_offline_teacher).
OFFLINE_TEACHER_METHODS = tuple(m for m in methods.METHODS if methods.about(m).teacher == "offline")


def _check_network(config, name: str) -> None:
  """The arch of config.model.<name> and the keys that depend on it (the table's rows cannot)."""
  net, key = config.model[name], f"model.{name}"
  arch = archs.arch_of(net)
  if arch not in archs.SPECS:
    raise ValueError(f"config.{key}.arch={arch!r} is not an architecture; choose one of {list(archs.ARCHS)}.")
  spec = archs.SPECS[arch]
  if spec.depths and net.depth not in spec.depths:
    raise ValueError(f"config.{key}.depth={net.depth!r} is not a ResNet depth; choose one of {list(spec.depths)}.")
  style = net.get("style", "torchvision")
  if style not in spec.styles:
    raise ValueError(
      f"config.{key}.style={style!r} is not valid for arch={arch!r}; choose 'torchvision', or "
      "'haiku' (DeepMind's Haiku ResNet padding and shortcuts) with arch='resnet'."
    )
  if not 0.0 <= (rate := net.get("drop_path_rate", 0.0)) < 1.0:
    raise ValueError(
      f"config.{key}.drop_path_rate={rate!r} must be in [0, 1) (0 = off, the self-supervised "
      "default; the references' supervised values are 0.1-0.2)."
    )
  if rate > 0.0 and not spec.stochastic_depth:
    raise ValueError(
      f"config.{key}.drop_path_rate={rate!r}: arch={arch!r} has no stochastic depth; set it to 0 "
      f"or use one of {list(archs.STOCHASTIC_DEPTH_ARCHS)}."
    )
  patch = net.get("patch_size", 16)
  if spec.patches and (int(patch) != patch or patch <= 0 or config.data.image_size % patch):
    raise ValueError(
      f"config.{key}.patch_size={patch!r} must be a positive divisor of config.data.image_size="
      f"{config.data.image_size} (16 at 224 px, 4 at 28 or 32 px)."
    )


def has_labels(data) -> bool:
  """Whether config.data provides labelled splits (kNN monitor, online probe, linear evaluation)."""
  return data.name != "folder" or bool(data.eval_name)


def _check_data(config) -> None:
  """The data section's cross-key rules (its per-key rules are rows of RULES)."""
  data = config.data
  if not data.name:
    raise ValueError(
      f"config.data.name is empty; use one of {list(datasets.DATASETS)} (in memory), a tfds dataset name or 'folder'."
    )
  if data.name == "folder" and not data.folder:
    raise ValueError(
      "config.data.name='folder' needs config.data.folder: a directory of images or a glob "
      "such as '/data/frames/*.jpg'."
    )
  if data.folder and data.name != "folder":
    raise ValueError(
      f"config.data.folder is set but config.data.name={data.name!r}; set "
      "config.data.name='folder' to pretrain on the folder."
    )
  if not has_labels(data):
    wants = [
      k
      for k, on in (
        ("probe.enabled", config.probe.enabled),
        ("knn.networks", bool(config.knn.networks)),
        ("final_eval.linear_networks", bool(config.final_eval.linear_networks)),
      )
      if on
    ]
    if wants:
      raise ValueError(
        f"The image folder {data.folder!r} has no labels, but {wants} need them: set "
        "config.data.eval_name to a labelled tfds dataset (with train_split / eval_split), or "
        "turn them off (--config.probe.enabled=False --config.knn.networks='()' ...)."
      )


def uses_teacher(config) -> bool:
  """Whether the run holds a teacher network (its method's About.teacher is online or offline)."""
  return methods.teacher_kind(config) != "none"
