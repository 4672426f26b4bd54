"""MobileNetV3-Large and -Small encoders (Howard et al. 2019), as torchvision defines them.

Block tables, squeeze-excite widths (make_divisible(expanded / 4)), hard-swish / hard-sigmoid,
BatchNorm epsilon 1e-3 and momentum 0.01 (PyTorch convention; 0.99 in Flax's) and initialisation
follow torchvision's `mobilenet_v3_large/small`; with a 1000-class linear layer on the feature
the parameter counts are torchvision's exactly (5,483,032 and 2,542,856).

The encoder ends with torchvision's first classifier layer, Linear(960 -> 1280) (Small: 576 ->
1024) + hard-swish, so the feature is the 1280-d (1024-d) penultimate layer the paper's network
pools into; torchvision's dropout (0.2) before the last layer belongs to supervised training and
is left out. torchvision's MobileNetV3 has no stochastic depth, so neither does this one.

`small_images=True` is the CIFAR-style variant for 28-64 px inputs: a stride-1 stem and the first
stride-2 block at stride 1 (overall stride 8 instead of 32), same parameters.
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from simdis_jax.models import blocks

# (kernel, expanded channels, output channels, squeeze-excite, hard-swish (else ReLU), stride);
# the stem gives 16 channels.
LARGE = (
  (3, 16, 16, False, False, 1),
  (3, 64, 24, False, False, 2),
  (3, 72, 24, False, False, 1),
  (5, 72, 40, True, False, 2),
  (5, 120, 40, True, False, 1),
  (5, 120, 40, True, False, 1),
  (3, 240, 80, False, True, 2),
  (3, 200, 80, False, True, 1),
  (3, 184, 80, False, True, 1),
  (3, 184, 80, False, True, 1),
  (3, 480, 112, True, True, 1),
  (3, 672, 112, True, True, 1),
  (5, 672, 160, True, True, 2),
  (5, 960, 160, True, True, 1),
  (5, 960, 160, True, True, 1),
)
SMALL = (
  (3, 16, 16, True, False, 2),
  (3, 72, 24, False, False, 2),
  (3, 88, 24, False, False, 1),
  (5, 96, 40, True, True, 2),
  (5, 240, 40, True, True, 1),
  (5, 240, 40, True, True, 1),
  (5, 120, 48, True, True, 1),
  (5, 144, 48, True, True, 1),
  (5, 288, 96, True, True, 2),
  (5, 576, 96, True, True, 1),
  (5, 576, 96, True, True, 1),
)
# variant: (block table, channels of the last 1x1 convolution, feature size)
VARIANTS = {"large": (LARGE, 960, 1280), "small": (SMALL, 576, 1024)}
BN_MOMENTUM = 0.99  # PyTorch's 0.01
BN_EPSILON = 1e-3


class MobileNetV3(nn.Module):
  """MobileNetV3 trunk returning the pooled, projected feature (1280-d Large, 1024-d Small)."""

  variant: str = "large"
  small_images: bool = False
  dtype: Any = jnp.float32
  conv_impl: str = "xla"
  depthwise_impl: str = "xla"  # xla | shifted (models/depthwise.py)

  @nn.compact
  def __call__(self, x, train: bool = True, bn_axis_name: Optional[str] = None):
    table, last_conv, feature = VARIANTS[self.variant]
    conv = blocks.conv_factory(self.conv_impl, self.dtype, self.depthwise_impl)
    norm = blocks.batch_norm(train, bn_axis_name, self.dtype, BN_MOMENTUM, BN_EPSILON)
    hswish = jax.nn.hard_swish
    strides = tuple(row[-1] for row in table)
    stem_stride, strides = blocks.small_image_strides(strides) if self.small_images else (2, strides)
    x = x.astype(self.dtype)
    x = blocks.ConvBN(16, 3, conv, norm, stem_stride, act=hswish, name="stem")(x)
    for i, ((kernel, expanded, out, se, hs, _), stride) in enumerate(zip(table, strides)):
      x = blocks.InvertedResidual(
        expanded,
        out,
        kernel,
        stride,
        act=hswish if hs else nn.relu,
        se_squeeze=blocks.make_divisible(expanded // 4) if se else 0,
        se_act=nn.relu,
        se_gate=jax.nn.hard_sigmoid,
        conv=conv,
        norm=norm,
        dtype=self.dtype,
        name=f"block{i + 1}",
      )(x, train)
    x = blocks.ConvBN(last_conv, 1, conv, norm, act=hswish, name="last_conv")(x)
    x = jnp.mean(x, axis=(1, 2))
    # torchvision initialises its linear layers with N(0, 0.01) and zero biases.
    x = nn.Dense(feature, kernel_init=nn.initializers.normal(0.01), dtype=self.dtype, name="head")(x)
    return hswish(x).astype(jnp.float32)


def feature_dim(variant: str) -> int:
  """Size of the feature: 1280 (Large) or 1024 (Small)."""
  return VARIANTS[variant][2]
