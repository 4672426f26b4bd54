"""Demo: SimDis-On-7v on Fashion-MNIST, small teacher + smaller student, <10 min on 2 CPU cores.

    python -m simdis_jax.main --config configs/demo.py --workdir workdirs/demo

Needs Debian's Fashion-MNIST (`apt-get install dataset-fashion-mnist`). Prints
the kNN top-1 of the student and the teacher at the end (and at step 0, i.e.
for the untrained networks of the same shape, for comparison).
"""

from simdis_jax import configuration
from simdis_jax.data import augment


def fashion_mnist_augment():
  """BYOL augmentations adapted to 28×28 grey images (no hue/saturation/greyscale)."""
  a = augment.default_config(1)
  a.crop_scale = (0.2, 1.0)   # 8% of 28×28 is a 8-pixel patch: too little of a garment
  a.blur_kernel_fraction = 0.1
  return a


def get_config():
  c = configuration.base_config()
  c.method = "simdis_on"
  c.views = configuration.VIEW_PRESETS["simdis_7v"]
  c.model.student = configuration.network_config(depth=10, width=16, cifar_stem=True, hidden_dim=512, proj_dim=128)
  c.model.teacher = configuration.network_config(depth=10, width=24, cifar_stem=True, hidden_dim=512, proj_dim=128)
  c.optim.name = "lars"
  c.optim.base_lr = 1.0
  c.optim.warmup_epochs = 0.05
  c.optim.weight_decay = 1e-5
  c.train.batch_size = 128
  c.train.steps = 300
  c.train.log_every_steps = 25
  c.train.checkpoint_every_steps = 100
  c.train.knn_every_steps = 0
  c.data.name = "fashion_mnist"
  c.data.image_size = 28
  c.data.augment = fashion_mnist_augment()
  c.knn.train_examples = 10000
  c.knn.eval_examples = 5000
  return c
