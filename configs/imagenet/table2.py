"""Table 2 / Section 4.3: no LARS, no SyncBN, one 8-accelerator host, 100 epochs.

    python -m simdis_jax.main --config configs/imagenet/table2.py:<row>,<scheme> --workdir workdirs/t2_<row>_<scheme>

<row>: byol (student alone), t_sv, t_dv, tema_sv, tema_dv, t_sv_t_dv,
tema_sv_tema_dv, all_teacher, 7v; <scheme>: online | offline | teacher.
`teacher` trains the ResNet-50 BYOL teacher of the offline rows in this
setting (paper: 65.83% top-1); offline rows read it from
workdirs/t2_teacher (override --config.teacher.workdir). Setting: SGD
momentum 0.9, LR 0.05 × batch/256, batch 8×128 = 1024, per-device BN,
weight decay 1e-4, 10 warm-up epochs, cosine, EMA 0.99 → 1.
"""

from simdis_jax import configuration

ROWS = ("byol", "t_sv", "t_dv", "tema_sv", "tema_dv", "t_sv_t_dv", "tema_sv_tema_dv", "all_teacher", "7v")
SCHEMES = ("online", "offline", "teacher")


def get_config(arg: str = "7v,online"):
  row, _, scheme = arg.partition(",")
  if row not in ROWS or scheme not in SCHEMES:
    raise ValueError(f"table2.py takes '<row>,<scheme>' with row in {ROWS} and scheme in {SCHEMES}; got {arg!r}.")
  c = configuration.base_config()
  c.model.bn_running_var = "unbiased"  # the authors' PyTorch BN running variance (docs/export.md)
  c.optim.name = "sgd"
  c.optim.base_lr = 0.05
  c.model.sync_bn = False
  c.train.batch_size = 8 * 128
  c.train.epochs = 100.0
  if scheme == "teacher":
    c.method = "byol"
    c.views = configuration.VIEW_PRESETS["byol"]
    c.model.student = configuration.network_config(50, 64, False, 4096, 256)
    c.knn.networks = ("student",)
    return c
  if row == "byol":
    c.method = "byol"
    c.views = configuration.VIEW_PRESETS["byol"]
    c.knn.networks = ("student",)
    return c
  c.views = configuration.VIEW_PRESETS[f"table2_{row}"]
  c.method = "simdis_on" if scheme == "online" else "simdis_off"
  c.teacher.workdir = "workdirs/t2_teacher"
  return c
