"""Blocks shared by the mobile networks and the ViT: BatchNorm, conv-BN-activation, squeeze-excite,
inverted residual (MobileNetV3 / EfficientNet MBConv) and stochastic depth.

Convolutions pad symmetrically by (k - 1) // 2 as PyTorch's Conv2dNormActivation does (Flax's
'SAME' pads asymmetrically at stride 2) and are initialised like torchvision's mobile networks:
Kaiming-normal (fan_out), BN scale 1 and offset 0, zero biases.
"""

import functools
from typing import Any, Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from simdis_jax.models import depthwise, resnet

conv_kernel_init = resnet.conv_kernel_init


def batch_norm(
  train: bool, axis_name: Optional[str], dtype: Any, momentum: float, epsilon: float
) -> Callable[..., nn.Module]:
  """BatchNorm as resnet.batch_norm builds it (axis_name set = SyncBN) with the reference's momentum/epsilon.

  `momentum` is Flax's (the weight of the old running value): PyTorch's momentum m is 1 - m here.
  """
  return functools.partial(
    nn.BatchNorm, use_running_average=not train, momentum=momentum, epsilon=epsilon, axis_name=axis_name, dtype=dtype
  )


def make_divisible(value: float, divisor: int = 8) -> int:
  """Channels rounded to a multiple of `divisor`, never below 90% of `value` (the MobileNet rule)."""
  rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
  return rounded + divisor if rounded < 0.9 * value else rounded


def small_image_strides(strides: Sequence[int]) -> Tuple[int, Tuple[int, ...]]:
  """(stem stride, block strides) of the CIFAR-style variant: a stride-1 stem and the first stride-2
  block at stride 1, so the network downsamples 8x instead of 32x."""
  strides = list(strides)
  strides[strides.index(2)] = 1
  return 1, tuple(strides)


def conv_factory(conv_impl: str, dtype: Any, depthwise_impl: str = "xla") -> Callable[..., nn.Module]:
  """conv(features, kernel, stride, groups, name): resnet.Conv (matmul / mixed) for dense convolutions when asked,
  depthwise.DepthwiseConv (shifted multiply-adds) for grouped ones when asked, nn.Conv otherwise; all hold
  the same HWIO 'kernel', so checkpoints load either way."""

  def conv(features: int, kernel: int, stride: int = 1, groups: int = 1, name: Optional[str] = None):
    pad = (kernel - 1) // 2
    padding = ((pad, pad), (pad, pad))
    if depthwise_impl == "shifted" and groups > 1:  # the networks' grouped convolutions are all depthwise
      return depthwise.DepthwiseConv(features, kernel, stride, pad, conv_kernel_init, dtype, name=name)
    if conv_impl in ("matmul", "mixed") and groups == 1:
      return resnet.Conv(
        features,
        (kernel, kernel),
        (stride, stride),
        padding=padding,
        use_bias=False,
        kernel_init=conv_kernel_init,
        dtype=dtype,
        name=name,
        lax_min_size=resnet.LAX_MIN_SIZE if conv_impl == "mixed" else 0,
      )
    return nn.Conv(
      features,
      (kernel, kernel),
      (stride, stride),
      padding=padding,
      feature_group_count=groups,
      use_bias=False,
      kernel_init=conv_kernel_init,
      dtype=dtype,
      name=name,
    )

  return conv


class ConvBN(nn.Module):
  """Convolution (no bias) -> BatchNorm -> optional activation."""

  features: int
  kernel: int
  conv: Callable[..., nn.Module]
  norm: Callable[..., nn.Module]
  stride: int = 1
  groups: int = 1
  act: Optional[Callable] = None

  @nn.compact
  def __call__(self, x):
    x = self.conv(self.features, self.kernel, self.stride, self.groups, name="conv")(x)
    x = self.norm(name="bn")(x)
    return x if self.act is None else self.act(x)


class SqueezeExcite(nn.Module):
  """Channel gates from the pooled map: fc(squeeze) -> act -> fc(channels) -> gate (1x1 convs with bias)."""

  squeeze: int
  act: Callable
  gate: Callable
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    dense = functools.partial(nn.Dense, kernel_init=conv_kernel_init, bias_init=nn.initializers.zeros, dtype=self.dtype)
    s = jnp.mean(x, axis=(1, 2), keepdims=True)
    s = self.act(dense(self.squeeze, name="fc1")(s))
    s = self.gate(dense(x.shape[-1], name="fc2")(s))
    return x * s


class DropPath(nn.Module):
  """Stochastic depth: drops a residual branch per example with probability `rate`, scaling survivors by
  1 / (1 - rate). Draws from the 'dropout' RNG stream, so applying with deterministic=False and rate > 0
  needs rngs={'dropout': key}."""

  rate: float

  @nn.compact
  def __call__(self, x, deterministic: bool):
    if deterministic or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, jnp.zeros((), x.dtype))


class InvertedResidual(nn.Module):
  """[1x1 expand -> BN -> act] -> kxk depthwise -> BN -> act -> [squeeze-excite] -> 1x1 project -> BN,
  plus the input when the shapes allow (MobileNetV3's bneck, EfficientNet's MBConv)."""

  expanded: int
  out: int
  kernel: int
  stride: int
  act: Callable
  se_squeeze: int  # 0 = no squeeze-excite
  se_act: Callable
  se_gate: Callable
  conv: Callable[..., nn.Module]
  norm: Callable[..., nn.Module]
  drop_path_rate: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool, stochastic_depth: bool = False):
    # train: BN mode; stochastic_depth: drop the branch (only the train step's training forwards ask for it).
    residual = x
    y = x
    if self.expanded != x.shape[-1]:
      y = ConvBN(self.expanded, 1, self.conv, self.norm, act=self.act, name="expand")(y)
    y = ConvBN(
      self.expanded,
      self.kernel,
      self.conv,
      self.norm,
      self.stride,
      groups=self.expanded,
      act=self.act,
      name="depthwise",
    )(y)
    if self.se_squeeze:
      y = SqueezeExcite(self.se_squeeze, self.se_act, self.se_gate, self.dtype, name="se")(y)
    y = ConvBN(self.out, 1, self.conv, self.norm, name="project")(y)
    if self.stride == 1 and residual.shape[-1] == self.out:
      return residual + DropPath(self.drop_path_rate, name="drop_path")(y, deterministic=not stochastic_depth)
    return y
