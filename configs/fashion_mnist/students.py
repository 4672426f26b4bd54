"""SimDis-Off on Fashion-MNIST into the deployable students, at the study's scale.

    python -m simdis_jax.main --config configs/fashion_mnist/students.py:<arch> --workdir <dir> \
        --config.teacher.workdir=<the byol_teacher run of configs/fashion_mnist/presets.py>

<arch>: mobilenet_v3_large | mobilenet_v3_small | efficientnet_b0 | vit_tiny | vit_small.

Everything is the study's `simdis_off_2v` preset (configs/fashion_mnist/presets.py: 28 px grey images,
the ResNet-18 width-16 BYOL teacher, views Ŝ-v' + T̂-v', 3 epochs of batch 128, kNN and linear
evaluation) except the student:
  convolutional students: their CIFAR-style small-image variant (stride-1 stem, overall stride 8:
    28 -> 4x4 before pooling), full width, the study's LARS schedule;
  ViTs: patch 4 (7x7 = 49 tokens plus the class token), AdamW at base LR 5e-4 x batch/256 with the
    study's warm-up and cosine, weight decay 0.04 on weight matrices only.
These students are far larger than the study's width-8 ResNet-10 (e.g. MobileNetV3-Small at 28 px with
overall stride 8: ~14 M MACs per image, about 6x the study student's); their wall time on the study's CPU
has not been measured, and the ViT learning rate is DINO's, not tuned for 3 epochs.
"""

from simdis_jax import config_files

ARCHS = ("mobilenet_v3_large", "mobilenet_v3_small", "efficientnet_b0", "vit_tiny", "vit_small")


def get_config(arch: str = "mobilenet_v3_small"):
  """The study's simdis_off_2v preset with `arch` as the student."""
  if arch not in ARCHS:
    raise ValueError(f"Unknown student arch {arch!r} for configs/fashion_mnist/students.py; choose one of {ARCHS}.")
  presets = config_files.sibling(__file__, "presets.py")
  c = presets.get_config("simdis_off_2v")
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
