"""SimDis-Off into a deployable student (MobileNetV3, EfficientNet, ViT) from the frozen BYOL ResNet-50: one
preset per arch.

    python -m simdis_jax.main --config configs/imagenet/simdis_off_arch.py:<arch> \
        --workdir workdirs/imagenet_simdis_off_<arch> --config.teacher.workdir=workdirs/imagenet_byol_r50

<arch> (parameters with an ImageNet classifier, forward MACs at 224 px, feature size):
  mobilenet_v3_large  5.5 M, 0.22 G, 1280      efficientnet_b0  5.3 M, 0.39 G, 1280
  mobilenet_v3_small  2.5 M, 0.057 G, 1024     vit_tiny (DeiT-Ti/16)  5.7 M, 1.3 G, 192 (class token)
                                               vit_small (ViT-S/16)  22.1 M, 4.6 G, 384 (class token)

The teacher (online + EMA) is the student of the finished configs/imagenet/byol_r50_teacher.py run;
views {Ŝ-v', T̂-v'}; the projector and predictors keep the ResNet setting's MLPs (4096 -> 256, the
teacher's projection size); no stochastic depth (docs/architectures.md says why).
Convolutional students: the paper's standard setting, as for the ResNet-18 student
(configs/imagenet/simdis_off.py): LARS (BN parameters and biases excluded from adaptation), SyncBN,
batch 2048, base LR 0.3 x batch/256, 10 warm-up epochs, cosine, weight decay 1e-4, 100 epochs; their
BatchNorm keeps the reference's momentum/epsilon (docs/architectures.md).
ViT students are trained as self-supervised ViTs are (DINO's ViT-S/16 100-epoch recipe): AdamW
(b1 0.9, b2 0.999), batch 1024, base LR 5e-4 x batch/256 with 10 warm-up epochs and a cosine decay,
weight decay 0.04 on weight matrices only (LayerNorms, biases, the position embedding and the class
token are not decayed), patch 16, 100 epochs.
"""

from simdis_jax import configuration

ARCHS = ("mobilenet_v3_large", "mobilenet_v3_small", "efficientnet_b0", "vit_tiny", "vit_small")


def get_config(arch: str = "mobilenet_v3_small"):
  """SimDis-Off from the BYOL ResNet-50 into `arch` (one of ARCHS)."""
  if arch not in ARCHS:
    raise ValueError(
      f"Unknown student arch {arch!r} for configs/imagenet/simdis_off_arch.py; choose one of {ARCHS} "
      "(the ResNet-18 student is configs/imagenet/simdis_off.py)."
    )
  c = configuration.base_config()
  c.method = "simdis_off"
  c.views = configuration.VIEW_PRESETS["simdis_2v"]
  c.model.student = configuration.network_config(18, 64, False, 4096, 256, arch=arch, patch_size=16)
  c.teacher.workdir = "workdirs/imagenet_byol_r50"
  if arch.startswith("vit"):
    c.optim.name = "adamw"
    c.optim.momentum = 0.9  # AdamW's b1
    c.optim.base_lr = 5e-4
    c.optim.weight_decay = 0.04
    c.optim.weight_decay_mask = "kernels"
    c.optim.warmup_epochs = 10.0
    c.train.batch_size = 1024
  return c
