"""Optimisers and schedules (docs/spec.md "Optimisation", "EMA").

Three LARS forms are offered because they differ numerically:
- ``authors``: the original LARS paper as in the SimDis authors' code:
  local_lr = lr·η·‖w‖/(‖g‖ + wd·‖w‖ + 1e-8); buf ← m·buf + local_lr·(g + wd·w);
  w ← w − buf. The learning rate sits inside the momentum buffer. Their code has
  no special case for a zero norm: a zero kernel gets rate 0, a zero gradient η/wd.
- ``authors_fallback``: the same, but a kernel whose weight or gradient norm is
  zero takes the plain rate (Megvii's later LARS_SGD; this project's ``authors``
  form before it matched the SimDis code exactly there).
- ``deepmind``: DeepMind BYOL's LARS: trust ratio η‖w‖/‖g + wd·w‖ on the decayed
  update, momentum on the scaled update, learning rate applied outside.
- ``optax``: ``optax.lars``. Note that optax scales by the learning rate BEFORE
  the momentum trace, so it is not DeepMind's form whenever the rate changes
  between steps (docs/spec.md "Optimisation").
Biases and BN parameters (every leaf not named ``kernel``) are excluded from
the trust ratio; the weight-decay mask is ``all`` (authors) or ``kernels``
(DeepMind also excludes biases and BN parameters from weight decay). The same
name rule excludes a ViT's LayerNorm scales/offsets, position embedding
(``pos_embedding``) and class token (``cls_token``): every architecture in
models/ names its weight matrices and filters, and only those, ``kernel``.
``adamw`` (how self-supervised ViTs are trained) is optax.adamw with
b1 = config.optim.momentum, b2 = 0.999, eps 1e-8, decoupled weight decay
under the same mask, on the same warm-up + cosine schedule.
"""

import math
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from simdis_jax.optim_choices import LARS_FORMS, OPTIMIZERS, SCHEDULES


