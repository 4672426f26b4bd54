"""SimDis-Off into ViT-Small/16 (22.1 M parameters with an ImageNet classifier, 4.6 G MACs, 384-d class token),
from the frozen BYOL ResNet-50.

    python -m simdis_jax.main --config configs/imagenet/simdis_off_vit_small.py \
        --workdir workdirs/imagenet_simdis_off_vit_small --config.teacher.workdir=workdirs/imagenet_byol_r50

The teacher (online + EMA) is the student of the finished configs/imagenet/byol_r50_teacher.py run;
views {Ŝ-v', T̂-v'}. A ViT student is trained as self-supervised ViTs are (DINO's ViT-S/16 100-epoch
recipe): AdamW (b1 0.9, b2 0.999), batch 1024, base LR 5e-4 x batch/256 with 10 warm-up epochs and a
cosine decay, weight decay 0.04 on weight matrices only (LayerNorms, biases, the position embedding and
the class token are not decayed), no stochastic depth, 100 epochs. The projector and predictors keep
the ResNet setting's MLPs (4096 -> 256, the teacher's projection size).
"""

from simdis_jax import configuration


def get_config():
  c = configuration.base_config()
  c.method = "simdis_off"
  c.views = configuration.VIEW_PRESETS["simdis_2v"]
  c.model.student = configuration.network_config(18, 64, False, 4096, 256, arch="vit_small", patch_size=16)
  c.teacher.workdir = "workdirs/imagenet_byol_r50"
  c.optim.name = "adamw"
  c.optim.momentum = 0.9  # AdamW's b1
  c.optim.base_lr = 5e-4
  c.optim.weight_decay = 0.04
  c.optim.weight_decay_mask = "kernels"
  c.optim.warmup_epochs = 10.0
  c.train.batch_size = 1024
  return c
