"""SimSiam on Fashion-MNIST: the study's student alone, or a SimSiam teacher distilled online (SimDis-On).

    python -m simdis_jax.main --config configs/fashion_mnist/simsiam.py --workdir workdirs/fmnist_simsiam
    python -m simdis_jax.main --config configs/fashion_mnist/simsiam.py:teacher --workdir workdirs/fmnist_simsiam_on

Student: the study's (ResNet-10 layout of width 8, CIFAR stem, 28x28 grey); SimSiam's heads scaled down
from 2048 -> 2048 -> 2048 and 2048 -> 512 -> 2048 to 512 -> 512 -> 512 and 512 -> 128 -> 512. SimSiam's
recipe (methods/simsiam.py `recipe`: SGD, momentum 0.9, wd 1e-4, cosine, predictor at a fixed rate,
MoCo-v2's augmentations) at base LR 0.5 x batch/256 (the official 0.05 moves a 300-step run too little),
300 steps of batch 128, kNN (k=20) on 10k training / 5k test images before and after, as the demo.
`:teacher`: SimDis-On whose teacher (the study's ResNet-18 layout of width 16) trains by SimSiam beside
the distilled student; a SimSiam teacher has no EMA network, so the student's views are its own Ŝ-v'
and the online teacher's T-v, T-v' (the T̂ views are rejected by the config check). SimDis-On has one
optimizer (config.optim's), so there the teacher's predictor follows the schedule like everything else.
Measured: kNN top-1 73.08 (untrained) -> 76.48 after the 300 steps (docs/methods.md "SimSiam").
"""

from simdis_jax import config_files, configuration
from simdis_jax.methods import recipes, simsiam

STEPS = 300


def get_config(variant: str = ""):
  """SimSiam on the study's student ("") or SimDis-On with a SimSiam teacher ("teacher")."""
  presets = config_files.sibling(__file__, "presets.py")
  c = presets.get_config("byol_student")
  c.teacher.workdir = ""
  simsiam.recipe(c, epochs=presets.EPOCHS)
  c.model.student.hidden_dim, c.model.student.proj_dim = 512, 512
  c.simsiam.predictor_dim = 128
  c.data.augment = recipes.moco_v2_augment(1)
  c.data.augment.crop_scale = configuration.fashion_mnist_augment().crop_scale
  c.optim.base_lr = 0.5
  if variant == "teacher":
    c.method = "simdis_on"
    c.views = ("sema_dv", "t_sv", "t_dv")
    c.teacher.method = "simsiam"
    c.model.teacher.hidden_dim, c.model.teacher.proj_dim = 512, 512
    c.knn.networks = ("student", "teacher")
  elif variant:
    raise ValueError(f"Unknown variant {variant!r}: use configs/fashion_mnist/simsiam.py or .../simsiam.py:teacher.")
  c.train.steps = STEPS
  c.train.log_every_steps = 25
  c.train.checkpoint_every_steps = 100
  c.knn.train_examples = 10000
  c.knn.eval_examples = 5000
  c.final_eval.linear_networks = ()
  return c