def steps_from_epochs(epochs: float, num_examples: int, batch_size: int) -> int:
  """Whole steps covering `epochs` passes over `num_examples` (the last partial batch is dropped)."""
  return int(math.floor(epochs * (num_examples // batch_size)))


def warmup_cosine_schedule(
  base_lr: float,
  batch_size: int,
  total_steps: int,
  warmup_steps: int,
  warmup_init_lr: float = 1e-6,
  dtype: Any = jnp.float32,
) -> Callable[[Any], jnp.ndarray]:
  """LR = base × batch/256, linear warm-up from `warmup_init_lr`, then cosine to 0; step k uses its own value.

  The rate is computed in `dtype`: float32 in training, float64 in a float64 research step.
  """
  peak = base_lr * batch_size / 256.0
  warmup_steps = min(warmup_steps, total_steps)

  def schedule(step):
    step = jnp.asarray(step, dtype)
    warm = warmup_init_lr + (peak - warmup_init_lr) * step / max(warmup_steps, 1)
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    cosine = 0.5 * peak * (1.0 + jnp.cos(math.pi * jnp.clip(progress, 0.0, 1.0)))
    return jnp.where(step < warmup_steps, warm, cosine)

  return schedule


def step_decay_schedule(
  base_lr: float,
  batch_size: int,
  decay_every_steps: int,
  warmup_steps: int = 0,
  warmup_init_lr: float = 1e-6,
  dtype: Any = jnp.float32,
) -> Callable[[Any], jnp.ndarray]:
  """LR = base × batch/256 × 0.1^floor(k / decay_every_steps), after an optional linear warm-up (torchvision's)."""
  peak = base_lr * batch_size / 256.0
  decay_every_steps = max(int(decay_every_steps), 1)

  def schedule(step):
    step = jnp.asarray(step, dtype)
    warm = warmup_init_lr + (peak - warmup_init_lr) * step / max(warmup_steps, 1)
    stepped = peak * jnp.power(jnp.asarray(0.1, dtype), jnp.floor(step / decay_every_steps))
    return jnp.where(step < warmup_steps, warm, stepped)

  return schedule


def make_schedule(
  config, total_steps: int, warmup_steps: int, steps_per_epoch: Optional[float] = None, dtype: Any = jnp.float32
) -> Callable[[Any], jnp.ndarray]:
  """config.optim.schedule's LR schedule; `steps_per_epoch` None = total_steps / config.train.epochs."""
  o = config.optim
  name = o.get("schedule", "cosine")  # configs saved before the key: cosine
  if name == "cosine":
    return warmup_cosine_schedule(
      o.base_lr, config.train.batch_size, total_steps, warmup_steps, o.warmup_init_lr, dtype=dtype
    )
  if name != "step":
    raise ValueError(f"Unknown config.optim.schedule {name!r}; choose one of {SCHEDULES}.")
  if steps_per_epoch is None:
    steps_per_epoch = total_steps / max(config.train.epochs, 1e-9)
  return step_decay_schedule(
    o.base_lr,
    config.train.batch_size,
    int(round(o.step_epochs * steps_per_epoch)),
    warmup_steps,
    o.warmup_init_lr,
    dtype=dtype,
  )


def kernel_mask(params):
  """True for weight matrices/filters (leaves named 'kernel'); False for biases and BN scale/offset."""
  return jax.tree_util.tree_map_with_path(lambda path, _: getattr(path[-1], "key", None) == "kernel", params)


class AuthorsLarsState(NamedTuple):
  """Step count (for the schedule) and the momentum buffer."""

  count: jnp.ndarray
  buf: Any


def authors_lars(
  learning_rate: Callable,
  momentum: float,
  trust_coefficient: float,
  weight_decay: float,
  weight_decay_mask: str = "all",
  zero_norm_fallback: bool = False,
) -> optax.GradientTransformation:
  """LARS as in the original paper and the SimDis authors' code (LR inside the momentum buffer).

  zero_norm_fallback: a kernel with a zero weight or gradient norm takes the plain rate
  (authors_fallback) instead of the formula's value (the SimDis code's behaviour).
  """

  def init(params):
    return AuthorsLarsState(jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params))

  def update(grads, state, params):
    lr = learning_rate(state.count)
    trust = kernel_mask(params)
    decay = trust if weight_decay_mask == "kernels" else jax.tree.map(lambda _: True, params)

    def leaf(g, w, buf, use_trust, use_decay):
      wd = weight_decay if use_decay else 0.0
      if use_trust:
        w_norm, g_norm = jnp.linalg.norm(w), jnp.linalg.norm(g)
        local_lr = lr * trust_coefficient * w_norm / (g_norm + wd * w_norm + 1e-8)
        if zero_norm_fallback:
          local_lr = jnp.where((w_norm > 0) & (g_norm > 0), local_lr, lr)
      else:
        local_lr = lr
      return momentum * buf + local_lr * (g + wd * w)

    buf = jax.tree.map(leaf, grads, params, state.buf, trust, decay)
    return jax.tree.map(jnp.negative, buf), AuthorsLarsState(state.count + 1, buf)

  return optax.GradientTransformation(init, update)


def make_optimizer(optim_config, schedule: Callable) -> optax.GradientTransformation:
  """The optimizer named by config.optim (one transformation over all trainable params)."""
  c = optim_config
  wd_mask = kernel_mask if c.weight_decay_mask == "kernels" else None
  if c.name == "sgd":
    return optax.chain(
      optax.add_decayed_weights(c.weight_decay, mask=wd_mask),
      optax.trace(decay=c.momentum, nesterov=c.nesterov),
      optax.scale_by_learning_rate(schedule),
    )
  if c.name == "adamw":
    return optax.adamw(schedule, b1=c.momentum, b2=0.999, eps=1e-8, weight_decay=c.weight_decay, mask=wd_mask)
  if c.name != "lars":
    raise ValueError(f"Unknown config.optim.name {c.name!r}; choose one of {OPTIMIZERS}.")
  if c.lars_form in ("authors", "authors_fallback"):
    return authors_lars(
      schedule,
      c.momentum,
      c.trust_coefficient,
      c.weight_decay,
      c.weight_decay_mask,
      zero_norm_fallback=c.lars_form == "authors_fallback",
    )
  if c.lars_form == "deepmind":
    return optax.chain(
      optax.add_decayed_weights(c.weight_decay, mask=wd_mask),
      optax.masked(optax.scale_by_trust_ratio(trust_coefficient=c.trust_coefficient), kernel_mask),
      optax.trace(decay=c.momentum),
      optax.scale_by_learning_rate(schedule),
    )
  if c.lars_form == "optax":
    return optax.lars(
      schedule,
      weight_decay=c.weight_decay,
      weight_decay_mask=wd_mask if wd_mask is not None else True,
      trust_coefficient=c.trust_coefficient,
      trust_ratio_mask=kernel_mask,
      momentum=c.momentum,
    )
  raise ValueError(f"Unknown config.optim.lars_form {c.lars_form!r}; choose one of {LARS_FORMS}.")
