"""BatchNorm whose running variance keeps PyTorch's convention (model.bn_running_var="unbiased"), and
DeepMind's Haiku BatchNorm with its two moving averages (model.<net>.style="haiku").

Both frameworks normalise a training batch by its biased variance; they differ in
what the running average accumulates: Flax the biased batch variance, PyTorch the
unbiased one (× n / (n − 1), n values per channel). Eval-mode outputs use the running
variance as stored, so a PyTorch checkpoint's statistics are used unchanged either
way; the convention only decides how training moves them (11% apart where a BN sees
8 values per channel, e.g. a 2×2 map at batch 2).

Haiku's hk.BatchNorm (dm-haiku's batch_norm.py, used by BYOL's utils/networks.py) keeps, per statistic,
an hk.ExponentialMovingAverage (moving_averages.py) with zero-debiasing: counter ← counter + 1,
hidden ← hidden·d + value·(1 − d), average = hidden / (1 − d^counter) (d = decay_rate = 0.9 in BYOL's
configs/byol.py), and normalises by `average` in eval mode. HaikuBatchNorm stores `average` as `mean` /
`var` (what eval mode and every reader of the statistics use) and the raw averages as `mean_hidden` /
`var_hidden` beside one `counter` (Haiku's mean and var counters always move together).
"""

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

RUNNING_VAR_CONVENTIONS = ("biased", "unbiased")


def batch_moments(x, dtype, axis_name):
  """(mean, biased variance, n) of a batch as flax.linen.BatchNorm computes them: in the compute dtype promoted
  to at least float32 (float32 in training, float64 in a float64 step), mean of squares minus squared mean
  clipped at 0, over the SyncBN axis when set; n counts every value per channel in that reduction."""
  xf = x.astype(jnp.promote_types(x.dtype if dtype is None else dtype, jnp.float32))
  axes = tuple(range(x.ndim - 1))
  mean, mean2 = jnp.mean(xf, axes), jnp.mean(jnp.square(xf), axes)
  n = 1
  for d in x.shape[:-1]:
    n *= d
  if axis_name is not None:
    mean, mean2 = lax.pmean((mean, mean2), axis_name)
    n = n * lax.psum(1, axis_name)
  return mean, jnp.maximum(0.0, mean2 - jnp.square(mean)), n


class BatchNorm(nn.BatchNorm):
  """flax.linen.BatchNorm (same parameters, statistics, names and outputs) with an unbiased running variance.

  Named BatchNorm so that parameter paths ("BatchNorm_0/scale") are those of nn.BatchNorm.
  """

  @nn.compact
  def __call__(self, x, use_running_average=None, *, mask=None):
    frozen = self.use_running_average if use_running_average is None else use_running_average
    old_var = None if (frozen or self.is_initializing()) else self.get_variable("batch_stats", "var")
    y = super().__call__(x, use_running_average=use_running_average, mask=mask)
    if old_var is None:
      return y
    _, var, n = batch_moments(x, self.dtype, self.axis_name)
    unbiased = var * (n / jnp.maximum(n - 1, 1))
    self.put_variable("batch_stats", "var", self.momentum * old_var + (1.0 - self.momentum) * unbiased)
    return y


class HaikuBatchNorm(nn.BatchNorm):
  """flax.linen.BatchNorm (same parameters, batch normalisation and eval-mode formula) keeping Haiku's two
  averages: `mean`/`var` hold the debiased `average` used in eval mode, `mean_hidden`/`var_hidden` the raw
  moving average (`hidden`), `counter` the updates so far (see the module docstring for the formulas)."""

  @nn.compact
  def __call__(self, x, use_running_average=None, *, mask=None):
    frozen = self.use_running_average if use_running_average is None else use_running_average
    shape = (x.shape[-1],)
    hidden = {k: self.variable("batch_stats", f"{k}_hidden", jnp.zeros, shape, jnp.float32) for k in ("mean", "var")}
    counter = self.variable("batch_stats", "counter", jnp.zeros, (), jnp.float32)
    y = super().__call__(x, use_running_average=use_running_average, mask=mask)
    if frozen or self.is_initializing():
      return y
    mean, var, _ = batch_moments(x, self.dtype, self.axis_name)
    decay = self.momentum
    count = counter.value + 1
    for key, value in (("mean", mean), ("var", var)):
      raw = hidden[key].value * decay + value * (1.0 - decay)
      hidden[key].value = raw
      self.put_variable("batch_stats", key, raw / (1.0 - jnp.power(jnp.asarray(decay, raw.dtype), count)))
    counter.value = count
    return y


# Parameter and statistic paths are nn.BatchNorm's ("BatchNorm_0/scale"): flax names modules by class name.
HaikuBatchNorm.__name__ = HaikuBatchNorm.__qualname__ = "BatchNorm"
