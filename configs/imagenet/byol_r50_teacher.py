"""BYOL ResNet-50 teacher on ImageNet-1k, the paper's standard setting (Section 4).

    python -m simdis_jax.main --config configs/imagenet/byol_r50_teacher.py --workdir workdirs/imagenet_byol_r50

LARS (authors' form) + SyncBN, batch 2048, base LR 0.3 × batch/256, 10 warm-up
epochs, cosine, weight decay 1e-4, EMA 0.99 → 1. 100 epochs by default
(--config.train.epochs=300 or 1000 for the longer rows of Table 1). This run
is the offline teacher of the SimDis-Off configs. A BYOL run trains one
network, and the code calls it `student` wherever it is stored (config.model.student,
the state's `student`, knn_top1/student): here that network is the ResNet-50
that SimDis-Off (config.teacher.workdir) restores as its frozen teacher. ImageNet comes from tfds
(`imagenet2012`): prepare it once (README, "Input") and pass
--config.data.data_dir, or --config.data.manual_dir to prepare on the first run.
"""

from simdis_jax import configuration


def get_config():
  """BYOL on ImageNet-1k with a ResNet-50 as its one network (stored as `student`, used as a teacher later)."""
  c = configuration.base_config()
  c.model.bn_running_var = "unbiased"  # the authors' PyTorch BN running variance (docs/export.md)
  c.method = "byol"
  c.views = configuration.VIEW_PRESETS["byol"]
  # The teacher-to-be is BYOL's one network, `student`; SimDis-Off checks it against its config.model.teacher.
  c.model.student = configuration.network_config(50, 64, False, 4096, 256)
  c.knn.networks = ("student",)
  return c
