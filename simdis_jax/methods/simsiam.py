"""SimSiam (Chen & He 2021, facebookresearch/simsiam) on the method interface: stop-gradient, no EMA, no negatives.

The student alone: encoder f, a 3-layer projector h (Linear-BN-ReLU, Linear-BN-ReLU, Linear-BN without
affine; each Linear without bias: the official builder's last Linear keeps a frozen bias that the
following BN removes, so it is left out) and a bottleneck predictor q (Linear-BN-ReLU to
config.simsiam.predictor_dim, then Linear with bias back to the projection's size). ImageNet: feature
2048 -> projector 2048 -> 2048 (model.student.hidden_dim, proj_dim), predictor 2048 -> 512 -> 2048.
Both views go through the network in train-mode BN, each view in its own call (the official code
does the same: two forward calls). The loss is symmetric, with stop-gradient on the projections:
  L = -(cos(p1, sg(z2)) + cos(p2, sg(z1))) / 2, each cosine averaged over the batch (range [-1, 1]).
No EMA: the student's EMA partner exists (every online network has one) but is never moved nor read.
Optimizer: SGD (momentum 0.9, weight decay 1e-4 on every parameter) at 0.05 x batch/256 with a
cosine decay, except the predictor, whose rate stays at 0.05 x batch/256 (`fix_pred_lr`;
config.simsiam.fixed_predictor_lr). `recipe` sets the rest.

As a SimDis-On teacher's method (config.teacher.method="simsiam"): the teacher trains by this loss
beside the distilled student; it has no EMA network, so the T̂ target views are invalid.
"""

import functools
from typing import Any, Dict, Mapping, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from simdis_jax import optim
from simdis_jax.methods import recipes
from simdis_jax.methods.common import l2_normalize
from simdis_jax.methods.interface import About, Forward, TeacherRole
from simdis_jax.models.heads import TorchDense
from simdis_jax.models.resnet import batch_norm, output_dtype

ABOUT = {"simsiam": About("SimSiam", 7, targets="other view's projection, stop-gradient (no EMA)")}
HEAD = "simsiam"  # the predictor's name: its parameters are predictor_simsiam


def defaults(c) -> None:
  """config.simsiam: the predictor's bottleneck and whether its learning rate stays fixed."""
  c.simsiam = ml_collections.ConfigDict()
  c.simsiam.predictor_dim = 512  # the bottleneck of 2048 -> 512 -> 2048 (a quarter of proj_dim)
  c.simsiam.fixed_predictor_lr = True  # the predictor at the peak rate throughout (the official fix_pred_lr)


RULES = (dict(key="simsiam.predictor_dim", low=1, whole=True, hint="SimSiam uses 512 for a 2048 projection"),)


class Projector(nn.Module):
  """Linear-BN-ReLU, Linear-BN-ReLU, Linear-BN(no scale, no offset): SimSiam's ImageNet projector."""

  hidden_dim: int
  out_dim: int
  dtype: Any = jnp.float32
  bn_running_var: str = "biased"
  head_bias: bool = True  # not used: no Linear here has a bias (see the module docstring)
  style: str = "torchvision"

  @nn.compact
  def __call__(self, x, train: bool = True, bn_axis_name: Optional[str] = None):
    bn = batch_norm(train, bn_axis_name, self.dtype, self.bn_running_var)
    for i in (1, 2):
      x = nn.relu(bn(name=f"bn{i}")(TorchDense(self.hidden_dim, self.dtype, False, self.style, name=f"dense{i}")(x)))
    x = TorchDense(self.out_dim, self.dtype, False, self.style, name="dense3")(x)
    x = bn(use_scale=False, use_bias=False, name="bn3")(x)
    return x.astype(output_dtype(self.dtype))


class Predictor(nn.Module):
  """Linear(bottleneck, no bias)-BN-ReLU-Linear(out, bias): SimSiam's predictor."""

  hidden_dim: int  # the projector's hidden width, passed by the network; the bottleneck is `bottleneck`
  out_dim: int
  dtype: Any = jnp.float32
  bn_running_var: str = "biased"
  head_bias: bool = True
  style: str = "torchvision"
  bottleneck: int = 512

  @nn.compact
  def __call__(self, x, train: bool = True, bn_axis_name: Optional[str] = None):
    x = TorchDense(self.bottleneck, self.dtype, False, self.style, name="dense1")(x)
    x = nn.relu(batch_norm(train, bn_axis_name, self.dtype, self.bn_running_var)(name="bn")(x))
    x = TorchDense(self.out_dim, self.dtype, self.head_bias, self.style, name="dense2")(x)
    return x.astype(output_dtype(self.dtype))


