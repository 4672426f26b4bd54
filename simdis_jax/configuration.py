"""The configuration schema: every key with its default, presets, and validation.

Experiment files in configs/ start from `base_config()` and change what they
need; `validate(config)` rejects unknown keys, wrong types and impossible
combinations with an error that names the key and the fix, before anything is
compiled.
"""

from typing import Sequence

import ml_collections

from simdis_jax import methods, optim
from simdis_jax.methods import simdis
from simdis_jax.data import augment
from simdis_jax.models import encoders
from simdis_jax.models.heads import PROJECTORS

# Presets of the student's target views (SPEC.md "Presets", paper Table 2).
VIEW_PRESETS = {
    "byol": ("sema_dv",),
    "simdis_2v": ("sema_dv", "tema_dv"),
    "simdis_7v": tuple(simdis.VIEWS),
    # Table 2 rows (the student's own BYOL view plus the listed teacher views).
    "table2_t_sv": ("sema_dv", "t_sv"),
    "table2_t_dv": ("sema_dv", "t_dv"),
    "table2_tema_sv": ("sema_dv", "tema_sv"),
    "table2_tema_dv": ("sema_dv", "tema_dv"),
    "table2_t_sv_t_dv": ("sema_dv", "t_sv", "t_dv"),
    "table2_tema_sv_tema_dv": ("sema_dv", "tema_sv", "tema_dv"),
    "table2_all_teacher": ("sema_dv", "t_sv", "t_dv", "tema_sv", "tema_dv"),
    "table2_7v": tuple(simdis.VIEWS),
}
EMA_TIMINGS = ("before", "after")
TEACHER_BN_MODES = ("train", "eval")
EMA_INITS = ("copy", "separate")
_RESNET_DEPTHS = (10, 18, 34, 50, 101, 152, 200)
COMPUTE_DTYPES = ("auto", "float32", "bfloat16")
CONV_IMPLS = ("auto", "xla", "matmul")
BN_RUNNING_VARS = ("biased", "unbiased")


# The network keys added with the arch choice, and what a section written without them means.
NETWORK_DEFAULTS = dict(arch="resnet", patch_size=16, drop_path_rate=0.0, projector="byol")


def network_config(depth: int, width: int, cifar_stem: bool, hidden_dim: int, proj_dim: int,
                   arch: str = "resnet", patch_size: int = 16, drop_path_rate: float = 0.0,
                   projector: str = "byol"):
  """A config.model.{student,teacher} section (arch: see models/encoders.py; depth/width are ResNet's)."""
  # cifar_stem: the small-image variant of every convolutional arch; patch_size: ViTs; drop_path_rate:
  # stochastic depth of EfficientNet and ViTs (0 = off, the self-supervised default); projector: byol
  # (Linear-BN-ReLU-Linear) | moco (Linear-ReLU-Linear, no BN: MoCo-v2's head, SEED's student head).
  return ml_collections.ConfigDict(dict(depth=depth, width=width, cifar_stem=cifar_stem,
                                        hidden_dim=hidden_dim, proj_dim=proj_dim, arch=arch,
                                        patch_size=patch_size, drop_path_rate=drop_path_rate,
                                        projector=projector))


def with_network_defaults(run: dict) -> dict:
  """A saved run config (dict) whose network sections lack the arch keys, completed with their defaults."""
  for name in ("student", "teacher"):
    section = run.get("model", {}).get(name)
    if isinstance(section, dict):
      for key, value in NETWORK_DEFAULTS.items():
        section.setdefault(key, value)
  return run


