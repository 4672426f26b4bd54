"""SimDis-Off into MobileNetV3-Large (5.5 M parameters with an ImageNet classifier, 0.22 G MACs, 1280-d feature),
from the frozen BYOL ResNet-50.

    python -m simdis_jax.main --config configs/imagenet/simdis_off_mobilenet_v3_large.py \
        --workdir workdirs/imagenet_simdis_off_mobilenet_v3_large --config.teacher.workdir=workdirs/imagenet_byol_r50

The teacher (online + EMA) is the student of the finished configs/imagenet/byol_r50_teacher.py run;
views {Ŝ-v', T̂-v'}. Everything else is the paper's standard setting, as for the ResNet-18 student
(configs/imagenet/simdis_off.py): LARS (BN parameters and biases excluded from adaptation), SyncBN,
batch 2048, base LR 0.3 x batch/256, 10 warm-up epochs, cosine, weight decay 1e-4, 100 epochs.
The student's BatchNorm keeps torchvision's momentum/epsilon for this network (docs/architectures.md).
"""

from simdis_jax import configuration


def get_config():
  c = configuration.base_config()
  c.method = "simdis_off"
  c.views = configuration.VIEW_PRESETS["simdis_2v"]
  c.model.student = configuration.network_config(18, 64, False, 4096, 256, arch="mobilenet_v3_large")
  c.teacher.workdir = "workdirs/imagenet_byol_r50"
  return c
