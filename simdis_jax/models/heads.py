"""Projector and predictor MLPs (docs/spec.md "Networks")."""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from simdis_jax.models.resnet import batch_norm, output_dtype


def torch_linear_kernel_init(key, shape, dtype=jnp.float32):
  """PyTorch nn.Linear weight init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1.0 / jnp.sqrt(shape[0])
  return jax.random.uniform(key, shape, dtype, -bound, bound)


class TorchDense(nn.Module):
  """Dense layer initialised like PyTorch's nn.Linear (weight and bias)."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    fan_in = x.shape[-1]
    bound = 1.0 / jnp.sqrt(fan_in)
    kernel = self.param("kernel", torch_linear_kernel_init, (fan_in, self.features))
    bias = self.param("bias", lambda k, s: jax.random.uniform(k, s, jnp.float32, -bound, bound), (self.features,))
    y = jnp.dot(x.astype(self.dtype), kernel.astype(self.dtype))
    return y + bias.astype(self.dtype)


class MLP(nn.Module):
  """Linear(hidden) -> BN -> ReLU -> Linear(out): the BYOL projector/predictor."""
  hidden_dim: int
  out_dim: int
  dtype: Any = jnp.float32
  bn_running_var: str = "biased"

  @nn.compact
  def __call__(self, x, train: bool = True, bn_axis_name: Optional[str] = None):
    x = TorchDense(self.hidden_dim, self.dtype, name="dense1")(x)
    x = batch_norm(train, bn_axis_name, self.dtype, self.bn_running_var)(name="bn")(x)
    x = nn.relu(x)
    return TorchDense(self.out_dim, self.dtype, name="dense2")(x).astype(output_dtype(self.dtype))


class PlainMLP(nn.Module):
  """Linear(hidden) -> ReLU -> Linear(out), no BN: MoCo-v2's projection head (and SEED's student head)."""
  hidden_dim: int
  out_dim: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True, bn_axis_name: Optional[str] = None):
    del train, bn_axis_name  # no BN: the same function in train and eval mode
    x = nn.relu(TorchDense(self.hidden_dim, self.dtype, name="dense1")(x))
    return TorchDense(self.out_dim, self.dtype, name="dense2")(x).astype(output_dtype(self.dtype))


# config.model.<net>.projector -> the projector's module ("byol": with BN, the default; "moco": without).
PROJECTORS = ("byol", "moco")
