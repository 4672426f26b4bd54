"""Published recipes as config edits: Figure 3's other systems (MoCo-v2, SEED, supervised), DeepMind's BYOL.

Read beside docs/spec.md's "MoCo-v2", "SEED" and "Supervised ResNet-18" sections. Each
function changes a config (from configuration.base_config()) in place and returns
it; the ImageNet presets (configs/imagenet/moco_v2_r18.py, seed_r18.py,
supervised_r18.py) and the Fashion-MNIST study's presets call them, then set
their own sizes. Where this project cannot follow the authors exactly, the
function says so in a comment.
"""

import ml_collections

from simdis_jax.data import augment

IMAGENET_CHANNELS = 3


def moco_v2_augment(num_channels: int = IMAGENET_CHANNELS) -> ml_collections.ConfigDict:
  """MoCo-v2's aug_plus: crop scale (0.2, 1), jitter (0.4, 0.4, 0.4, 0.1) p=0.8, grey 0.2, blur p=0.5 on
  BOTH views, no solarize, flip. One channel (Fashion-MNIST): the colour ops are identities, the rest stays."""
  a = augment.default_config(num_channels)
  a.crop_scale = (0.2, 1.0)
  a.saturation = 0.4
  a.blur_prob = (0.5, 0.5)
  a.solarize_prob = (0.0, 0.0)
  return a


def standard_supervised_augment(num_channels: int = IMAGENET_CHANNELS) -> ml_collections.ConfigDict:
  """torchvision's classification training: RandomResizedCrop (0.08, 1) + flip, no colour, blur or solarize."""
  a = augment.default_config(num_channels)
  a.jitter_prob = 0.0
  a.grey_prob = 0.0
  a.blur_prob = (0.0, 0.0)
  a.solarize_prob = (0.0, 0.0)
  return a


def _sgd(c, base_lr: float, weight_decay: float, warmup_epochs: float = 0.0) -> None:
  """SGD momentum 0.9 (not Nesterov) at base_lr × batch/256, decay on every parameter (BN included)."""
  c.optim.name = "sgd"
  c.optim.base_lr = base_lr
  c.optim.momentum = 0.9
  c.optim.nesterov = False
  c.optim.weight_decay = weight_decay
  c.optim.weight_decay_mask = "all"
  c.optim.warmup_epochs = warmup_epochs


def student_alone(c):
  """BYOL on the student alone (its one view Ŝ-v'): the student-alone baseline, and the method whose finished
  run can be an offline teacher (an imported network is saved as such a run)."""
  c.method = "byol"
  c.views = ("sema_dv",)
  return c


def moco_v2(c, epochs: float = 200.0):
  """MoCo-v2: query = student with MoCo's head (d -> d -> 128, no BN), key = its momentum (0.999) EMA,
  queue 65,536, T = 0.2, shuffle BN (per-device BN), SGD 0.03 × batch/256, wd 1e-4, cosine, no warm-up.

  The authors set the cosine rate once per epoch; here it moves every step (the same curve sampled finer).
  """
  c.method = "moco_v2"
  c.views = ("sema_dv",)  # not used by moco_v2; kept valid
  student = c.model.student
  student.projector = "moco"
  student.hidden_dim = _feature_dim(student)
  student.proj_dim = 128
  c.model.ema_init = "copy"
  c.model.sync_bn = False
  c.moco.momentum = 0.999
  c.moco.temperature = 0.2
  c.moco.queue_size = 65_536
  c.moco.shuffle_bn = True
  _sgd(c, 0.03, 1e-4)
  c.optim.schedule = "cosine"
  c.train.epochs = epochs
  c.data.augment = moco_v2_augment(len(c.data.augment.mean))
  c.knn.networks = ("student",)
  return c


