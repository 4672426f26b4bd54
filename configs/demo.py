"""Demo: SimDis-On-7v on Fashion-MNIST, small teacher + smaller student, <10 min on 2 CPU cores.

    python -m simdis_jax.main --config configs/demo.py --workdir workdirs/demo

Needs Debian's Fashion-MNIST (`apt-get install dataset-fashion-mnist`). Prints
the kNN top-1 of the student and the teacher at the end (and at step 0, i.e.
for the untrained networks of the same shape, for comparison).
"""

from simdis_jax import configuration


def get_config():
  c = configuration.base_config()
  c.method = "simdis_on"
  c.views = configuration.VIEW_PRESETS["simdis_7v"]
  c.model.student = configuration.network_config(depth=10, width=16, cifar_stem=True, hidden_dim=512, proj_dim=128)
  c.model.teacher = configuration.network_config(depth=10, width=24, cifar_stem=True, hidden_dim=512, proj_dim=128)
  c.optim.name = "lars"
  c.optim.base_lr = 6.0
  c.optim.warmup_epochs = 0.05
  c.optim.weight_decay = 1e-5
  c.train.batch_size = 128
  c.train.steps = 300
  c.train.log_every_steps = 25
  c.train.checkpoint_every_steps = 100
  c.train.knn_every_steps = 0
  c.data.name = "fashion_mnist"
  c.data.image_size = 28
  c.data.augment = configuration.fashion_mnist_augment()
  c.knn.train_examples = 10000
  c.knn.eval_examples = 5000
  return c
