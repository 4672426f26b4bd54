"""Depthwise convolutions as shifted multiply-adds, forward and backward (`model.depthwise_impl=shifted`).

XLA:CPU computes a depthwise convolution (feature_group_count = channels) and above all its kernel
gradient with slow generic loops. Here the forward pass is k*k shifted slices of the padded input,
each times one kernel tap, summed in one elementwise loop; the input gradient is the same loop over
the (stride-dilated) output gradient with the kernel flipped; the kernel gradient sums each tap's
products over the rows of a block first (elementwise adds of strided slices, one loop) and reduces
the small remainder after, so that no k*k shifted copies of the input are written out. Values and
gradients equal `lax.conv_general_dilated`'s up to the order of float additions.

Only depthwise convolutions are taken this way (kernel HWIO (k, k, 1, C), C groups, square
stride, symmetric padding); any other convolution is left to lax.
"""

import functools
from typing import Any, Callable, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from simdis_jax.models.archs import DEPTHWISE_IMPLS

IMPLS = DEPTHWISE_IMPLS


def _strided(x, start_h: int, start_w: int, count_h: int, count_w: int, stride: int):
  """x[:, start_h::stride][:count_h], x[:, :, start_w::stride][:count_w] as one static slice."""
  return lax.slice(
    x,
    (0, start_h, start_w, 0),
    (x.shape[0], start_h + stride * (count_h - 1) + 1, start_w + stride * (count_w - 1) + 1, x.shape[3]),
    (1, stride, stride, 1),
  )


def _out_size(size: int, kernel: int, stride: int, pad: int) -> int:
  return (size + 2 * pad - kernel) // stride + 1


def _forward(x, kernel, stride: int, pad: int):
  k = kernel.shape[0]
  xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  ho, wo = _out_size(x.shape[1], k, stride, pad), _out_size(x.shape[2], k, stride, pad)
  y = None
  for a in range(k):
    for b in range(k):
      term = _strided(xp, a, b, ho, wo, stride) * kernel[a, b, 0]
      y = term if y is None else y + term
  return y


def _input_grad(g, kernel, stride: int, pad: int, in_hw: Tuple[int, int]):
  """dx: the output gradient dilated by the stride, padded by k - 1, correlated with the flipped kernel."""
  k = kernel.shape[0]
  h, w = in_hw
  ho, wo = g.shape[1], g.shape[2]
  # gd[s * i] = g[i]; padded so that index u + k - 1 - a reads gd[u - a] for u over the padded input.
  extra_h = h + 2 * pad - (stride * (ho - 1) + k)
  extra_w = w + 2 * pad - (stride * (wo - 1) + k)
  zero = jnp.zeros((), g.dtype)
  gp = lax.pad(
    g, zero, ((0, 0, 0), (k - 1, k - 1 + extra_h, stride - 1), (k - 1, k - 1 + extra_w, stride - 1), (0, 0, 0))
  )
  dx = None
  for a in range(k):
    for b in range(k):
      term = lax.slice(
        gp, (0, pad + k - 1 - a, pad + k - 1 - b, 0), (g.shape[0], pad + k - 1 - a + h, pad + k - 1 - b + w, g.shape[3])
      )
      term = term * kernel[a, b, 0]
      dx = term if dx is None else dx + term
  return dx


def _row_block(rows: int, limit: int = 16) -> int:
  """The largest divisor of `rows` not above `limit` (rows summed per block of the kernel gradient)."""
  return max(d for d in range(1, min(rows, limit) + 1) if rows % d == 0)


def _kernel_grad(x, g, k: int, stride: int, pad: int):
  """dw[a, b, 0, c] = sum over n, i, j of xp[n, s*i + a, s*j + b, c] * g[n, i, j, c]."""
  xp = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  n, ho, wo, c = g.shape
  block = _row_block(ho)
  blocks = ho // block
  taps = []
  for a in range(k):
    for b in range(k):
      partial = None
      for r in range(block):
        # rows r, r + block, r + 2 block, ... of the output and the input rows they read.
        xs = lax.slice(
          xp,
          (0, a + stride * r, b, 0),
          (n, a + stride * r + stride * block * (blocks - 1) + 1, b + stride * (wo - 1) + 1, c),
          (1, stride * block, stride, 1),
        )
        gs = lax.slice(g, (0, r, 0, 0), (n, r + block * (blocks - 1) + 1, wo, c), (1, block, 1, 1))
        term = xs * gs
        partial = term if partial is None else partial + term
      taps.append(partial)
  stacked = jnp.stack(taps)  # (k*k, n, blocks, wo, c)
  return jnp.sum(stacked.reshape(k * k, -1, c), axis=1).reshape(k, k, 1, c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def depthwise_conv(x, kernel, stride: int, pad: int):
  """Depthwise convolution of NHWC `x` with HWIO `kernel` (k, k, 1, C), square stride, symmetric padding."""
  return _forward(x, kernel, stride, pad)


def _fwd(x, kernel, stride, pad):
  return _forward(x, kernel, stride, pad), (x, kernel)


def _bwd(stride, pad, residuals, g):
  x, kernel = residuals
  dx = _input_grad(g, kernel, stride, pad, (x.shape[1], x.shape[2]))
  dw = _kernel_grad(x, g, kernel.shape[0], stride, pad)
  return dx.astype(x.dtype), dw.astype(kernel.dtype)


depthwise_conv.defvjp(_fwd, _bwd)


class DepthwiseConv(nn.Module):
  """nn.Conv(features=C, kernel (k, k), feature_group_count=C, no bias) on C input channels, computed by
  `depthwise_conv`: the same 'kernel' parameter (HWIO (k, k, 1, C)), the same initialisation."""

  features: int
  kernel_size: int
  stride: int
  padding: int
  kernel_init: Callable
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    if x.shape[-1] != self.features:
      raise ValueError(
        f"DepthwiseConv: {x.shape[-1]} input channels for {self.features} groups; a depthwise "
        "convolution has as many groups as input and output channels."
      )
    k = self.kernel_size
    kernel = self.param("kernel", self.kernel_init, (k, k, 1, self.features), jnp.float32)
    x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
    return depthwise_conv(x, kernel, self.stride, self.padding)


def resolve(name: str) -> str:
  """`model.depthwise_impl` with auto resolved: shifted on CPU (measured faster: docs/architectures.md), xla
  elsewhere."""
  if name not in IMPLS:
    raise ValueError(f"depthwise_impl={name!r}: choose one of {list(IMPLS)}.")
  if name == "auto":
    return "shifted" if jax.default_backend() == "cpu" else "xla"
  return name


def from_config(config) -> str:
  """The networks' depthwise-convolution implementation: config.model.depthwise_impl resolved (absent in
  configs saved before the key: auto)."""
  return resolve(config.model.get("depthwise_impl", "auto"))
