"""SimDis-On-7v (Table 1): online distillation predicting all seven target views.

python -m simdis_jax.main --config configs/imagenet/simdis_on_7v.py --workdir workdirs/imagenet_simdis_on_7v
"""

from simdis_jax import configuration


def get_config():
  c = configuration.base_config()
  c.model.bn_running_var = "unbiased"  # the authors' PyTorch BN running variance (docs/export.md)
  c.method = "simdis_on"
  c.views = configuration.VIEW_PRESETS["simdis_7v"]
  return c
