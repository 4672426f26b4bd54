"""Demo: SimDis-Off-7v on Fashion-MNIST distils the shipped BYOL teacher into a small student, 334 s on 2 CPU cores.

Teacher: the zoo's "fmnist/byol-r10w16" (ResNet-10 layout of width 16, CIFAR stem, BYOL for 20
epochs on Fashion-MNIST; kNN 88.25 on the full splits), frozen. Student: the same layout at width 8
(about a quarter of the teacher's multiply-adds), projector/predictors 512 -> 128. The student is
pretrained twice for the same STEPS steps of batch 128, from the same initial weights and data
order: with the teacher (SimDis-Off, all seven target views) in <workdir>, and alone (BYOL) in
<workdir>/alone; the final table puts both beside the teacher and raw pixels, every kNN on the
same 10k training / 5k test images. LARS (authors' form) at base LR 48, warm-up 0.1 epoch, then
cosine, on a newcomer's schedule; both students get this same recipe (optimizer, schedule, steps, seed,
data order).

The base LR was chosen on the validation split (--config.data.holdout=validation: 50k training images,
kNN queries from the other 10k; the test set unread) under a rule fixed beforehand: the highest kNN of
the distilled student among recipes of the same cost (400 steps), a gap under 0.3 counting as a tie
that the simpler recipe wins, and a best value at the edge of a grid extended by the next point out.
Distilled student at base LR 6 / 12 / 24 / 48 / 96: 83.0 / 83.9 / 84.6 / 84.9 / 82.9 (the study's
presets use 6, chosen for 5-10 epoch runs, not for 400 steps); EMA base 0.97 instead of 0.99: 83.6 at
LR 6, 83.9 at LR 12 (a tie); batch 64 for 800 steps at LR 6: 82.7. The student alone barely
depends on the rate: 75.9 / 75.3 / 75.9 at LR 6 / 24 / 48, so the shared recipe is its best too.
Raw pixels there: 82.8 normalised, 81.4 in [0, 1]; the teacher 86.5. (An earlier check at LR 6 on
another box: a constant rate after the warm-up 83.0, two views for 500 steps 82.4, the kNN of the EMA
weights 80.5.)

Why 400 steps: the study's quiet step costs of these networks are 0.35 s (SimDis-Off-7v) and
0.16 s (BYOL) on 2 cores, so 400 steps of both train in ~205 s; start-up, the teacher's restore,
two compiles, six kNN passes and the report add the rest. Measured as a newcomer meets it (fresh
clone and virtualenv, quiet 2-core box, 2026-12-07, this recipe): install 70 s, demo 334 s, under the
6-min bar. Its table: distilled 84.0, alone 75.3, untrained 73.1, teacher 85.4, raw pixels normalised
as the networks see them 82.6, raw pixels in [0, 1] 80.3: the distilled student is 8.7 points above the
student alone and 1.4 above the stronger pixel baseline after 400 steps. (At the earlier base LR 6 the
same table read distilled 82.5-82.6, alone 76.6-77.4 by the CPU: level with the pixels. The student
alone's test figure is lower at LR 48 than it was at 6, where the validation split had found the two
rates level, 75.9 each; the rate was chosen on validation and is not re-chosen on the test figures.)
The study's records on the full splits: distilled ~87 after 936 steps, raw pixels 85.7.

    python -m simdis_jax.main --config configs/demo.py --workdir workdirs/demo

Needs Debian's Fashion-MNIST (`apt-get install dataset-fashion-mnist`). The console shows a
progress bar per run, the kNN top-1 at step 0 and at the end, then the report (<workdir>/report)
and the table; the full log is in <workdir>/log.txt. The SimDis-On-7v demo (teacher and student
trained together) is configs/demo_online.py.
"""

from simdis_jax import configuration

STEPS = 400
TEACHER = "fmnist/byol-r10w16"  # a zoo name (python -m simdis_jax.zoo); any finished BYOL run's workdir works


def get_config():
  c = configuration.base_config()
  c.method = "simdis_off"
  c.views = configuration.VIEW_PRESETS["simdis_7v"]
  c.model.student = configuration.network_config(depth=10, width=8, cifar_stem=True, hidden_dim=512, proj_dim=128)
  c.model.teacher = configuration.network_config(depth=10, width=16, cifar_stem=True, hidden_dim=512, proj_dim=128)
  c.teacher.workdir = TEACHER
  c.optim.name = "lars"
  c.optim.base_lr = 48.0  # chosen on the validation split (above)
  c.optim.warmup_epochs = 0.1
  c.optim.weight_decay = 1e-5
  c.train.batch_size = 128
  c.train.steps = STEPS
  c.train.log_every_steps = 25
  c.train.checkpoint_every_steps = 100
  c.train.knn_every_steps = 0
  c.data.name = "fashion_mnist"
  c.data.image_size = 28
  c.data.augment = configuration.fashion_mnist_augment()
  # The kNN on 10k training / 5k test images (the full splits' 70k would cost a minute per network).
  c.knn.train_examples = 10000
  c.knn.eval_examples = 5000
  # After pretraining: the same student trained alone (BYOL, same steps, seed and data) in <workdir>/alone,
  # then the table: distilled, alone, teacher, raw pixels (kNN on the same images).
  c.final_eval.student_alone = True
  c.final_eval.report = True  # results.md + figures in <workdir>/report (1.5 CPU-s)
  return c