def heads(config) -> Dict[str, Any]:
  """The network's keyword arguments: SimSiam's projector and its one predictor."""
  return {
    "heads": (HEAD,),
    "projector_module": Projector,
    "predictor_module": functools.partial(Predictor, bottleneck=int(config.simsiam.predictor_dim)),
  }


def online_networks(config) -> Dict[str, Dict]:
  """The student with SimSiam's projector and predictor; no teacher."""
  return {"student": heads(config)}


def forwards(config) -> Tuple[Forward, ...]:
  """The student on both views, trainable, batch statistics."""
  del config
  return (Forward("student", trainable=True, bn="train", update_stats=True),)


def negative_cosine(p: jnp.ndarray, z: jnp.ndarray) -> jnp.ndarray:
  """D(p, z) = -mean over the batch of cos(p, sg(z)) (the official criterion, z detached)."""
  return -jnp.mean(jnp.sum(l2_normalize(p) * jax.lax.stop_gradient(l2_normalize(z)), axis=-1))


def symmetric_loss(outs) -> jnp.ndarray:
  """(D(p1, z2) + D(p2, z1)) / 2 from a network's outputs of (v, v')."""
  p1, p2 = (o["predictions"][HEAD] for o in outs)
  z1, z2 = (o["projection"] for o in outs)
  return 0.5 * (negative_cosine(p1, z2) + negative_cosine(p2, z1))


def loss(outputs: Mapping[str, Tuple[Dict, ...]], labels, state, config) -> Tuple[jnp.ndarray, Dict]:
  """The symmetric negative cosine of the student's predictions against the other view's projection."""
  del labels, state, config
  value = symmetric_loss(outputs["student"])
  return value, {"loss_student": value}


def before_update(state, config, total_steps: int):
  """Nothing: SimSiam has no EMA and no momentum encoder."""
  del config, total_steps
  return state, {}


def after_update(state, outputs, config, total_steps: int):
  """Nothing after the optimizer step either."""
  del outputs, config, total_steps
  return state


def _is_predictor(path) -> bool:
  return any(str(getattr(k, "key", "")).startswith("predictor_") for k in path)


def optimizer(config, schedule) -> optax.GradientTransformation:
  """config.optim's optimizer; the predictors' parameters at the fixed peak rate base_lr x batch/256."""
  main = optim.make_optimizer(config.optim, schedule)
  if not config.simsiam.fixed_predictor_lr:
    return main
  peak = config.optim.base_lr * config.train.batch_size / 256.0
  fixed = optim.make_optimizer(config.optim, lambda step: jnp.asarray(peak, jnp.result_type(schedule(step))))
  return optax.multi_transform(
    {"scheduled": main, "fixed": fixed},
    lambda params: jax.tree_util.tree_map_with_path(lambda p, _: "fixed" if _is_predictor(p) else "scheduled", params),
  )


def teacher_role(config) -> TeacherRole:
  """A SimSiam teacher for SimDis-On: its own projector and predictor, its symmetric loss, no EMA network."""
  return TeacherRole(heads=heads(config), loss=lambda outs, ema_projections, cfg: symmetric_loss(outs), ema=False)


def recipe(c, epochs: float = 100.0):
  """SimSiam's ImageNet recipe (main_simsiam.py): batch 512, SGD 0.05 x batch/256, momentum 0.9, wd 1e-4 on
  everything, cosine without warm-up, predictor at the fixed rate; projector d -> 2048 -> 2048, predictor
  2048 -> 512 -> 2048; MoCo-v2's augmentations (aug_plus: SimSiam's code uses the same)."""
  c.method = "simsiam"
  student = c.model.student
  student.hidden_dim, student.proj_dim = 2048, 2048
  c.simsiam.predictor_dim = 512
  c.simsiam.fixed_predictor_lr = True
  c.optim.name = "sgd"
  c.optim.base_lr = 0.05
  c.optim.momentum = 0.9
  c.optim.nesterov = False
  c.optim.weight_decay = 1e-4
  c.optim.weight_decay_mask = "all"
  c.optim.warmup_epochs = 0.0
  c.optim.schedule = "cosine"
  c.train.epochs = epochs
  c.data.augment = recipes.moco_v2_augment(len(c.data.augment.mean))
  c.knn.networks = ("student",)
  return c
