"""The Fashion-MNIST study's presets: the paper's experiments at a scale one CPU can afford.

    python -m simdis_jax.main --config configs/fashion_mnist/presets.py:<preset> --workdir <dir> [--config.seed=S]

The whole study (every preset, its seeds, the report in RESULTS.md) is one command:
`python -m simdis_jax.study --config configs/fashion_mnist/study.py --workdir workdirs/fmnist_study`.

Networks (CIFAR stem, 28x28 grey input, projector/predictors 512 -> 128):
  teacher: ResNet-18 layout, width 16 (~8x the student's multiply-adds);
  student: ResNet-10 layout (one basic block per stage), width 8.
The paper's ResNet-50 -> ResNet-18 pair is 2.3x; a wider gap makes distillation's effect easier to
see in a short schedule, and the width-8 student is what fits the budget three times over.

Presets (the student runs differ only in method, views and the teacher; see tests/test_study.py):
  byol_teacher     BYOL on the teacher network alone (the offline teacher; its `student` is the teacher)
  byol_student     BYOL on the student alone: the baseline without distillation
  simdis_off_2v    SimDis-Off, views Ŝ-v' + T̂-v' (the paper's two-view offline setting, Table 1)
  simdis_off_7v    SimDis-Off with all seven views
  simdis_on_2v     SimDis-On, views Ŝ-v' + T̂-v'
  simdis_on_7v     SimDis-On-7v
  off_t_sv, off_t_dv, off_tema_sv   Table 2 rows, offline: Ŝ-v' + one teacher view (T-v, T-v', T̂-v;
                   the T̂-v' row is simdis_off_2v)
  supervised       the student trained with cross-entropy on the labels, same views/augmentations/optimizer
  moco_v2          MoCo-v2 by its authors' recipe (SGD 0.03 x batch/256, queue 4,096, T 0.2, shuffle BN,
                   blur p=0.5 on both views), the student network with MoCo's head (64 -> 64 -> 128)
  seed             SEED from the byol_teacher run (frozen, eval mode), one view, queue 4,096, τ_s 0.2, τ_t 1e-4
  supervised_standard  the student by torchvision's recipe (one crop + flip, SGD 0.1 x batch/256, step decay
                   every epoch here: 3 epochs are the 90's thirds)
  untrained_student  reference: the student's initial weights, evaluated like the others (one step at
                   learning rate 0: the weights stay exactly as initialised; BN's running statistics take
                   one update, so that eval-mode features are not computed with the (0, 1) placeholders)

Schedule (every preset): 3 epochs of batch 128 (1,404 steps), LARS (authors' form) at base LR 6.0
(x batch/256), warm-up 0.3 epochs then cosine, weight decay 1e-5, EMA from 0.99; the teacher is
trained for the same 3 epochs, as the paper's online/offline comparison trains both for N epochs.
After pretraining: weighted kNN (k=20, all 60k train images as the bank, the 10k test images as
queries) and linear evaluation of the student by DeepMind's protocol in full mode (random crop +
flip through the frozen encoder each step) for 10 epochs.
Why these numbers: see RESULTS.md ("Budget").
"""

from simdis_jax import configuration
from simdis_jax.methods import recipes

EPOCHS = 3.0
BATCH = 128
TEACHER = dict(depth=18, width=16, cifar_stem=True, hidden_dim=512, proj_dim=128)
STUDENT = dict(depth=10, width=8, cifar_stem=True, hidden_dim=512, proj_dim=128)
TEACHER_WORKDIR = "workdirs/fmnist_study/byol_teacher/seed0"  # the study passes its own
LINEAR_EPOCHS = 10.0
V = configuration.VIEW_PRESETS

