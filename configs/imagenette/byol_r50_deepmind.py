"""DeepMind's BYOL ResNet-50 recipe on Imagenette at 128 px, batch 256: a one-GPU run of the same recipe.

    python -m simdis_jax.main --config configs/imagenette/byol_r50_deepmind.py --workdir workdirs/imagenette_byol_r50_dm

Every value is that of configs/imagenet/byol_r50_deepmind.py (whose docstring cites each one's source
line in deepmind-research/byol), through the same function (simdis_jax.methods.recipes.deepmind_byol),
at batch 256 (LR 0.2 × 256/256) on Imagenette's 9,469 training images: 1000 epochs = 1000 × 9,469 // 256
= 36,988 steps, warm-up 10 × 9,469 // 256 = 369 steps from 0, the online classifier over 10 classes.
Only the data differ: tfds `imagenette/320px-v2` (as configs/imagenette/byol_r18.py, whose docstring says
how to prepare it offline), 128-px crops, evaluated on a 128/146 ≈ 0.875 centre crop.
"""

from simdis_jax import configuration
from simdis_jax.methods import recipes

IMAGENETTE_TRAIN = 9_469


def get_config():
  """DeepMind's BYOL ResNet-50 recipe on Imagenette (batch 256, 1000 epochs, 128 px)."""
  c = recipes.deepmind_byol(configuration.base_config(), 50, 256, 1000, IMAGENETTE_TRAIN, 10)
  c.data.name = "imagenette/320px-v2"
  c.data.allow_download = True
  c.data.image_size = 128
  c.train.checkpoint_every_steps = 1000
  c.train.knn_every_steps = 3600  # every 100 epochs (36 steps per epoch)
  c.final_eval.report = True
  return c