def data_config(name: str = "imagenet2012") -> ml_collections.ConfigDict:
  """A config.data section: which images, where, which splits, and their augmentations."""
  d = ml_collections.ConfigDict()
  d.name = name                   # fashion_mnist (in memory) | any tfds name (streamed) | folder
  d.data_dir = ""                 # tfds data_dir ("" = tfds's default) / folder of Fashion-MNIST's IDX files
  d.manual_dir = ""               # tfds manual_dir (ImageNet's archives): prepares the dataset on the first run
  d.allow_download = False        # let tfds download public datasets (this machine has no internet)
  d.folder = ""                   # name='folder': a directory tree of JPEG/PNG files, or a glob
  d.pretrain_split = "train"      # tfds split(s) of the pretraining images, e.g. "train+unlabelled" for stl10
  d.train_split = "train"         # labelled split: kNN memory bank, linear-eval training
  d.eval_split = "validation"     # labelled held-out split: kNN queries, linear-eval test
  d.eval_name = ""                # tfds dataset of the labelled splits ("" = name; needed for folders)
  d.image_key = "image"
  d.label_key = "label"
  d.image_size = 224
  d.shuffle_buffer = 10_000       # encoded examples in the tf.data shuffle buffer, per process
  d.prefetch = 2                  # batches prepared ahead, per process
  d.host_threads = 0              # tf.data's thread pool per process (0 = one per core)
  d.augment = augment.default_config(3)
  return d


def base_config() -> ml_collections.ConfigDict:
  """All keys with defaults: the paper's ImageNet SimDis-On-7v standard setting."""
  c = ml_collections.ConfigDict()
  c.method = "simdis_on"          # byol | simdis_off | simdis_on | supervised (labels; views unused) | moco_v2 | seed
  c.views = VIEW_PRESETS["simdis_7v"]
  c.head_combination = "mean"     # mean over heads (authors) | sum
  c.seed = 0

  c.model = ml_collections.ConfigDict()
  c.model.student = network_config(18, 64, False, 4096, 256)
  c.model.teacher = network_config(50, 64, False, 4096, 256)
  c.model.sync_bn = True          # global-batch BN statistics; False = per device
  c.model.ema_init = "copy"       # copy (authors) | separate (DeepMind)
  # Compute dtype of convolutions and matmuls; params, optimizer state, BN statistics
  # and the losses stay float32. auto = bfloat16 on GPU/TPU, float32 on CPU.
  c.model.compute_dtype = "auto"  # auto | float32 | bfloat16
  # How convolutions are computed (same params either way): xla = lax convolutions;
  # matmul = one matmul over gathered taps (XLA:CPU's conv gradients are slow). auto = matmul on CPU
  # for networks of width >= 32, xla otherwise.
  c.model.conv_impl = "auto"      # auto | xla | matmul
  # What BN running variances accumulate: biased (Flax) | unbiased (PyTorch, the authors' code).
  # Eval-mode outputs use the stored value either way (models/batch_norm.py).
  c.model.bn_running_var = "biased"
  c.model.matmul_conv_vjp = True  # matmul convs: hand-written backward, not autodiff (speed only, same results)
  c.model.matmul_max_pool = True  # matmul convs: the stem's max-pool as 9 strided slices (speed only)

  c.teacher = ml_collections.ConfigDict()
  c.teacher.workdir = ""          # simdis_off: a finished BYOL run whose student becomes the teacher
  c.teacher.bn_mode = "train"     # frozen offline teacher: batch statistics (authors) | eval (running statistics)
  c.teacher.allow_unfinished = False

  c.ema = ml_collections.ConfigDict()
  c.ema.base = 0.99
  c.ema.timing = "before"         # before the loss with pre-update weights (authors) | after the update (DeepMind)

  c.optim = ml_collections.ConfigDict()
  c.optim.name = "lars"
  c.optim.lars_form = "authors"
  c.optim.base_lr = 0.3           # × batch/256
  c.optim.momentum = 0.9
  c.optim.nesterov = False
  c.optim.weight_decay = 1e-4
  c.optim.weight_decay_mask = "all"
  c.optim.trust_coefficient = 1e-3
  c.optim.warmup_epochs = 10.0
  c.optim.warmup_init_lr = 1e-6
  c.optim.schedule = "cosine"     # after the warm-up: cosine to 0 | step (x0.1 every optim.step_epochs epochs)
  c.optim.step_epochs = 30.0      # schedule=step: epochs between the x0.1 decays (torchvision's supervised recipe)

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 2048       # global, over all devices and hosts
  c.train.epochs = 100.0
  c.train.steps = -1              # > 0 overrides epochs
  c.train.log_every_steps = 50
  c.train.checkpoint_every_steps = 1000
  c.train.keep_checkpoints = 3
  c.train.knn_every_steps = 5000  # 0 = only at the start and the end

  c.data = data_config()

  c.probe = ml_collections.ConfigDict()
  c.probe.enabled = False         # online linear probe on stop-gradient encoder features (needs labels)
  c.probe.learning_rate = 0.2     # its own SGD (Nesterov momentum 0.9), constant rate
  c.probe.num_classes = 1000      # the dataset's classes (also method=supervised's classifier)

  c.final_eval = ml_collections.ConfigDict()
  c.final_eval.linear_networks = ()       # e.g. ("student", "teacher"): linear eval after pretraining
  c.final_eval.linear_protocol = "authors"
  c.final_eval.linear_mode = "fast"       # fast: cached features, no augmentation | full
  c.final_eval.linear_epochs = 0.0        # 0 = the protocol's 80 epochs
  c.final_eval.linear_batch_size = 256
  c.final_eval.linear_train_examples = 0  # 0 = the whole train split (a subset makes quick checks quicker)
  c.final_eval.linear_eval_examples = 0
  c.final_eval.report = False             # write <workdir>/report (results.md + figures) and print it

  # MoCo-v2 (method=moco_v2; SPEC.md "MoCo-v2"): the key encoder is the student's EMA partner.
  c.moco = ml_collections.ConfigDict()
  c.moco.momentum = 0.999         # key encoder: θ_k <- m θ_k + (1 - m) θ_q at the start of every step
  c.moco.temperature = 0.2
  c.moco.queue_size = 65_536      # negatives; a multiple of train.batch_size
  c.moco.shuffle_bn = True        # key encoder on a permutation of the global batch (needs model.sync_bn=False)

  # SEED (method=seed; SPEC.md "SEED"): the frozen teacher is a finished BYOL run (teacher.workdir).
  c.seed_distill = ml_collections.ConfigDict()
  c.seed_distill.student_temperature = 0.2
  c.seed_distill.teacher_temperature = 1e-4
  c.seed_distill.queue_size = 65_536  # teacher embeddings; a multiple of train.batch_size

  # method=supervised: 2 = both views, their losses averaged (the study's reference, BYOL augmentations);
  # 1 = one crop per image and step (the torchvision recipe of configs/imagenet/supervised_r18.py).
  c.supervised = ml_collections.ConfigDict()
  c.supervised.views = 2

  c.knn = ml_collections.ConfigDict()
  c.knn.k = 20
  c.knn.temperature = 0.07
  c.knn.train_examples = 100_000  # memory bank: a fixed subset of the train split (0 = all of it)
  c.knn.eval_examples = 0         # 0 = the whole held-out split
  c.knn.batch_size = 512
  c.knn.networks = ("student", "teacher")
  return c


