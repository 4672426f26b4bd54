"""BYOL ResNet-18 alone on ImageNet-1k (the no-distillation baseline), standard setting.

python -m simdis_jax.main --config configs/imagenet/byol_r18.py --workdir workdirs/imagenet_byol_r18
"""

from simdis_jax import configuration


def get_config():
  c = configuration.base_config()
  c.model.bn_running_var = "unbiased"  # the authors' PyTorch BN running variance (docs/export.md)
  c.method = "byol"
  c.views = configuration.VIEW_PRESETS["byol"]
  c.knn.networks = ("student",)
  return c
