"""SimCLR on Fashion-MNIST: the study's student alone, or a SimCLR teacher distilled online (SimDis-On).

    python -m simdis_jax.main --config configs/fashion_mnist/simclr.py --workdir workdirs/fmnist_simclr
    python -m simdis_jax.main --config configs/fashion_mnist/simclr.py:teacher --workdir workdirs/fmnist_simclr_on

Student: the study's (ResNet-10 layout of width 8, CIFAR stem, 28x28 grey); SimCLR's head scaled down from
2048 -> 2048 -> 128 to 512 -> 512 -> 128 (BN after both Linears). SimCLR's recipe (methods/simclr.py `recipe`:
SimCLR's LARS, wd 1e-6, warm-up then cosine) at the paper's square-root scaling for small batches
(0.075 x sqrt(batch) = 0.85 at batch 128, i.e. base LR 1.7 x batch/256), warm-up 20 of the 200 steps,
temperature 0.2 (the paper's option for small batches), the study's augmentations (colour ops are identities
on one channel), kNN (k=20) on 10k training / 5k test images before and after, as the demo.
`:teacher`: SimDis-On whose teacher (the study's ResNet-18 layout of width 16) trains by SimCLR beside the
distilled student; a SimCLR teacher has no EMA network, so the student's views are its own Ŝ-v' and the
online teacher's T-v, T-v' (the T̂ views are rejected by the config check).
Measured: kNN top-1 73.08 (untrained) -> 77.66 after the 200 steps (docs/methods.md "SimCLR").
"""

from simdis_jax import config_files, configuration
from simdis_jax.methods import simclr

STEPS = 200


def get_config(variant: str = ""):
  """SimCLR on the study's student ("") or SimDis-On with a SimCLR teacher ("teacher")."""
  presets = config_files.sibling(__file__, "presets.py")
  c = presets.get_config("byol_student")
  c.teacher.workdir = ""
  simclr.recipe(c, epochs=presets.EPOCHS)
  c.model.student.hidden_dim, c.model.student.proj_dim = 512, 128
  c.model.sync_bn = True
  c.data.augment = configuration.fashion_mnist_augment()
  c.data.augment.blur_prob = (0.5, 0.5)
  c.data.augment.solarize_prob = (0.0, 0.0)
  c.simclr.temperature = 0.2
  c.optim.base_lr = 1.7
  c.train.steps = STEPS
  c.optim.warmup_epochs = 20 / (60_000 // presets.BATCH)  # 20 steps
  if variant == "teacher":
    c.method = "simdis_on"
    c.views = ("sema_dv", "t_sv", "t_dv")
    c.teacher.method = "simclr"
    c.model.teacher.hidden_dim, c.model.teacher.proj_dim = 512, 128
    c.knn.networks = ("student", "teacher")
  elif variant:
    raise ValueError(f"Unknown variant {variant!r}: use configs/fashion_mnist/simclr.py or .../simclr.py:teacher.")
  c.train.log_every_steps = 25
  c.train.checkpoint_every_steps = 100
  c.knn.train_examples = 10000
  c.knn.eval_examples = 5000
  c.final_eval.linear_networks = ()
  return c
