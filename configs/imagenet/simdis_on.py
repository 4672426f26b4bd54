"""SimDis-On (Table 1): ResNet-18 student and ResNet-50 teacher trained together, 2 views.

    python -m simdis_jax.main --config configs/imagenet/simdis_on.py --workdir workdirs/imagenet_simdis_on

Views {Ŝ-v', T̂-v'}; total loss = student loss + teacher BYOL loss; one LARS
optimizer over both. Standard setting: SyncBN, batch 2048, 100 epochs.
"""

from simdis_jax import configuration


def get_config():
  c = configuration.base_config()
  c.model.bn_running_var = "unbiased"  # the authors' PyTorch BN running variance (docs/export.md)
  c.method = "simdis_on"
  c.views = configuration.VIEW_PRESETS["simdis_2v"]
  return c
