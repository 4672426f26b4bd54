"""Study v3's presets: Fashion-MNIST with a validation split, every method swept alike, a teacher per schedule.

    python -m simdis_jax.main --config configs/fashion_mnist/v3.py:<base>_lr<m>_e<N> --workdir <dir> \
        [--config.seed=S] [--config.teacher.workdir=<the byol_teacher_lr<m>_e<N> run, seed 0>]

The whole study: `python -m simdis_jax.study --config configs/fashion_mnist/study_v3.py --workdir workdirs/v3`.

<base>  byol_teacher (BYOL on the teacher network, ResNet-10 w16), byol_student (the student alone, ResNet-10
        w8), simdis_off_7v, simdis_on_7v, simdis_off_2v, simdis_on_2v, seed, moco_v2, supervised_standard;
        untrained_student takes no suffix (the student's initial weights, one step at learning rate 0).
<m>     the learning rate as a multiple of the method's own recipe rate (RECIPE_LR): 0.3, 1 or 3 is the sweep's
        grid (it spans 10x); 0.1 and 9 extend it where the best of the three lies at an edge.
<N>     the schedule in epochs of the 50,000 training images (390 steps of 128): 5 or 10.

What every preset shares (configs/fashion_mnist/presets.py gives the networks, views, augmentations and
recipes; configs/fashion_mnist/long.py the teacher network):
  data: `data.holdout="validation"`: pretraining sees the 50,000 training images of the fixed split, and the
    kNN monitor (k=20, the 50k as the bank) reads the 10,000 validation images; the test set is not read.
    The study evaluates the chosen runs on the test set afterwards, once (study_v3.py);
  no linear evaluation after pretraining (the study's test evaluation runs the linear probe);
  kNN every epoch at 5 epochs, every 2 at 10; the frozen teacher of an offline run is not re-measured (its own
    run holds its curve); a checkpoint every half epoch (195 steps);
  LARS methods (BYOL, SimDis): warm-up 1 epoch from 0, then cosine; SEED: its ramp is flat here (it starts at
    SEED's unscaled rate and ends at the rate scaled by batch/256; at batch 128 that would lower the rate
    during the warm-up, so both ends are the scaled rate: the flat ramp SEED's code gives at batch 256), 1
    epoch, then cosine; MoCo-v2 and torchvision's supervised recipe: no warm-up, as their authors;
  MoCo-v2 runs on 8 devices (MOCO_DEVICES; on one CPU `XLA_FLAGS=--xla_force_host_platform_device_count=8`,
    which the study sets for it): per-device BN over 16 images each, so the key encoder's shuffled batch
    never shares BN statistics with its queries (shuffle BN); on one device shuffle BN is a no-op.
"""

import re

from simdis_jax import config_files

EPOCHS = (5, 10)
STEPS_PER_EPOCH = 390  # 50,000 // 128
SWEEP_MULTIPLIERS = ("0.3", "1", "3")  # the grid every method is swept on (spans 10x)
EDGE_MULTIPLIERS = ("0.1", "9")  # one more point where the best of the grid lies at its edge
MOCO_DEVICES = 8
# The recipe's base learning rate (× batch/256) that <m> multiplies.
RECIPE_LR = {"lars": 6.0, "moco_v2": 0.03, "seed": 0.03, "supervised_standard": 0.1}
TEACHER_WORKDIR = "workdirs/v3/byol_teacher_lr1_e10/seed0"  # the study passes the chosen teacher's


def split(name: str):
  """'simdis_off_7v_lr0.3_e10' -> ('simdis_off_7v', '0.3', 10); 'untrained_student' -> (name, '', 0)."""
  if name == "untrained_student":
    return name, "", 0
  match = re.fullmatch(r"(.+)_lr(\d+(?:\.\d+)?)_e(\d+)", name)
  if not match:
    raise ValueError(f"Study v3 preset {name!r} must look like '<base>_lr<m>_e<epochs>', e.g. 'simdis_off_7v_lr1_e10'.")
  return match.group(1), match.group(2), int(match.group(3))


def recipe_lr(config) -> float:
  """The base learning rate the preset's multiplier applies to."""
  if config.optim.name == "lars":
    return RECIPE_LR["lars"]
  if config.method in ("moco_v2", "seed"):
    return RECIPE_LR[config.method]
  return RECIPE_LR["supervised_standard"]


def get_config(name: str = "simdis_off_7v_lr1_e10"):
  """The preset `<base>_lr<m>_e<epochs>`."""
  base, multiplier, epochs = split(name)
  if base != "untrained_student":
    if multiplier not in SWEEP_MULTIPLIERS + EDGE_MULTIPLIERS:
      raise ValueError(f"{name!r}: the learning-rate multiplier must be one of {SWEEP_MULTIPLIERS + EDGE_MULTIPLIERS}.")
    if epochs not in EPOCHS:
      raise ValueError(f"{name!r}: study v3's schedules are {EPOCHS} epochs.")
  long = config_files.sibling(__file__, "long.py")
  c = config_files.sibling(__file__, "presets.py").get_config(base)
  c.model.teacher.depth, c.model.teacher.width = long.TEACHER["depth"], long.TEACHER["width"]
  if base == "byol_teacher":
    c.model.student = c.model.teacher.copy_and_resolve_references()
  if c.teacher.get("workdir"):
    c.teacher.workdir = TEACHER_WORKDIR
  c.data.holdout = "validation"
  c.final_eval.linear_networks = ()
  if c.method in ("simdis_off", "seed"):
    c.knn.networks = ("student",)
  if base == "untrained_student":
    return c  # one step at learning rate 0 (presets.py)
  c.train.epochs = float(epochs)
  c.train.checkpoint_every_steps = STEPS_PER_EPOCH // 2
  c.train.knn_every_steps = STEPS_PER_EPOCH * (1 if epochs <= 5 else 2)
  c.optim.base_lr = recipe_lr(c) * float(multiplier)
  if c.optim.name == "lars":
    c.optim.warmup_epochs = 1.0
    c.optim.warmup_init_lr = 0.0
  if base == "seed":
    c.optim.warmup_epochs = 1.0
    c.optim.warmup_init_lr = c.optim.base_lr * c.train.batch_size / 256  # flat: see the docstring
  if base == "supervised_standard":
    c.optim.step_epochs = epochs / 3.0  # torchvision's 30-of-90 epochs, scaled
  return c
