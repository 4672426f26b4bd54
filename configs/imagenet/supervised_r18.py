"""Supervised ResNet-18 by torchvision's standard recipe: Figure 3's upper bound (docs/spec.md "Supervised").

    python -m simdis_jax.main --config configs/imagenet/supervised_r18.py --workdir workdirs/imagenet_supervised_r18

One random-resized crop (0.08, 1) + flip per image and step, batch 256, SGD momentum 0.9 at
0.1 × batch/256, wd 1e-4 on every parameter, 90 epochs, LR ×0.1 every 30 epochs, no warm-up.
Evaluated by its own classifier on the held-out split (summary: classifier_top1) and, with
final_eval.linear_networks, by the linear protocol. Not the `supervised` method's other use (the
Fashion-MNIST study's reference: two views, BYOL augmentations, LARS): docs/methods.md.
"""

from simdis_jax import configuration
from simdis_jax.methods import recipes


def get_config():
  c = configuration.base_config()
  c.model.bn_running_var = "unbiased"  # the authors' PyTorch BN running variance (docs/export.md)
  recipes.supervised_standard(c, epochs=90.0)
  c.train.batch_size = 256
  c.final_eval.linear_networks = ("student",)
  return c
