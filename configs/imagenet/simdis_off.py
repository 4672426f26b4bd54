"""SimDis-Off (Table 1): ResNet-18 student distilled from a frozen BYOL ResNet-50, 2 views.

    python -m simdis_jax.main --config configs/imagenet/simdis_off.py --workdir workdirs/imagenet_simdis_off \
        --config.teacher.workdir=workdirs/imagenet_byol_r50

Views {Ŝ-v', T̂-v'}; the teacher (online + EMA) is the student of the finished
byol_r50_teacher run. Standard setting: LARS + SyncBN, batch 2048, 100 epochs.
"""

from simdis_jax import configuration


def get_config():
  c = configuration.base_config()
  c.model.bn_running_var = "unbiased"  # the authors' PyTorch BN running variance (docs/export.md)
  c.method = "simdis_off"
  c.views = configuration.VIEW_PRESETS["simdis_2v"]
  c.teacher.workdir = "workdirs/imagenet_byol_r50"
  return c
