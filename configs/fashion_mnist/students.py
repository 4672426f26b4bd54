"""SimDis-Off on Fashion-MNIST into the deployable students, at the study's scale.

    python -m simdis_jax.main --config configs/fashion_mnist/students.py:<arch> --workdir <dir> \
        --config.teacher.workdir=<the byol_teacher run of configs/fashion_mnist/presets.py>
    python -m simdis_jax.main --config configs/fashion_mnist/students.py:<arch>,<preset>_e<epochs> --workdir <dir> \
        [--config.teacher.workdir=<the byol_teacher_e20 run of configs/fashion_mnist/long.py>]

<arch>: mobilenet_v3_large | mobilenet_v3_small | efficientnet_b0 | vit_tiny | vit_small.
`<arch>` alone is the 3-epoch study's `simdis_off_2v` preset with that student. `<arch>,<preset>_e<epochs>`
is the long study's preset (configs/fashion_mnist/long.py: 5, 10 or 20 epochs, warm-up 1 epoch, kNN every
2 epochs, the ResNet-10 w16 teacher trained for 20 epochs) with that student, e.g. the 10-epoch evidence
pair `mobilenet_v3_small,simdis_off_2v_e10` (distilled) and `mobilenet_v3_small,byol_student_e10` (the
same student trained alone by BYOL; the ViTs with their AdamW recipe below either way). Wall time of such
runs at the measured step costs: docs/architectures.md ("Cost at the study's shape").

Everything is the study's `simdis_off_2v` preset (configs/fashion_mnist/presets.py: 28 px grey images,
the ResNet-18 width-16 BYOL teacher, views Ŝ-v' + T̂-v', 3 epochs of batch 128, kNN and linear
evaluation) except the student:
  convolutional students: their CIFAR-style small-image variant (stride-1 stem, overall stride 8:
    28 -> 4x4 before pooling), full width, the study's LARS schedule;
  ViTs: patch 4 (7x7 = 49 tokens plus the class token), AdamW at base LR 5e-4 x batch/256 with the
    study's warm-up and cosine, weight decay 0.04 on weight matrices only.
These students are far larger than the study's width-8 ResNet-10 (e.g. MobileNetV3-Small at 28 px with
overall stride 8: ~13 M MACs per image, about 6x the study student's); their step costs on the study's
CPU are in docs/architectures.md (MobileNetV3-Small: ~4.7x the ResNet-10 w8 step), and the ViT learning
rate is DINO's, not tuned for 3 epochs.
"""

from simdis_jax import config_files

ARCHS = ("mobilenet_v3_large", "mobilenet_v3_small", "efficientnet_b0", "vit_tiny", "vit_small")


def get_config(spec: str = "mobilenet_v3_small"):
  """`<arch>`: the study's simdis_off_2v preset with `arch` as the student; `<arch>,<preset>_e<epochs>`: the
  long study's preset with it."""
  arch, _, long_preset = spec.partition(",")
  if arch not in ARCHS:
    raise ValueError(f"Unknown student arch {arch!r} for configs/fashion_mnist/students.py; choose one of {ARCHS}.")
  if long_preset:
    long = config_files.sibling(__file__, "long.py")
    base, _ = long.split(long_preset)
    if base in ("byol_teacher", "untrained_student"):
      raise ValueError(
        f"{spec!r}: {base} does not train a student; use e.g. {arch},simdis_off_2v_e10 or {arch},byol_student_e10."
      )
    c = long.get_config(long_preset)
  else:
    c = config_files.sibling(__file__, "presets.py").get_config("simdis_off_2v")
  c.model.student.arch = arch
  c.model.student.cifar_stem = True
  if arch.startswith("vit"):
    c.model.student.patch_size = 4
    c.optim.name = "adamw"
    c.optim.momentum = 0.9  # AdamW's b1
    c.optim.base_lr = 5e-4
    c.optim.weight_decay = 0.04
    c.optim.weight_decay_mask = "kernels"
  return c
