"""Projector and predictor MLPs (docs/spec.md "Networks").

style="haiku" builds them as DeepMind's BYOL does (byol/utils/networks.py MLP: hk.Linear with bias ->
hk.BatchNorm -> relu -> hk.Linear(with_bias=False)): dm-haiku's Linear init (truncated normal, stddev
1/sqrt(fan_in), bias 0) and Haiku's BN averages; head_bias=False drops the last layer's bias.
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from simdis_jax.models import archs
from simdis_jax.models.resnet import batch_norm, haiku_kernel_init, output_dtype


def torch_linear_kernel_init(key, shape, dtype=jnp.float32):
  """PyTorch nn.Linear weight init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / jnp.sqrt(shape[0])
  return jax.random.uniform(key, shape, dtype, -bound, bound)


class TorchDense(nn.Module):
  """Dense layer initialised like PyTorch's nn.Linear (weight and bias), or like hk.Linear (style="haiku")."""

  features: int
  dtype: Any = jnp.float32
  use_bias: bool = True
  style: str = "torchvision"

  @nn.compact
  def __call__(self, x):
    fan_in = x.shape[-1]
    bound = 1.0 / jnp.sqrt(fan_in)
    haiku = self.style == "haiku"
    kernel = self.param("kernel", haiku_kernel_init if haiku else torch_linear_kernel_init, (fan_in, self.features))
    y = jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype))
    if not self.use_bias:
      return y
    init = (
      (lambda k, s: jnp.zeros(s, jnp.float32))
      if haiku
      else (lambda k, s: jax.random.uniform(k, s, jnp.float32, -bound, bound))
    )
    return y + self.param("bias", init, (self.features,)).astype(self.dtype)


class MLP(nn.Module):
  """Linear(hidden) -> BN -> ReLU -> Linear(out): the BYOL projector/predictor."""

  hidden_dim: int
  out_dim: int
  dtype: Any = jnp.float32
  bn_running_var: str = "biased"
  head_bias: bool = True  # the last Linear's bias (DeepMind's has none)
  style: str = "torchvision"  # haiku: dm-haiku's init and BN averages (module docstring)

  @nn.compact
  def __call__(self, x, train: bool = True, bn_axis_name: Optional[str] = None):
    x = TorchDense(self.hidden_dim, self.dtype, style=self.style, name="dense1")(x)
    running_var = "haiku" if self.style == "haiku" else self.bn_running_var
    x = batch_norm(train, bn_axis_name, self.dtype, running_var)(name="bn")(x)
    x = nn.relu(x)
    x = TorchDense(self.out_dim, self.dtype, self.head_bias, self.style, name="dense2")(x)
    return x.astype(output_dtype(self.dtype))


class PlainMLP(nn.Module):
  """Linear(hidden) -> ReLU -> Linear(out), no BN: MoCo-v2's projection head (and SEED's student head)."""

  hidden_dim: int
  out_dim: int
  dtype: Any = jnp.float32
  head_bias: bool = True
  style: str = "torchvision"

  @nn.compact
  def __call__(self, x, train: bool = True, bn_axis_name: Optional[str] = None):
    del train, bn_axis_name  # no BN: the same function in train and eval mode
    x = nn.relu(TorchDense(self.hidden_dim, self.dtype, style=self.style, name="dense1")(x))
    x = TorchDense(self.out_dim, self.dtype, self.head_bias, self.style, name="dense2")(x)
    return x.astype(output_dtype(self.dtype))


# config.model.<net>.projector -> the projector's module (the choices: models/archs.py).
PROJECTORS = archs.PROJECTORS