def fashion_mnist_augment() -> ml_collections.ConfigDict:
  """BYOL augmentations for 28×28 grey images (colour ops are identities on one channel)."""
  a = augment.default_config(1)
  a.crop_scale = (0.2, 1.0)  # 8% of 28×28 is an 8-pixel patch: too little of a garment
  return a


def check_keys(config, reference, prefix=""):
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
    elif isinstance(ref, (int, float)) and not isinstance(ref, bool) and (
        isinstance(value, bool) or not isinstance(value, (int, float))):
      raise ValueError(f"config.{name} must be a number, got {value!r}.")
    elif isinstance(ref, str) and not isinstance(value, str):
      raise ValueError(f"config.{name} must be a string, got {value!r}.")


def _one_of(config, key: str, choices: Sequence[str]):
  value = config
  for part in key.split("."):
    value = value[part]
  if value not in choices:
    raise ValueError(f"config.{key}={value!r} is not valid; choose one of {list(choices)}.")


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Raises ValueError naming the key and the fix for any bad value; returns the config."""
  check_keys(config, base_config())
  _one_of(config, "method", methods.METHODS)
  config.views = simdis.check_views(config.views)
  _one_of(config, "head_combination", simdis.HEAD_COMBINATIONS)
  _one_of(config, "model.ema_init", EMA_INITS)
  _one_of(config, "model.compute_dtype", COMPUTE_DTYPES)
  _one_of(config, "model.conv_impl", CONV_IMPLS)
  if config.model.get("bn_running_var", "biased") not in BN_RUNNING_VARS:  # configs saved before the key: biased
    raise ValueError(f"config.model.bn_running_var={config.model.bn_running_var!r} is not valid; choose one of "
                     f"{list(BN_RUNNING_VARS)}.")
  _one_of(config, "teacher.bn_mode", TEACHER_BN_MODES)
  _one_of(config, "ema.timing", EMA_TIMINGS)
  _one_of(config, "optim.name", optim.OPTIMIZERS)
  _one_of(config, "optim.lars_form", optim.LARS_FORMS)
  _one_of(config, "optim.weight_decay_mask", optim.WEIGHT_DECAY_MASKS)
  _check_data(config)
  teacher_views = [v for v in config.views if simdis.VIEWS[v][0].startswith("teacher")]
  if config.method == "byol" and teacher_views:
    raise ValueError(f"method 'byol' trains the student alone, but config.views names teacher views "
                     f"{teacher_views}; use method 'simdis_off' or 'simdis_on', or views {VIEW_PRESETS['byol']}.")
  if config.method == "supervised" and not has_labels(config.data):
    raise ValueError(f"method 'supervised' trains on labels, but the image folder {config.data.folder!r} has "
                     "none; use a labelled dataset (config.data.name) or a self-supervised method.")
  if config.method in OFFLINE_TEACHER_METHODS and not config.teacher.workdir:
    raise ValueError(f"method {config.method!r} needs a finished BYOL teacher run: set "
                     "--config.teacher.workdir=<workdir of a method=byol run of the teacher network>.")
  _check_contrastive(config)
  if not 0.0 <= config.ema.base <= 1.0:
    raise ValueError(f"config.ema.base={config.ema.base} must lie in [0, 1] (the paper uses 0.99).")
  for key in ("train.batch_size", "knn.k", "knn.batch_size", "data.image_size",
              "model.student.width", "model.teacher.width", "model.student.hidden_dim",
              "model.student.proj_dim", "model.teacher.hidden_dim", "model.teacher.proj_dim"):
    section, name = key.rsplit(".", 1)
    value = config
    for part in section.split("."):
      value = value[part]
    if int(value[name]) != value[name] or value[name] <= 0:
      raise ValueError(f"config.{key}={value[name]!r} must be a positive integer.")
  if config.train.epochs <= 0 and config.train.steps <= 0:
    raise ValueError("Set config.train.epochs > 0 or config.train.steps > 0.")
  if config.optim.base_lr <= 0 or config.optim.weight_decay < 0 or config.optim.warmup_epochs < 0:
    raise ValueError("config.optim.base_lr must be > 0, weight_decay and warmup_epochs >= 0.")
  if config.probe.enabled and (config.probe.num_classes < 2 or config.probe.learning_rate <= 0):
    raise ValueError("config.probe needs num_classes >= 2 and learning_rate > 0.")
  if config.knn.temperature <= 0:
    raise ValueError(f"config.knn.temperature={config.knn.temperature} must be > 0.")
  for key in ("knn.networks", "final_eval.linear_networks"):
    section, name = key.split(".")
    unknown_nets = [n for n in config[section][name] if n not in ("student", "teacher")]
    if unknown_nets:
      raise ValueError(f"config.{key} has {unknown_nets}; use 'student' and/or 'teacher'.")
  _one_of(config, "final_eval.linear_mode", ("fast", "full"))
  _one_of(config, "final_eval.linear_protocol", ("authors", "deepmind"))
  check_ranges(config)
  for name in ("student", "teacher"):
    _check_network(config, name)
  return config


# Methods whose teacher is a finished BYOL run, restored frozen (train.load_offline_teacher).
OFFLINE_TEACHER_METHODS = ("simdis_off", "seed")


def _check_contrastive(config) -> None:
  """MoCo-v2's and SEED's keys, the LR schedule's and the supervised views' (keys added with issue 17)."""
  _one_of(config, "optim.schedule", optim.SCHEDULES)
  if config.optim.step_epochs <= 0:
    raise ValueError(f"config.optim.step_epochs={config.optim.step_epochs} must be > 0 (torchvision uses 30).")
  if config.supervised.views not in (1, 2):
    raise ValueError(f"config.supervised.views={config.supervised.views!r} must be 1 (one crop, the torchvision "
                     "recipe) or 2 (both views).")
  for name, low, high in (("moco.momentum", 0.0, 1.0), ("moco.temperature", 1e-12, None),
                          ("seed_distill.student_temperature", 1e-12, None),
                          ("seed_distill.teacher_temperature", 1e-12, None)):
    section, key = name.split(".")
    value = config[section][key]
    if value < low or (high is not None and value > high):
      raise ValueError(f"config.{name}={value!r} is out of range [{low}, {high if high is not None else 'inf'}].")
  sizes = {"moco_v2": "moco.queue_size", "seed": "seed_distill.queue_size"}
  if config.method not in sizes:
    return
  section, key = sizes[config.method].split(".")
  size, batch = config[section][key], config.train.batch_size
  if int(size) != size or size <= 0 or size % batch:
    raise ValueError(f"config.{sizes[config.method]}={size!r} must be a positive multiple of config.train."
                     f"batch_size={batch} (the keys of a batch never straddle the queue's end), e.g. "
                     f"{max(1, 65_536 // batch) * batch}.")
  if config.method == "moco_v2":
    if config.moco.shuffle_bn and config.model.sync_bn:
      raise ValueError("config.moco.shuffle_bn=True needs per-device BN (--config.model.sync_bn=False); with "
                       "SyncBN every device sees the global statistics and a shuffle changes nothing. Choose one.")
    if config.model.ema_init != "copy":
      raise ValueError("method 'moco_v2' starts the key encoder as a copy of the query encoder: set "
                       "--config.model.ema_init=copy.")
  if config.method == "seed" and config.model.student.proj_dim != config.model.teacher.proj_dim:
    raise ValueError(f"method 'seed': the student's head must output the teacher's dimension; set "
                     f"--config.model.student.proj_dim={config.model.teacher.proj_dim} (model.teacher.proj_dim).")


def _check_network(config, name: str) -> None:
  """The arch and its own keys of config.model.<name>."""
  net, key = config.model[name], f"model.{name}"
  if net.get("projector", "byol") not in PROJECTORS:
    raise ValueError(f"config.{key}.projector={net.projector!r} is not valid; choose one of {list(PROJECTORS)}.")
  arch = net.get("arch", "resnet")
  if arch not in encoders.ARCHS:
    raise ValueError(f"config.{key}.arch={arch!r} is not an architecture; choose one of {list(encoders.ARCHS)}.")
  rate = net.get("drop_path_rate", 0.0)
  if rate != 0.0:
    raise ValueError(f"config.{key}.drop_path_rate={rate!r}: stochastic depth needs a per-step 'dropout' RNG "
                     "in the train step, which does not pass one yet; keep 0 (off, the self-supervised default).")
  patch = net.get("patch_size", 16)
  if arch in encoders.VITS and (int(patch) != patch or patch <= 0 or config.data.image_size % patch):
    raise ValueError(f"config.{key}.patch_size={patch!r} must be a positive divisor of config.data.image_size="
                     f"{config.data.image_size} (16 at 224 px, 4 at 28 or 32 px).")


def has_labels(data) -> bool:
  """Whether config.data provides labelled splits (kNN monitor, online probe, linear evaluation)."""
  return data.name != "folder" or bool(data.eval_name)


def _check_data(config) -> None:
  data = config.data
  if not data.name:
    raise ValueError("config.data.name is empty; use 'fashion_mnist', a tfds dataset name or 'folder'.")
  if data.name == "folder" and not data.folder:
    raise ValueError("config.data.name='folder' needs config.data.folder: a directory of images or a glob "
                     "such as '/data/frames/*.jpg'.")
  if data.folder and data.name != "folder":
    raise ValueError(f"config.data.folder is set but config.data.name={data.name!r}; set "
                     "config.data.name='folder' to pretrain on the folder.")
  for key in ("shuffle_buffer", "image_size"):
    if int(data[key]) != data[key] or data[key] <= 0:
      raise ValueError(f"config.data.{key}={data[key]!r} must be a positive integer.")
  for key in ("prefetch", "host_threads"):
    if int(data[key]) != data[key] or data[key] < 0:
      raise ValueError(f"config.data.{key}={data[key]!r} must be an integer >= 0.")
  if not has_labels(data):
    wants = [k for k, on in (("probe.enabled", config.probe.enabled), ("knn.networks", bool(config.knn.networks)),
                             ("final_eval.linear_networks", bool(config.final_eval.linear_networks))) if on]
    if wants:
      raise ValueError(f"The image folder {data.folder!r} has no labels, but {wants} need them: set "
                       "config.data.eval_name to a labelled tfds dataset (with train_split / eval_split), or "
                       "turn them off (--config.probe.enabled=False --config.knn.networks='()' ...).")


# (key, lowest, highest, whether the value must be a whole number, what the paper/defaults use)
_RANGES = (
    ("train.log_every_steps", 1, None, True, "e.g. 50"),
    ("train.checkpoint_every_steps", 1, None, True, "e.g. 1000"),
    ("train.keep_checkpoints", 1, None, True, "e.g. 3"),
    ("train.knn_every_steps", 0, None, True, "0 = start and end only"),
    ("train.steps", -1, None, True, "-1 = use train.epochs"),
    ("optim.momentum", 0.0, 0.999999, False, "the paper uses 0.9"),
    ("optim.trust_coefficient", 1e-12, None, False, "the paper uses 1e-3"),
    ("optim.warmup_init_lr", 0.0, None, False, "e.g. 1e-6"),
    ("knn.train_examples", 0, None, True, "0 = the whole split"),
    ("knn.eval_examples", 0, None, True, "0 = the whole split"),
    ("probe.num_classes", 1, None, True, "the dataset's class count"),
    ("final_eval.linear_batch_size", 1, None, True, "e.g. 256"),
    ("final_eval.linear_epochs", 0.0, None, False, "0 = the protocol's 80"),
    ("data.augment.jitter_prob", 0.0, 1.0, False, "BYOL uses 0.8"),
    ("data.augment.grey_prob", 0.0, 1.0, False, "BYOL uses 0.2"),
)


def check_ranges(config) -> None:
  """Out-of-range numbers: an error naming the key, the allowed range and a sensible value."""
  for key, low, high, whole, hint in _RANGES:
    value = config
    for part in key.split("."):
      if part not in value:
        break
      value = value[part]
    else:
      if (whole and int(value) != value) or value < low or (high is not None and value > high):
        allowed = f"{'a whole number ' if whole else ''}>= {low}" + (f" and <= {high}" if high is not None else "")
        raise ValueError(f"config.{key}={value!r} is out of range: it must be {allowed} ({hint}).")
  for key in ("model.student.depth", "model.teacher.depth"):
    section, name = key.rsplit(".", 1)
    net = config.model[section.split(".")[1]]
    depth = net[name]
    if net.get("arch", "resnet") == "resnet" and depth not in _RESNET_DEPTHS:
      raise ValueError(f"config.{key}={depth!r} is not a ResNet depth; choose one of {list(_RESNET_DEPTHS)}.")
  low, high = config.data.augment.crop_scale
  if not 0.0 < low <= high <= 1.0:
    raise ValueError(f"config.data.augment.crop_scale={tuple(config.data.augment.crop_scale)} must satisfy "
                     "0 < low <= high <= 1 (BYOL uses (0.08, 1.0)).")


def uses_teacher(config) -> bool:
  """Whether the run holds a teacher network (SimDis-Off, SimDis-On or SEED)."""
  return config.method in ("simdis_off", "simdis_on", "seed")


def compute_dtype(config):
  """The networks' compute dtype: config.model.compute_dtype, with auto = bfloat16 on GPU/TPU, float32 on CPU."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  name = config.model.get("compute_dtype", "auto")
  if name == "auto":
    import jax  # pylint: disable=g-import-not-at-top
    name = "float32" if jax.default_backend() == "cpu" else "bfloat16"
  return jnp.dtype(name)


def conv_impl(config, model_config=None) -> str:
  """A network's convolution implementation: config.model.conv_impl, where auto = matmul on CPU for
  networks of width >= 32 (measured faster there: 64-px ResNet-50/18 steps ~3x) and xla otherwise
  (narrow networks such as the demo's: the gathered taps cost more than the slow gradients save)."""
  name = config.model.get("conv_impl", "auto")
  if name == "auto":
    import jax  # pylint: disable=g-import-not-at-top
    wide = model_config is None or model_config.width >= 32
    name = "matmul" if jax.default_backend() == "cpu" and wide else "xla"
  return name
