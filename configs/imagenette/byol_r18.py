"""BYOL ResNet-18 on Imagenette at 128 px: a one-GPU check against a published Imagenette SSL benchmark.

    python -m simdis_jax.main --config configs/imagenette/byol_r18.py --workdir workdirs/imagenette_byol_r18

Reference figure: Lightly's self-supervised benchmark ("ImageNette" table,
https://docs.lightly.ai/self-supervised-learning/getting_started/benchmarks.html)
reports BYOL with a torchvision ResNet-18 on Imagenette (160-px version,
inputs resized to 128 px), batch 256, 800 epochs: kNN test accuracy 0.887
(k=200, temperature 0.1; script docs/source/getting_started/benchmarks/
imagenette_benchmark.py of lightly-ai/lightly). That is a kNN figure after
800 epochs with Lightly's own recipe (SGD, SimCLR augmentations), not a linear
top-1 of this recipe: compare this run's kNN top-1 (k=20 here; also
`python -m simdis_jax.evaluation.knn --k 200 --temperature 0.1`) with it, and
expect the linear top-1 at the end to be somewhat higher. No DeepMind BYOL
figure for Imagenette is published (their README gives ImageNet only).

The recipe follows DeepMind BYOL's ImageNet settings at batch 256: ResNet-18
(ImageNet stem), 128 px crops, 1000 epochs, their LARS form (LR outside
momentum), base LR 0.2 × batch/256, 10 warm-up epochs from 0 (DeepMind's
schedules.py starts at 0; it computes the warm-up rate in float32, which is
not copied: here it is the step's dtype), weight decay 1.5e-6 (not on biases /
BN), EMA 0.996 → 1 after the update, projector/predictor 4096 → 256, SyncBN.
The network is torchvision's ResNet-18 with torchvision's init, one-average BN,
biased final head layers and the project's own probe; DeepMind's network and
online classifier too are configs/imagenette/byol_r50_deepmind.py (recipe
knob by knob: docs/recipes.md). The linear evaluation at the end is DeepMind's protocol
(Nesterov, LR 0.2 × batch/256, 80 epochs, full mode: random resized crop +
flip; eval: centre crop of 128/146 ≈ 0.875 of the short side).

Data: tfds `imagenette/320px-v2` (9,469 train / 3,925 validation images, 10
classes; the 320-px version decodes faster and is ample for 128-px crops).
tfds downloads it on the first run (allow_download=True); on an offline
machine run `tfds build imagenette/320px-v2 --data_dir <dir>` elsewhere, copy
the folder and pass --config.data.data_dir=<dir> --config.data.allow_download=False.
"""

from simdis_jax import configuration


def get_config():
  c = configuration.base_config()
  c.method = "byol"
  c.views = configuration.VIEW_PRESETS["byol"]
  c.model.student = configuration.network_config(18, 64, False, 4096, 256)
  c.model.ema_init = "separate"
  c.ema.base = 0.996
  c.ema.timing = "after"
  c.optim.name = "lars"
  c.optim.lars_form = "deepmind"
  c.optim.base_lr = 0.2
  c.optim.weight_decay = 1.5e-6
  c.optim.weight_decay_mask = "kernels"
  c.optim.warmup_epochs = 10.0
  c.optim.warmup_init_lr = 0.0  # DeepMind's warm-up starts at 0 (byol/utils/schedules.py:34-37)
  c.train.batch_size = 256
  c.train.epochs = 1000.0
  c.train.checkpoint_every_steps = 1000
  c.train.knn_every_steps = 3700  # every 100 epochs (37 steps per epoch)
  c.data.name = "imagenette/320px-v2"
  c.data.allow_download = True
  c.data.pretrain_split = "train"
  c.data.train_split = "train"
  c.data.eval_split = "validation"
  c.data.image_size = 128
  c.data.augment.eval_crop_fraction = 0.875
  c.knn.networks = ("student",)
  c.probe.enabled = True
  c.probe.num_classes = 10
  c.final_eval.linear_networks = ("student",)
  c.final_eval.linear_protocol = "deepmind"
  c.final_eval.linear_mode = "full"
  c.final_eval.report = True
  return c
