"""BYOL ResNet-50 on ImageNet-1k exactly as DeepMind's published code trains it (1000 epochs, batch 4096).

    python -m simdis_jax.main --config configs/imagenet/byol_r50_deepmind.py --workdir workdirs/imagenet_byol_r50_dm

Every value below comes from google-deepmind/deepmind-research, folder byol/, at commit f5de0ed
(paths relative to byol/; `file:line`):

- method BYOL, one online network, its EMA target: byol_experiment.py:227-250 (both views through
  online and target in training mode; loss = regression_loss(p1, sg z2') + regression_loss(p2, sg z1'),
  helpers.py:109-112, mean over the batch).
- network: ResNet-50 v1, width multiplier 1, configs/byol.py:43-46; DeepMind's Haiku ResNet (SAME
  padding networks.py:101-107 and :139-142, a projection shortcut in every stage's first block,
  use_projection=(True,)*4 networks.py:64 and :113-125) = model.student.style="haiku", which also
  gives Haiku's initialisers (hk.Conv2D / hk.Linear truncated normal, and the bottleneck's last BN
  scale 0 of Haiku's BlockV1, which the released code uses; byol/README.md, "Note on batch normalization",
  says the paper's numbers were obtained with scale 1) and Haiku's BN with its two averages
  (bn_config decay 0.9, eps 1e-5: configs/byol.py:47-56).
- projector 2048 -> 4096 -> 256 and predictor 256 -> 4096 -> 256: configs/byol.py:40-42; each MLP is
  Linear (bias) -> BN -> ReLU -> Linear WITHOUT bias, networks.py:40-45 = head_bias=False.
- SyncBN: cross_replica_axis='i', configs/byol.py:50-53 = model.sync_bn=True.
- online and target initialised from different keys, byol_experiment.py:368-385 = model.ema_init="separate".
- target EMA after the optimizer step with the new online weights, byol_experiment.py:337-343
  (x + (1 - tau)(y - x)) = ema.timing="after"; tau = 1 - (1 - 0.996)(cos(pi k / K) + 1) / 2:
  schedules.py:20-24 with base 0.996 for 1000 epochs, configs/byol.py:23 (_EMA_PRESETS[1000]).
- optimizer LARS, optimizers.py:144-187 (weight decay added to the gradient, trust ratio
  eta ||w|| / ||g + wd w||, momentum on the scaled update, then x (-lr)) = optim.lars_form="deepmind";
  eta 1e-3, momentum 0.9: configs/byol.py:57-61; weight decay 1.5e-6 for 1000 epochs, configs/byol.py:22;
  biases and BN parameters excluded from both decay and adaptation (exclude_bias_and_norm,
  optimizers.py:30-35, passed at byol_experiment.py:191-195) = optim.weight_decay_mask="kernels".
- learning rate 0.2 x batch / 256 (configs/byol.py:21, schedules.py:34), linear warm-up FROM 0 over
  10 epochs of images (configs/byol.py:64: 10 * 1,281,167 // 4096 = 3127 steps; schedules.py:35-37),
  then cosine to 0 over the remaining steps (schedules.py:40-53). Their warm-up rate is computed in
  float32 (schedules.py:36, global_step.astype(jnp.float32)); ours in the step's dtype (float32 in
  training, float64 in a float64 research step): not copied (in float64 the warm-up rates then differ
  by float32 rounding, up to ~1e-7 relative).
- batch 4096 and 1000 epochs: main_loop.py:36-37; max_steps = 1000 * 1,281,167 // 4096 = 312,784
  (configs/byol.py:36; 1,281,167 = TRAIN_AND_VALID, utils/dataset.py:49, i.e. the whole train split).
  This project's epochs drop each epoch's last partial batch (312 steps per epoch), so the step counts
  are set directly: train.steps = 312,784 and warmup_epochs = 3127 / 312 (= 3127 warm-up steps).
- augmentations: random resized crop, area (0.08, 1), log-uniform aspect (3/4, 4/3), 224 px
  (utils/dataset.py:201-232); flip, colour jitter 0.8 (brightness 0.4, contrast 0.4, saturation 0.2,
  hue 0.1), greyscale 0.2, blur 1.0 / 0.1, solarize 0.0 / 0.2 (utils/augmentations.py:27-66): the base
  config's data.augment (augment.default_config). Normalisation by ImageNet's mean/std,
  utils/dataset.py:63-69.
- the online classifier: a Linear on the stop-gradient pooled feature of view 1, its softmax
  cross-entropy ADDED to the loss and trained by the same LARS (byol_experiment.py:163-164, :175,
  :256-276) = probe.enabled, probe.optimizer="main", probe.num_classes=1000 (configs/byol.py:34).
- linear evaluation: eval configs/eval.py:26-45 (80 epochs, frozen backbone, SGD Nesterov momentum 0.9,
  LR 0.2 x batch / 256, no warm-up), at the same batch as pretraining (main_loop.py:144-145), random
  crop + flip for training and a 224/256 centre crop for evaluation (utils/dataset.py:192-196, :247-263)
  = final_eval.linear_protocol="deepmind", linear_mode="full", eval_crop_fraction 0.875.

Not reproduced: their bicubic resize of the crops (utils/dataset.py:197-201) and their data order.
docs/recipes.md tabulates every knob against DeepMind's, the SimDis authors', MoCo's and SEED's.
"""

from simdis_jax import configuration
from simdis_jax.methods import recipes

IMAGENET_TRAIN = 1_281_167  # byol/utils/dataset.py:49 (Split.TRAIN_AND_VALID)


def get_config():
  """DeepMind's BYOL ResNet-50: batch 4096, 1000 epochs, on ImageNet-1k's train split."""
  c = recipes.deepmind_byol(configuration.base_config(), 50, 4096, 1000, IMAGENET_TRAIN, 1000)
  c.data.name = "imagenet2012"
  c.data.image_size = 224
  return c
