"""Figure 3's other systems as whole runs on Fashion-MNIST: SEED from a BYOL teacher run, supervised by the recipe.

Measured on 2 devices (60 steps of batch 64 at 16 px, the tests' ResNet-10 w4 student, kNN on 2,000 / 1,000 images;
300 steps in brackets): supervised_standard 64.5% -> 70.1% (75.9%); MoCo-v2 64.5% -> 59.0% (62.9%);
SEED from a 60- (300-) step BYOL teacher 64.5% -> 56.5% (64.8%); BYOL itself 67.6% -> 65.8% (64.3%).
Random convolutional features are already a strong kNN baseline on Fashion-MNIST, and the
self-supervised methods do not beat it within a test's budget on 2 CPU cores: docs/methods.md says so,
and the tests below assert an improvement only where it is reliable (the supervised recipe).
"""

import jax
import numpy as np

from conftest import requires_fashion_mnist, tiny_config
from simdis_jax import train
from simdis_jax.methods import recipes
from test_train import final_state

pytestmark = requires_fashion_mnist


def test_seed_distils_from_a_finished_byol_run_restored_as_simdis_off_restores_it(tmp_path):
  teacher = tiny_config("byol", "byol")
  teacher.model.student = teacher.model.teacher
  teacher.knn.networks = ()
  teacher.train.steps = 2
  train.train_and_evaluate(teacher, str(tmp_path / "teacher"))
  _, t_state = final_state(str(tmp_path / "teacher"), teacher)

  c = tiny_config("byol", "byol")
  c.teacher.workdir = str(tmp_path / "teacher")
  recipes.seed(c, epochs=1.0)
  c.train.steps = 4
  c.seed_distill.queue_size = 32
  c.optim.warmup_epochs = 0.0
  c.knn.networks = ("student",)
  result = train.train_and_evaluate(c, str(tmp_path / "seed"))
  _, s_state = final_state(str(tmp_path / "seed"), c)
  # The frozen teacher is the BYOL run's student, unchanged after 4 steps (eval mode: not even BN statistics).
  for key in ("params", "batch_stats"):
    for x, y in zip(jax.tree.leaves(t_state["student"][key]), jax.tree.leaves(s_state["teacher"][key])):
      np.testing.assert_array_equal(x, y)
  assert int(s_state["queue"]["ptr"]) == (4 * 16) % 32
  assert s_state["queue"]["queue"].shape == (32, c.model.teacher.proj_dim)
  assert np.isfinite(result["loss"]) and 0.0 <= result["contrast_top1"] <= 100.0


def test_supervised_recipe_improves_knn_and_reports_its_classifier(tmp_path):
  c = tiny_config("supervised", "byol")
  recipes.supervised_standard(c, epochs=1.0)
  c.train.steps = 60
  c.train.batch_size = 64
  c.train.checkpoint_every_steps = 60
  c.train.log_every_steps = 60
  c.data.augment.crop_scale = (0.2, 1.0)
  c.probe.num_classes = 10
  c.knn.train_examples = 2000
  c.knn.eval_examples = 1000
  c.knn.batch_size = 256
  result = train.train_and_evaluate(c, str(tmp_path))
  gain = result["knn_top1/student"] - result["knn_top1/student_init"]
  print(f"supervised_standard: kNN {result['knn_top1/student_init']:.1f}% -> {result['knn_top1/student']:.1f}%, "
        f"classifier {result['classifier_top1']:.1f}%")
  assert gain > 2.0  # measured +4.4 points here (8 fake devices), +5.6 on 2 devices
  assert 40.0 < result["classifier_top1"] <= 100.0  # ten classes: chance is 10%
  assert result["train_top1"] > 10.0