# preset -> (method, student target views)
PRESETS = {
  "byol_teacher": ("byol", V["byol"]),
  "byol_student": ("byol", V["byol"]),
  "simdis_off_2v": ("simdis_off", V["simdis_2v"]),
  "simdis_off_7v": ("simdis_off", V["simdis_7v"]),
  "simdis_on_2v": ("simdis_on", V["simdis_2v"]),
  "simdis_on_7v": ("simdis_on", V["simdis_7v"]),
  "off_t_sv": ("simdis_off", V["table2_t_sv"]),
  "off_t_dv": ("simdis_off", V["table2_t_dv"]),
  "off_tema_sv": ("simdis_off", V["table2_tema_sv"]),
  "supervised": ("supervised", V["byol"]),
  "untrained_student": ("byol", V["byol"]),
  # Figure 3's other systems by their authors' recipes (simdis_jax/methods/recipes.py), same student,
  # schedule length and batch; views are not used by these methods.
  "moco_v2": ("moco_v2", V["byol"]),
  "seed": ("seed", V["byol"]),
  "supervised_standard": ("supervised", V["byol"]),
}
# Queue of MoCo-v2 / SEED here: 65,536 would exceed the 60k training images; 4,096 (32 batches) as
# the CIFAR-scale MoCo reproductions use.
QUEUE_SIZE = 4096


def get_config(preset: str = "simdis_on_7v"):
  """The config of one preset (the names above)."""
  if preset not in PRESETS:
    raise ValueError(f"Unknown Fashion-MNIST preset {preset!r}; choose one of {sorted(PRESETS)}.")
  method, views = PRESETS[preset]
  c = configuration.base_config()
  c.method = method
  c.views = views
  student = TEACHER if preset == "byol_teacher" else STUDENT
  c.model.student = configuration.network_config(**student)
  c.model.teacher = configuration.network_config(**TEACHER)
  if method == "simdis_off":
    c.teacher.workdir = TEACHER_WORKDIR
  c.optim.name = "lars"
  c.optim.base_lr = 6.0
  c.optim.warmup_epochs = 0.3
  c.optim.weight_decay = 1e-5
  c.train.batch_size = BATCH
  c.train.epochs = EPOCHS
  c.train.log_every_steps = 50
  c.train.checkpoint_every_steps = 200
  c.train.knn_every_steps = 0  # kNN of the untrained networks at step 0 and of the trained ones at the end
  c.data.name = "fashion_mnist"
  c.data.image_size = 28
  c.data.augment = configuration.fashion_mnist_augment()
  c.probe.num_classes = 10
  c.knn.train_examples = 0  # all 60k train images as the memory bank
  c.knn.eval_examples = 0  # all 10k test images as queries
  c.final_eval.linear_networks = ("student",)
  # DeepMind's protocol (plain linear layer, Nesterov, LR 0.2 x batch/256): the authors' (LR 0.001 x
  # batch/256, BN head) underfits in 10 epochs here (teacher: 79.1% vs 85.7% for both protocols given
  # 80 epochs on cached features).
  c.final_eval.linear_protocol = "deepmind"
  c.final_eval.linear_mode = "full"
  c.final_eval.linear_epochs = LINEAR_EPOCHS
  if preset == "moco_v2":
    recipes.moco_v2(c, epochs=EPOCHS)
    c.moco.queue_size = QUEUE_SIZE
  elif preset == "seed":
    c.teacher.workdir = TEACHER_WORKDIR
    recipes.seed(c, epochs=EPOCHS)
    c.seed_distill.queue_size = QUEUE_SIZE
    c.optim.warmup_epochs = 0.3  # SEED's 5 of 200 epochs would be 0.075 here; the study's warm-up instead
  elif preset == "supervised_standard":
    recipes.supervised_standard(c, epochs=EPOCHS)
    c.optim.step_epochs = 1.0  # torchvision's 30-of-90 epochs, scaled to the 3-epoch schedule
    c.data.augment.crop_scale = configuration.fashion_mnist_augment().crop_scale  # the study's (0.2, 1)
  if preset == "untrained_student":
    c.train.steps = 1
    c.optim.warmup_init_lr = 0.0  # the one step's learning rate
  return c
