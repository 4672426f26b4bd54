"""ResNet v1.5 encoders in flax.linen (SPEC.md "Networks", "Small numerical facts").

v1.5 puts the stride on the 3x3 convolution of a bottleneck block. Padding is
explicit and PyTorch-style (7x7/2 pad 3, 3x3 pad 1, max-pool 3/2 pad 1), because
Flax's 'SAME' pads asymmetrically at stride 2. Initialisation follows
torchvision: Kaiming-normal (fan_out) convolutions, BN scale 1 and offset 0, and
no zero-init of a block's last BN (the paper's setting).
"""

import functools
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

# torchvision's kaiming_normal_(mode="fan_out", nonlinearity="relu"); JAX's "normal"
# distribution is the untruncated Gaussian.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def batch_norm(train: bool, axis_name: Optional[str], dtype: Any = jnp.float32) -> Callable[..., nn.Module]:
  """BatchNorm with PyTorch's momentum 0.1 / eps 1e-5; axis_name set = SyncBN."""
  # PyTorch's momentum 0.1 weights the new batch; Flax's momentum weights the old
  # running value, hence 0.9.
  return functools.partial(
      nn.BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5,
      axis_name=axis_name, dtype=dtype)


class Conv(nn.Module):
  """A convolution computed as one matmul over gathered kernel taps (im2col); parameters exactly nn.Conv's.

  Named Conv so that parameter paths ("Conv_0/kernel", HWIO) match nn.Conv's and
  checkpoints load either way. XLA:CPU lowers the weight and input gradients of
  small-spatial convolutions (ResNet stage 4 at 64 px: 2x2 maps) to slow
  generic loops; as one matmul, forward and both gradients are dense matmuls.
  """
  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = (1, 1)
  padding: Any = ((0, 0), (0, 0))
  use_bias: bool = False
  kernel_init: Callable = conv_kernel_init
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    (kh, kw), (sh, sw) = self.kernel_size, self.strides
    kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features), jnp.float32)
    padding = ((0, 0), (0, 0)) if self.padding == "VALID" else tuple(self.padding)
    x = jnp.pad(x.astype(self.dtype), ((0, 0),) + padding + ((0, 0),))
    out_h, out_w = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    # One strided slice per kernel tap, in the kernel's (kh, kw, in) order.
    taps = [x[:, i:i + sh * (out_h - 1) + 1:sh, j:j + sw * (out_w - 1) + 1:sw, :]
            for i in range(kh) for j in range(kw)]
    patches = taps[0] if len(taps) == 1 else jnp.concatenate(taps, axis=-1)
    return jnp.dot(patches, kernel.reshape(-1, self.features).astype(self.dtype))


class BasicBlock(nn.Module):
  """Two 3x3 convolutions (ResNet-18/34)."""
  filters: int
  strides: int
  norm: Callable[..., nn.Module]
  conv: Callable[..., nn.Module]

  @nn.compact
  def __call__(self, x):
    residual = x
    y = self.conv(self.filters, (3, 3), (self.strides, self.strides), padding=((1, 1), (1, 1)))(x)
    y = nn.relu(self.norm()(y))
    y = self.conv(self.filters, (3, 3), padding=((1, 1), (1, 1)))(y)
    y = self.norm()(y)
    if residual.shape != y.shape:
      residual = self.conv(self.filters, (1, 1), (self.strides, self.strides), name="proj_conv")(residual)
      residual = self.norm(name="proj_bn")(residual)
    return nn.relu(residual + y)


class BottleneckBlock(nn.Module):
  """1x1 -> 3x3 (strided, v1.5) -> 1x1 x4 (ResNet-50 and deeper)."""
  filters: int
  strides: int
  norm: Callable[..., nn.Module]
  conv: Callable[..., nn.Module]

  @nn.compact
  def __call__(self, x):
    residual = x
    y = nn.relu(self.norm()(self.conv(self.filters, (1, 1))(x)))
    y = self.conv(self.filters, (3, 3), (self.strides, self.strides), padding=((1, 1), (1, 1)))(y)
    y = nn.relu(self.norm()(y))
    y = self.norm()(self.conv(self.filters * 4, (1, 1))(y))
    if residual.shape != y.shape:
      residual = self.conv(self.filters * 4, (1, 1), (self.strides, self.strides), name="proj_conv")(residual)
      residual = self.norm(name="proj_bn")(residual)
    return nn.relu(residual + y)


class ResNet(nn.Module):
  """ResNet v1.5 trunk returning the globally average-pooled feature."""
  stage_sizes: Sequence[int]
  block_cls: Any
  width: int = 64            # filters of the first stage; 64 is the standard network
  cifar_stem: bool = False   # 3x3/1 stem conv and no max-pool, for small images
  dtype: Any = jnp.float32
  conv_impl: str = "xla"     # xla: lax convolutions | matmul: Conv above (faster on XLA:CPU)

  @nn.compact
  def __call__(self, x, train: bool = True, bn_axis_name: Optional[str] = None):
    conv = functools.partial(Conv if self.conv_impl == "matmul" else nn.Conv, use_bias=False,
                             kernel_init=conv_kernel_init, dtype=self.dtype, padding="VALID")
    norm = batch_norm(train, bn_axis_name, self.dtype)
    x = x.astype(self.dtype)
    if self.cifar_stem:
      x = conv(self.width, (3, 3), padding=((1, 1), (1, 1)), name="stem_conv")(x)
      x = nn.relu(norm(name="stem_bn")(x))
    else:
      x = conv(self.width, (7, 7), (2, 2), padding=((3, 3), (3, 3)), name="stem_conv")(x)
      x = nn.relu(norm(name="stem_bn")(x))
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = self.block_cls(self.width * 2 ** i, strides, norm, conv, name=f"stage{i + 1}_block{j + 1}")(x)
    return jnp.mean(x, axis=(1, 2)).astype(jnp.float32)


STAGE_SIZES = {
    10: (1, 1, 1, 1),
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
}


def resnet(depth: int, width: int = 64, cifar_stem: bool = False, dtype: Any = jnp.float32, name: Optional[str] = None,
           conv_impl: str = "xla") -> ResNet:
  """ResNet-{10,18,34,50,101,152,200}; depth < 50 uses basic blocks."""
  if depth not in STAGE_SIZES:
    raise ValueError(f"Unknown ResNet depth {depth}; choose one of {sorted(STAGE_SIZES)}.")
  block = BasicBlock if depth < 50 else BottleneckBlock
  return ResNet(STAGE_SIZES[depth], block, width=width, cifar_stem=cifar_stem, dtype=dtype, name=name,
                conv_impl=conv_impl)


def feature_dim(depth: int, width: int = 64) -> int:
  """Size of the pooled feature: 512 for ResNet-18, 2048 for ResNet-50 at width 64."""
  return width * 8 * (4 if depth >= 50 else 1)
