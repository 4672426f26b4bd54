"""SEED: ResNet-18 distilled from the frozen BYOL ResNet-50 teacher run (Figure 3; docs/spec.md "SEED").

    python -m simdis_jax.main --config configs/imagenet/seed_r18.py:200 --workdir workdirs/imagenet_seed_r18 \
        --config.teacher.workdir=workdirs/imagenet_byol_r50

The argument is the number of epochs (default 200, SEED's). The teacher is the student of the
finished configs/imagenet/byol_r50_teacher.py run (as SimDis-Off's), in eval mode; its signal is its
256-d projector output, so the student's head is 512 -> 512 -> 256 without BN. One view per image,
queue 65,536 teacher embeddings, τ_s 0.2, τ_t 1e-4, batch 256, SGD 0.03 × batch/256 with a 5-epoch
ramp, wd 1e-4, cosine, per-device BN, aug_plus augmentations.
"""

from simdis_jax import configuration
from simdis_jax.methods import recipes


def get_config(epochs: str = "200"):
  c = configuration.base_config()
  c.model.bn_running_var = "unbiased"  # the authors' PyTorch BN running variance (docs/export.md)
  c.teacher.workdir = "workdirs/imagenet_byol_r50"
  recipes.seed(c, epochs=float(epochs))
  c.train.batch_size = 256
  return c
