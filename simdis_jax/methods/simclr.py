"""SimCLR (Chen et al. 2020, google-research/simclr) on the method interface: NT-Xent over in-batch negatives.

The student alone: encoder f and SimCLR's nonlinear projection head (Linear without bias -> BN ->
ReLU -> Linear without bias -> BN without offset; ImageNet: 2048 -> 2048 -> 128, model.student
hidden_dim / proj_dim). Both views go through it in train-mode BN. The loss is the official
add_contrastive_loss: the L2-normalised projections of view 1 (h1) and view 2 (h2) of this device's
n examples are contrasted with those of the GLOBAL batch of N, gathered over every device (rank
order, with gradient, as tpu_cross_replica_concat): for example i,
  logits_a = [h1_i · H2, h1_i · H1] / T with h1_i · h1_i masked out (-1e9),
  loss_a = softmax cross-entropy with the positive h1_i · h2_i, over 2N - 1 candidates (2N - 2 negatives),
and loss_b the same from view 2; loss = mean_i loss_a + mean_i loss_b (the official sum of the two).
T = config.simclr.temperature (0.1, the official default; 0.2 and 0.5 are the paper's other choices).
Differences from the official code: each view is its own BN batch here (the step runs each view in
its own call, as BYOL's code does); SimCLR concatenates both views into one BN batch.
Optimizer (config.optim.name="lars"; optim.lars_form is not read): SimCLR's LARS (lars_optimizer.py):
the decayed gradient g + wd·w, trust ratio η‖w‖/‖g + wd·w‖ (1 where either norm is 0), the rate inside
the momentum buffer; biases and BN parameters are excluded from both the decay and the trust ratio.
`recipe` sets the paper's values (0.3 x batch/256, wd 1e-6, 10 warm-up epochs, cosine).

As a SimDis-On teacher's method (config.teacher.method="simclr"): the teacher trains by NT-Xent
beside the distilled student; it has no EMA network, so the T̂ target views are invalid.
"""

from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from simdis_jax import optim
from simdis_jax.methods import recipes
from simdis_jax.methods.common import gather_batch, l2_normalize
from simdis_jax.methods.interface import About, Forward, TeacherRole
from simdis_jax.models.heads import TorchDense
from simdis_jax.models.resnet import batch_norm, output_dtype
from simdis_jax.parallel import DATA_AXIS

ABOUT = {"simclr": About("SimCLR", 6, targets="other view among 2N-2 in-batch negatives (NT-Xent)")}
LARGE_NUM = 1e9  # the official mask of an example's similarity with itself


def defaults(c) -> None:
  """config.simclr: the NT-Xent temperature."""
  c.simclr = ml_collections.ConfigDict()
  c.simclr.temperature = 0.1  # the official default; the paper also uses 0.2 and 0.5


RULES = (dict(key="simclr.temperature", above=0.0, hint="SimCLR uses 0.1 (or 0.2, 0.5)"),)


class Projector(nn.Module):
  """Linear(hidden, no bias)-BN-ReLU-Linear(out, no bias)-BN(no offset): SimCLR's nonlinear projection head."""

  hidden_dim: int
  out_dim: int
  dtype: Any = jnp.float32
  bn_running_var: str = "biased"
  head_bias: bool = True  # not used: the official head has no bias (BN follows each Linear)
  style: str = "torchvision"

  @nn.compact
  def __call__(self, x, train: bool = True, bn_axis_name: Optional[str] = None):
    bn = batch_norm(train, bn_axis_name, self.dtype, self.bn_running_var)
    x = nn.relu(bn(name="bn1")(TorchDense(self.hidden_dim, self.dtype, False, self.style, name="dense1")(x)))
    x = bn(use_bias=False, name="bn2")(TorchDense(self.out_dim, self.dtype, False, self.style, name="dense2")(x))
    return x.astype(output_dtype(self.dtype))


def online_networks(config) -> Dict[str, Dict]:
  """The student with SimCLR's projection head and no predictor; no teacher."""
  del config
  return {"student": {"projector_module": Projector}}


def forwards(config) -> Tuple[Forward, ...]:
  """The student on both views, trainable, batch statistics."""
  del config
  return (Forward("student", trainable=True, bn="train", update_stats=True),)


def nt_xent(
  z1: jnp.ndarray, z2: jnp.ndarray, temperature: float, axis_name: Optional[str] = DATA_AXIS
) -> Tuple[jnp.ndarray, jnp.ndarray]:
  """SimCLR's contrastive loss of this device's projections of (v, v') against the global batch; (loss, logits_a).

  axis_name: the devices' axis to gather the negatives over (call under shard_map), or None for one batch.
  logits_a: [n, 2N] = [h1·H2, h1·H1 (self masked)] / T, the positive at this device's global index.
  """
  h1, h2 = l2_normalize(z1), l2_normalize(z2)
  n = h1.shape[0]
  big1, big2 = (h1, h2) if axis_name is None else (gather_batch(h1, axis_name), gather_batch(h2, axis_name))
  offset = 0 if axis_name is None else jax.lax.axis_index(axis_name) * n
  index = jnp.arange(n) + offset
  mask = jax.nn.one_hot(index, big1.shape[0], dtype=h1.dtype)
  logits_aa = h1 @ big1.T / temperature - mask * LARGE_NUM
  logits_bb = h2 @ big2.T / temperature - mask * LARGE_NUM
  logits_ab = h1 @ big2.T / temperature
  logits_ba = h2 @ big1.T / temperature
  loss_a = optax.softmax_cross_entropy_with_integer_labels(jnp.concatenate([logits_ab, logits_aa], 1), index)
  loss_b = optax.softmax_cross_entropy_with_integer_labels(jnp.concatenate([logits_ba, logits_bb], 1), index)
  return jnp.mean(loss_a) + jnp.mean(loss_b), jnp.concatenate([logits_ab, logits_aa], 1)


