"""Demo: SimDis-On-7v on Fashion-MNIST, small teacher + smaller student, ~5.4 min on 2 CPU cores.

Student: ResNet-10 layout (one basic block per stage, CIFAR stem) of width 8;
teacher: the same layout at width 12; projector/predictors 512 → 128. 500
steps of batch 128 (1.07 epochs) with LARS (authors' form) at base LR 6.0: a
short schedule needs a large rate (base 1.0 barely moved the kNN in 300
steps). Measured on a quiet 2-core box: ~0.5 s per step, the whole demo 322 s
(a width-16 teacher: ~0.6 s per step, 366 s; it learnt less in these 500
steps: kNN student 73.1 → 77.3, teacher 73.7 → 78.0, against 73.1 → 78.7 and
75.5 → 79.2 with width 12).

    python -m simdis_jax.main --config configs/demo_online.py --workdir workdirs/demo_online

Needs Debian's Fashion-MNIST (`apt-get install dataset-fashion-mnist`). The
console shows a progress bar, the kNN top-1 of the student and the teacher at
step 0 (the untrained networks of the same shape, for comparison) and at the
end, then the report and a table of the kNN / linear figures beside the
raw-pixel baselines; the full log is in <workdir>/log.txt.
"""

from simdis_jax import configuration


def get_config():
  c = configuration.base_config()
  c.method = "simdis_on"
  c.views = configuration.VIEW_PRESETS["simdis_7v"]
  c.model.student = configuration.network_config(depth=10, width=8, cifar_stem=True, hidden_dim=512, proj_dim=128)
  c.model.teacher = configuration.network_config(depth=10, width=12, cifar_stem=True, hidden_dim=512, proj_dim=128)
  c.optim.name = "lars"
  c.optim.base_lr = 6.0
  c.optim.warmup_epochs = 0.05
  c.optim.weight_decay = 1e-5
  c.train.batch_size = 128
  c.train.steps = 500
  c.train.log_every_steps = 25
  c.train.checkpoint_every_steps = 100
  c.train.knn_every_steps = 0
  c.data.name = "fashion_mnist"
  c.data.image_size = 28
  c.data.augment = configuration.fashion_mnist_augment()
  c.probe.enabled = True  # online linear probe on the student and teacher features
  c.probe.num_classes = 10
  # After pretraining: fast linear evaluation (cached features) of student and
  # teacher, then results.md + figures in <workdir>/report, printed at the end.
  c.final_eval.linear_networks = ("student", "teacher")
  c.final_eval.linear_mode = "fast"
  # Features of 10k training / 5k test images (the kNN's subsets) instead of all 70k: the feature
  # pass is most of the final evaluation (measured 0.30 / 0.58 CPU-s per 1000 images for student /
  # teacher: about 60 CPU-s for all 70k, 13 for 15k). The linear figures move with the smaller set.
  c.final_eval.linear_train_examples = 10000
  c.final_eval.linear_eval_examples = 5000
  c.final_eval.report = True
  c.knn.train_examples = 10000
  c.knn.eval_examples = 5000
  return c
