"""The linear-evaluation schema: every key with its default, the two protocols, the modes, and validation.

Protocols (`config.protocol`, set with `apply_protocol`):
- ``authors``: Linear -> BatchNorm1d (affine; batch statistics while training,
  running statistics at test), SGD momentum 0.9, no weight decay,
  LR 0.001 x batch/256, 80 epochs, cosine to 0.
- ``deepmind``: plain Linear, SGD Nesterov momentum 0.9, LR 0.2 x batch/256,
  80 epochs, cosine to 0.
- ``custom``: whatever the optim/classifier keys say. A named protocol must
  match its preset (`validate` checks), so a results file that says "authors"
  really used the authors' settings.

Modes (`config.mode`): ``fast`` (features cached once with the eval
preprocessing, no augmentation) and ``full`` (random resized crop + flip and
the frozen encoder every step); see evaluation/linear.py.

`data.name=''` (the base default) takes the whole data section (name, data_dir,
image_size, allow_download, augment) from the pretraining run's config.json;
a non-empty `data.name` uses this config's data section as written. Either way
`data.train_examples` / `data.eval_examples` (0 = all) pick fixed random
subsets, to keep CPU runs and tests small.
"""

import ml_collections

from simdis_jax import configuration, runs
from simdis_jax import workdir as workdir_files
from simdis_jax.configuration import number, one_of, whole_number

TASK = workdir_files.LINEAR_EVAL_TASK
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
WEIGHTS = ("online", "ema")


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
  c.protocol = "authors"  # authors | deepmind | custom
  c.mode = "fast"  # fast (cached features) | full (augmented, encoder every step)

  c.pretrained = ml_collections.ConfigDict()
  c.pretrained.workdir = ""  # a simdis_jax pretraining --workdir
  c.pretrained.network = "student"  # student | teacher
  c.pretrained.weights = "online"  # online (the authors evaluate the online student) | ema
  c.pretrained.step = -1  # -1 = latest checkpoint
  c.pretrained.allow_unfinished = False

  c.classifier = ml_collections.ConfigDict()
  c.classifier.batch_norm = True  # Linear -> BatchNorm1d (authors) | plain Linear (DeepMind)

  c.optim = ml_collections.ConfigDict()
  c.optim.base_lr = 0.001  # x batch/256, cosine to 0, no warm-up
  c.optim.momentum = 0.9
  c.optim.nesterov = False
  c.optim.weight_decay = 0.0

  c.train = ml_collections.ConfigDict()
  c.train.epochs = PROTOCOL_EPOCHS
  c.train.steps = -1  # > 0 overrides epochs
  c.train.batch_size = 256  # global, over all devices and hosts
  c.train.log_every_steps = 100
  c.train.checkpoint_every_steps = 1000
  c.train.keep_checkpoints = 2

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 512  # feature extraction / held-out batches

  # name "" = the pretraining run's whole data section; full mode uses only crop/flip, mean/std, eval_crop_fraction.
  c.data = configuration.data_config(name="")
  c.data.train_examples = 0  # 0 = the whole train split
  c.data.eval_examples = 0  # 0 = the whole held-out split
  return apply_protocol(c, "authors")


# The linear-eval schema's per-key rules, walked by the pretraining schema's walker.
RULES = (
  one_of("protocol", ("custom",) + tuple(PROTOCOLS)),
  one_of("mode", MODES),
  one_of("pretrained.network", configuration.NETWORK_NAMES),
  one_of("pretrained.weights", WEIGHTS),
  whole_number("pretrained.step", -1, hint="-1 = the latest checkpoint"),
  whole_number("train.batch_size"),
  whole_number("train.log_every_steps"),
  whole_number("train.checkpoint_every_steps"),
  whole_number("train.keep_checkpoints"),
  whole_number("eval.batch_size"),
  whole_number("data.image_size"),
  whole_number("data.train_examples", 0, hint="0 = the whole split"),
  whole_number("data.eval_examples", 0, hint="0 = the whole split"),
  number("optim.base_lr", above=0.0),
  number("optim.weight_decay", low=0.0),
  number("optim.momentum", low=0.0, below=1.0, hint="the protocols use 0.9"),
)


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Raises ValueError naming the key and the fix for any bad linear-eval value; returns the config."""
  if config.get("task") != TASK:
    raise ValueError(
      f"config.task={config.get('task')!r}: a linear-eval config has task={TASK!r} "
      "(start from simdis_jax.evaluation.linear_config.base_config())."
    )
  # Same unknown-key / type rules and the same walker as the pretraining schema, against this schema.
  configuration.check_keys(config, base_config())
  configuration.check_rules(config, RULES)
  configuration.check_schedule(config)
  if config.protocol in PROTOCOLS:
    preset = PROTOCOLS[config.protocol]
    got = dict(batch_norm=config.classifier.batch_norm, **{k: config.optim[k] for k in preset if k != "batch_norm"})
    diffs = [
      f"{'classifier' if k == 'batch_norm' else 'optim'}.{k}={got[k]!r} (the protocol uses {v!r})"
      for k, v in preset.items()
      if got[k] != v
    ]
    if diffs:
      raise ValueError(
        f"config.protocol={config.protocol!r} but " + ", ".join(diffs) + ". Use "
        f"linear_config.apply_protocol(config, {config.protocol!r}) (or the config file's argument) to switch "
        "protocols, or set --config.protocol=custom to run your own settings."
      )
  return config


def resolve_data_config(config, run_config) -> ml_collections.ConfigDict:
  """The data section to evaluate on: the pretraining run's when data.name is '', else this config's."""
  if config.data.name:
    data = ml_collections.ConfigDict(config.data.to_dict())
  else:
    data = ml_collections.ConfigDict(run_config.data.to_dict())
    data.train_examples = config.data.train_examples
    data.eval_examples = config.data.eval_examples
  pre = run_config.data.name
  channels, pre_channels = runs.image_channels(data.name), runs.image_channels(pre)
  if channels != pre_channels:
    raise ValueError(
      f"config.data.name={data.name!r} has {channels} channel(s) but the pretrained "
      f"encoder saw {pre!r} ({pre_channels} channel(s)); evaluate on matching images."
    )
  return data


def train_augment_config(aug_config) -> ml_collections.ConfigDict:
  """A copy of the augmentation config doing only random resized crop + flip (full-mode training)."""
  settings = aug_config.to_dict()
  # A bare 0.0 applies to both views (augment._per_view); rebuilding avoids the per-view tuple's type lock.
  settings.update(jitter_prob=0.0, grey_prob=0.0, blur_prob=0.0, solarize_prob=0.0)
  return ml_collections.ConfigDict(settings)