def _loss_of(outs, config) -> Tuple[jnp.ndarray, jnp.ndarray]:
  return nt_xent(outs[0]["projection"], outs[1]["projection"], config.simclr.temperature)


def loss(outputs: Mapping[str, Tuple[Dict, ...]], labels, state, config) -> Tuple[jnp.ndarray, Dict]:
  """NT-Xent of the student's two views over the global batch; its logits of view 1 and the contrastive top-1."""
  del labels, state
  value, logits = _loss_of(outputs["student"], config)
  n = logits.shape[0]
  index = jnp.arange(n) + jax.lax.axis_index(DATA_AXIS) * n
  accuracy = 100.0 * jnp.mean(jnp.argmax(logits, -1) == index)  # the positive ranks first among 2N - 1
  return value, {"loss_student": value, "contrast_top1": accuracy, "logits": logits}


def before_update(state, config, total_steps: int):
  """Nothing: SimCLR has no EMA."""
  del config, total_steps
  return state, {}


def after_update(state, outputs, config, total_steps: int):
  """Nothing after the optimizer step either."""
  del outputs, config, total_steps
  return state


class LarsState(NamedTuple):
  """Step count (for the schedule) and the momentum buffer."""

  count: jnp.ndarray
  buf: Any


def simclr_lars(
  learning_rate: Callable, momentum: float, eta: float, weight_decay: float
) -> optax.GradientTransformation:
  """SimCLR's LARS (lars_optimizer.py, use_nesterov=False): kernels take weight decay and the trust ratio."""

  def init(params):
    return LarsState(jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params))

  def update(grads, state, params):
    lr = learning_rate(state.count)

    def leaf(g, w, buf, kernel):
      if not kernel:  # excluded: biases and BN parameters (names other than 'kernel')
        return momentum * buf + lr * g
      g = g + weight_decay * w
      w_norm, g_norm = jnp.linalg.norm(w), jnp.linalg.norm(g)
      ratio = eta * w_norm / jnp.where(g_norm > 0, g_norm, 1.0)
      trust = jnp.where((w_norm > 0) & (g_norm > 0), ratio, 1.0)
      return momentum * buf + lr * trust * g

    buf = jax.tree.map(leaf, grads, params, state.buf, optim.kernel_mask(params))
    return jax.tree.map(jnp.negative, buf), LarsState(state.count + 1, buf)

  return optax.GradientTransformation(init, update)


def optimizer(config, schedule) -> optax.GradientTransformation:
  """SimCLR's LARS when config.optim.name is "lars"; otherwise the optimizer config.optim names."""
  o = config.optim
  if o.name != "lars":
    return optim.make_optimizer(o, schedule)
  return simclr_lars(schedule, o.momentum, o.trust_coefficient, o.weight_decay)


def teacher_role(config) -> TeacherRole:
  """A SimCLR teacher for SimDis-On: its own projection head, NT-Xent over the global batch, no EMA network."""
  del config
  return TeacherRole(
    heads={"projector_module": Projector}, ema=False, loss=lambda outs, ema_projections, cfg: _loss_of(outs, cfg)[0]
  )


def recipe(c, epochs: float = 100.0):
  """SimCLR's ImageNet recipe (run.py defaults, paper appendix B.1): LARS at 0.3 x batch/256, momentum 0.9,
  η 1e-3, wd 1e-6 (kernels only), 10 warm-up epochs then cosine, T 0.1, head d -> 2048 -> 128, global BN;
  augmentations: crop (0.08, 1), flip, colour jitter 0.8 strength 1.0 (0.8, 0.8, 0.8, 0.2) p=0.8, grey 0.2,
  blur p=0.5, no solarization."""
  c.method = "simclr"
  student = c.model.student
  student.hidden_dim = recipes._feature_dim(student)  # pylint: disable=protected-access
  student.proj_dim = 128
  c.model.sync_bn = True
  c.simclr.temperature = 0.1
  c.optim.name = "lars"
  c.optim.base_lr = 0.3
  c.optim.momentum = 0.9
  c.optim.trust_coefficient = 1e-3
  c.optim.weight_decay = 1e-6
  c.optim.warmup_epochs = 10.0
  c.optim.warmup_init_lr = 0.0
  c.optim.schedule = "cosine"
  c.train.epochs = epochs
  a = c.data.augment
  a.crop_scale = (0.08, 1.0)
  a.brightness, a.contrast, a.saturation, a.hue = 0.8, 0.8, 0.8, 0.2
  a.blur_prob = (0.5, 0.5)
  a.solarize_prob = (0.0, 0.0)
  c.knn.networks = ("student",)
  return c
