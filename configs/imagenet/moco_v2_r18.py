"""MoCo-v2 ResNet-18 on ImageNet-1k (Figure 3), the authors' hyper-parameters (docs/spec.md "MoCo-v2").

    python -m simdis_jax.main --config configs/imagenet/moco_v2_r18.py:200 --workdir workdirs/imagenet_moco_v2_r18

The argument is the number of epochs (default 200, MoCo-v2's; Figure 3 uses 100, 300 and 1000).
Batch 256 (the authors' 8 GPUs × 32; LR 0.03 × batch/256), queue 65,536, T 0.2, momentum 0.999,
head 512 -> 512 -> 128 without BN, shuffle BN over the devices (per-device BN; on one device the
shuffle changes nothing: docs/methods.md), SGD wd 1e-4, cosine, no warm-up, aug_plus augmentations.
SyncBN instead of shuffle BN: --config.moco.shuffle_bn=False --config.model.sync_bn=True.
"""

from simdis_jax import configuration
from simdis_jax.methods import recipes


def get_config(epochs: str = "200"):
  c = configuration.base_config()
  c.model.bn_running_var = "unbiased"  # the authors' PyTorch BN running variance (docs/export.md)
  recipes.moco_v2(c, epochs=float(epochs))
  c.train.batch_size = 256
  return c