def seed(c, epochs: float = 200.0):
  """SEED: the student with head d -> d -> teacher dim (no BN), a frozen BYOL teacher in eval mode, one view,
  queue 65,536 of teacher embeddings, τ_s 0.2, τ_t 1e-4, SGD 0.03 × batch/256, wd 1e-4, 5-epoch ramp, cosine.

  SEED's ramp starts at 0.03 (the unscaled rate) and rises to 0.03 × batch/256; here it starts from
  optim.warmup_init_lr = 0.03 as well. SEED augments with MoCo-v2's aug_plus.
  """
  c.method = "seed"
  c.views = ("sema_dv",)  # not used by seed; kept valid
  student = c.model.student
  student.projector = "moco"
  student.hidden_dim = _feature_dim(student)
  student.proj_dim = c.model.teacher.proj_dim
  c.model.sync_bn = False  # SEED: per-device BN in the student, no SyncBN, no shuffle
  c.teacher.bn_mode = "eval"
  c.seed_distill.student_temperature = 0.2
  c.seed_distill.teacher_temperature = 1e-4
  c.seed_distill.queue_size = 65_536
  _sgd(c, 0.03, 1e-4, warmup_epochs=5.0)
  c.optim.warmup_init_lr = 0.03
  c.optim.schedule = "cosine"
  c.train.epochs = epochs
  c.data.augment = moco_v2_augment(len(c.data.augment.mean))
  c.knn.networks = ("student", "teacher")
  return c


def supervised_standard(c, epochs: float = 90.0):
  """torchvision's ResNet recipe: one crop per image and step, SGD 0.1 × batch/256, wd 1e-4, ×0.1 every 30
  epochs, no warm-up, crop + flip only; the classifier is evaluated on the held-out split at the end."""
  c.method = "supervised"
  c.views = ("sema_dv",)
  c.supervised.views = 1
  _sgd(c, 0.1, 1e-4)
  c.optim.schedule = "step"
  c.optim.step_epochs = 30.0
  c.train.epochs = epochs
  c.data.augment = standard_supervised_augment(len(c.data.augment.mean))
  c.knn.networks = ("student",)
  return c


def _feature_dim(net) -> int:
  """The pooled feature width d of a ResNet section (512·width/64 for basic blocks, ×4 for bottlenecks)."""
  from simdis_jax.models import archs, resnet  # pylint: disable=import-outside-toplevel

  if archs.arch_of(net) != "resnet":
    raise ValueError(
      f"The MoCo/SEED head's hidden width is the encoder's feature width; set it for arch "
      f"{net.arch!r} by hand (config.model.student.hidden_dim) after the recipe."
    )
  return int(resnet.feature_dim(net.depth, net.width))


def deepmind_byol(c, depth: int, batch_size: int, epochs: int, num_train: int, num_classes: int):
  """DeepMind's BYOL (deepmind-research/byol) on a dataset of `num_train` images and `num_classes` classes.

  Every value's source line in DeepMind's code is cited in configs/imagenet/byol_r50_deepmind.py's
  docstring; docs/recipes.md sets them beside the SimDis authors', MoCo's and SEED's. Their step counts
  are images // batch over all epochs (configs/byol.py:36, :64); this project's epochs drop each epoch's
  last partial batch, so the steps are set directly (train.steps, and warm-up epochs giving their steps).
  """
  c.method = "byol"
  c.views = ("sema_dv",)  # BYOL's one view
  student = c.model.student
  student.depth, student.width, student.cifar_stem, student.hidden_dim, student.proj_dim = depth, 64, False, 4096, 256
  student.arch, student.style, student.head_bias, student.projector = "resnet", "haiku", False, "byol"
  c.model.bn_running_var = "biased"
  c.model.sync_bn = True
  c.model.ema_init = "separate"
  c.ema.base = 0.996
  c.ema.timing = "after"
  c.optim.name = "lars"
  c.optim.lars_form = "deepmind"
  c.optim.base_lr = 0.2
  c.optim.momentum = 0.9
  c.optim.trust_coefficient = 1e-3
  c.optim.weight_decay = 1.5e-6
  c.optim.weight_decay_mask = "kernels"
  c.optim.warmup_init_lr = 0.0
  c.optim.schedule = "cosine"
  c.train.batch_size = batch_size
  c.train.epochs = float(epochs)
  c.train.steps = epochs * num_train // batch_size
  steps_per_epoch = num_train // batch_size
  c.optim.warmup_epochs = (10 * num_train // batch_size) / steps_per_epoch
  c.probe.enabled = True
  c.probe.optimizer = "main"
  c.probe.num_classes = num_classes
  c.knn.networks = ("student",)
  c.final_eval.linear_networks = ("student",)
  c.final_eval.linear_protocol = "deepmind"
  c.final_eval.linear_mode = "full"
  c.final_eval.linear_batch_size = batch_size
  c.data.augment.eval_crop_fraction = 224 / 256
  return c
