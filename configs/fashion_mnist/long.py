"""The long-schedule Fashion-MNIST study's presets: where self-supervision beats raw pixels.

    python -m simdis_jax.main --config configs/fashion_mnist/long.py:<preset>_e<epochs> --workdir <dir> \
        [--config.seed=S] [--config.teacher.workdir=<the byol_teacher_e20 run>]

<preset> is any preset of configs/fashion_mnist/presets.py (byol_teacher, byol_student, simdis_off_7v,
simdis_on_7v, seed, moco_v2, supervised, ...) and <epochs> one of EPOCHS, e.g. `simdis_off_7v_e20`.
The whole study: `python -m simdis_jax.study --config configs/fashion_mnist/study_long.py --workdir
workdirs/fmnist_long`.

What differs from the 3-epoch study's presets, and why (the pilot in results/fashion_mnist/pilot/):
  schedule: 5, 10 or 20 epochs of batch 128 (the paper's 100/300/1000-epoch axis, scaled); warm-up
    1 epoch, then cosine, LARS at base LR 6.0 as before. The BYOL student alone reached kNN 87.25
    after 20 epochs (seed 0), 2.65 over raw pixels (84.6), where 10 epochs plateaued at 86.15;
  teacher: ResNet-10 width 16 (one basic block per stage; about 4x the student's multiply-adds),
    trained once for 20 epochs and shared by every offline student, whatever the student's schedule
    (an offline teacher is a finished model); the 3-epoch study's ResNet-18 w16 would cost 2x per
    step, and the online runs (SimDis-On) train one teacher each;
  monitoring: kNN every 2 epochs (every epoch at 5 epochs), so each run leaves its own curve;
  checkpoints every half epoch (234 steps).
The student (ResNet-10 w8), the data, the augmentations, the views, the evaluation are the 3-epoch
study's.
"""

import re

from simdis_jax import config_files

EPOCHS = (5, 10, 20)
TEACHER_EPOCHS = 20
TEACHER = dict(depth=10, width=16, cifar_stem=True, hidden_dim=512, proj_dim=128)
WARMUP_EPOCHS = 1.0
STEPS_PER_EPOCH = 468  # 60,000 // 128
TEACHER_WORKDIR = "workdirs/fmnist_long/byol_teacher_e20/seed0"  # the study passes its own


def split(name: str):
  """'simdis_off_7v_e20' -> ('simdis_off_7v', 20); 'untrained_student' -> ('untrained_student', 0)."""
  if name == "untrained_student":
    return name, 0
  match = re.fullmatch(r"(.+)_e(\d+)", name)
  if not match:
    raise ValueError(f"Long-study preset {name!r} must look like '<preset>_e<epochs>', e.g. 'simdis_off_7v_e20'.")
  return match.group(1), int(match.group(2))


def get_config(name: str = "simdis_off_7v_e20"):
  """The preset `<base>_e<epochs>`: the 3-epoch study's <base> on the long schedule."""
  base, epochs = split(name)
  short = config_files.sibling(__file__, "presets.py")  # the 3-epoch study's presets
  if base not in short.PRESETS:
    raise ValueError(f"Unknown preset {base!r} in {name!r}; choose one of {sorted(short.PRESETS)}.")
  if base == "untrained_student":
    epochs = EPOCHS[-1]  # not trained: one step at learning rate 0 (presets.py)
  elif epochs not in EPOCHS:
    raise ValueError(f"{name!r}: the long study's schedules are {EPOCHS} epochs.")
  if base == "byol_teacher" and epochs != TEACHER_EPOCHS:
    raise ValueError(f"The offline teacher is trained for {TEACHER_EPOCHS} epochs: use byol_teacher_e{TEACHER_EPOCHS}.")
  c = short.get_config(base)
  c.model.teacher.depth = TEACHER["depth"]
  c.model.teacher.width = TEACHER["width"]
  if base == "byol_teacher":
    c.model.student = c.model.teacher.copy_and_resolve_references()
  if c.teacher.get("workdir"):
    c.teacher.workdir = TEACHER_WORKDIR
  if base == "untrained_student":
    return c  # one step at learning rate 0, whatever the schedule
  c.train.epochs = float(epochs)
  c.train.checkpoint_every_steps = STEPS_PER_EPOCH // 2
  c.train.knn_every_steps = STEPS_PER_EPOCH * (1 if epochs <= 5 else 2)
  if c.optim.name == "lars" or base == "seed":
    c.optim.warmup_epochs = WARMUP_EPOCHS  # MoCo-v2 and torchvision's recipe have no warm-up
  if base == "supervised_standard":
    c.optim.step_epochs = epochs / 3.0  # torchvision's 30-of-90 epochs, scaled
  return c
