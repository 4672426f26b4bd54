"""BatchNorm whose running variance keeps PyTorch's convention (model.bn_running_var="unbiased").

Both frameworks normalise a training batch by its biased variance; they differ in
what the running average accumulates: Flax the biased batch variance, PyTorch the
unbiased one (× n / (n − 1), n values per channel). Eval-mode outputs use the running
variance as stored, so a PyTorch checkpoint's statistics are used unchanged either
way; the convention only decides how training moves them (11% apart where a BN sees
8 values per channel, e.g. a 2×2 map at batch 2).
"""

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

RUNNING_VAR_CONVENTIONS = ("biased", "unbiased")


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
    # The biased batch variance flax just used, as flax computes it (float32, mean of squares minus
    # squared mean, over the SyncBN axis when set); n counts every value per channel in that reduction.
    xf = x.astype(jnp.float32)
    axes = tuple(range(x.ndim - 1))
    mean, mean2 = jnp.mean(xf, axes), jnp.mean(jnp.square(xf), axes)
    n = 1
    for d in x.shape[:-1]:
      n *= d
    if self.axis_name is not None:
      mean, mean2 = lax.pmean((mean, mean2), self.axis_name)
      n = n * lax.psum(1, self.axis_name)
    var = jnp.maximum(0.0, mean2 - jnp.square(mean))
    unbiased = var * (n / jnp.maximum(n - 1, 1))
    self.put_variable("batch_stats", "var", self.momentum * old_var + (1.0 - self.momentum) * unbiased)
    return y
