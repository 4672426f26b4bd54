"""ResNet v1.5 encoders in flax.linen (docs/spec.md "Networks", "Small numerical facts").

v1.5 puts the stride on the 3x3 convolution of a bottleneck block. Padding is
explicit and PyTorch-style (7x7/2 pad 3, 3x3 pad 1, max-pool 3/2 pad 1), because
Flax's 'SAME' pads asymmetrically at stride 2; style="haiku" pads 'SAME' on purpose, to compute
DeepMind's Haiku ResNets (imported BYOL checkpoints). Initialisation follows
torchvision: Kaiming-normal (fan_out) convolutions, BN scale 1 and offset 0, and
no zero-init of a block's last BN (the paper's setting). style="haiku" initialises as
dm-haiku does (hk.Conv2D: truncated normal, stddev 1/sqrt(fan_in); a bottleneck's last BN
scale 0, nets/resnet.py BlockV1) and its BNs keep Haiku's two averages (models/batch_norm.py).
"""

import functools
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from simdis_jax.models import archs
from simdis_jax.models import batch_norm as unbiased_bn

# torchvision's kaiming_normal_(mode="fan_out", nonlinearity="relu"); JAX's "normal"
# distribution is the untruncated Gaussian.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def haiku_kernel_init(key, shape, dtype=jnp.float32):
  """dm-haiku's default hk.Conv2D / hk.Linear weights: N(0, 1) truncated to [-2, 2], times 1/sqrt(fan_in)."""
  fan_in = 1
  for d in shape[:-1]:
    fan_in *= d
  return jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype) * (1.0 / fan_in**0.5)


def batch_norm(
  train: bool, axis_name: Optional[str], dtype: Any = jnp.float32, running_var: str = "biased"
) -> Callable[..., nn.Module]:
  """BatchNorm with PyTorch's momentum 0.1 / eps 1e-5; axis_name set = SyncBN; running_var: Flax's or PyTorch's."""
  # PyTorch's momentum 0.1 weights the new batch; Flax's momentum weights the old
  # running value, hence 0.9. "unbiased" keeps PyTorch's running variance (models/batch_norm.py).
  # "haiku": DeepMind's Haiku BN (style="haiku"), its debiased average in eval mode.
  cls = {"unbiased": unbiased_bn.BatchNorm, "haiku": unbiased_bn.HaikuBatchNorm}.get(running_var, nn.BatchNorm)
  return functools.partial(
    cls, use_running_average=not train, momentum=0.9, epsilon=1e-5, axis_name=axis_name, dtype=dtype
  )


def output_dtype(dtype: Any) -> Any:
  """The dtype a network hands on: float32 for float32 and bfloat16 compute, float64 for float64 compute."""
  return jnp.promote_types(dtype, jnp.float32)


STYLES = archs.RESNET_STYLES


def same_pads(size: Sequence[int], kernel_size: Sequence[int], strides: Sequence[int]):
  """TF/Haiku 'SAME' padding of a [H, W] map: ceil(n / s) outputs, the odd pixel of the total on the high side."""
  pads = []
  for n, k, s in zip(size, kernel_size, strides):
    total = max((-(-n // s) - 1) * s + k - n, 0)
    pads.append((total // 2, total - total // 2))
  return tuple(pads)


def _pads(padding, kernel_size):
  if padding == "VALID":
    return ((0, 0),) * len(kernel_size)
  return tuple(tuple(p) for p in padding)


def _im2col(x, kernel_size, strides, pads):
  """[N, H, W, C] -> patches [N, Ho, Wo, kh * kw * C] in the kernel's (kh, kw, in) order; one strided slice per tap."""
  (kh, kw), (sh, sw) = kernel_size, strides
  x = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0),) + tuple((lo, hi, 0) for lo, hi in pads) + ((0, 0, 0),))
  n, h, w, c = x.shape
  out_h, out_w = (h - kh) // sh + 1, (w - kw) // sw + 1
  taps = [
    lax.slice(x, (0, i, j, 0), (n, i + sh * (out_h - 1) + 1, j + sw * (out_w - 1) + 1, c), (1, sh, sw, 1))
    for i in range(kh)
    for j in range(kw)
  ]
  return taps[0] if len(taps) == 1 else lax.concatenate(taps, 3)


def _col2im(dpatches, x_shape, kernel_size, strides, pads):
  """Transpose of _im2col: each tap's slice of dpatches padded back to its input positions, summed (no scatter)."""
  (kh, kw), (sh, sw) = kernel_size, strides
  n, h, w, c = x_shape
  _, out_h, out_w, _ = dpatches.shape
  (ph, _), (pw, _) = pads
  zero = jnp.zeros((), dpatches.dtype)
  dx = None
  for t, (i, j) in enumerate((i, j) for i in range(kh) for j in range(kw)):
    tap = dpatches[..., t * c : (t + 1) * c] if kh * kw > 1 else dpatches
    # Output row r of tap i reads padded input row i + sh * r = input row i - ph + sh * r;
    # negative edge padding crops what fell on the zero padding.
    lo_h, lo_w = i - ph, j - pw
    hi_h, hi_w = h - (lo_h + sh * (out_h - 1) + 1), w - (lo_w + sw * (out_w - 1) + 1)
    part = lax.pad(tap, zero, ((0, 0, 0), (lo_h, hi_h, sh - 1), (lo_w, hi_w, sw - 1), (0, 0, 0)))
    dx = part if dx is None else dx + part
  return dx


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv_matmul(x, kernel, strides, pads):
  """The convolution of x [N, H, W, C] with kernel [kh, kw, C, F] as one matmul over im2col patches."""
  return _conv_matmul_fwd(x, kernel, strides, pads)[0]


def _conv_matmul_fwd(x, kernel, strides, pads):
  kh, kw, _, f = kernel.shape
  patches = _im2col(x, (kh, kw), strides, pads)
  out = jnp.dot(patches, kernel.reshape(-1, f))
  return out, (patches, kernel, x.shape)


def _conv_matmul_bwd(strides, pads, res, g):
  patches, kernel, x_shape = res
  kh, kw, c, f = kernel.shape
  m = g.shape[0] * g.shape[1] * g.shape[2]
  g2 = g.reshape(m, f)
  # Weight gradient: patches^T @ dout, contracting over every output position, on 2-D operands: XLA:CPU
  # then changes the layout of one operand cheaply (autodiff's 4-D form fused that change into BN's
  # backward as a slow transposing loop: 12-22% of the op time).
  dkernel = lax.dot_general(patches.reshape(m, -1), g2, (((0,), (0,)), ((), ())))
  # Input gradient: dout @ kernel^T, then each tap's columns back to its input positions.
  dpatches = lax.dot_general(g, kernel.reshape(-1, f), (((3,), (1,)), ((), ())))
  dx = _col2im(dpatches, x_shape, (kh, kw), strides, pads)
  return dx, dkernel.reshape(kernel.shape).astype(kernel.dtype)


conv_matmul.defvjp(_conv_matmul_fwd, _conv_matmul_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool(x, window, strides, pads):
  """nn.max_pool as the maximum of one strided slice per window tap; the gradient goes to the first maximum.

  Same values and gradient as lax.reduce_window's max (whose select-and-scatter also picks
  the first maximum in window order), without XLA:CPU's generic reduce-window loops.
  """
  return _max_pool_taps(x, window, strides, pads)[0]


def _max_pool_taps(x, window, strides, pads):
  neg = jnp.array(-jnp.inf, x.dtype)
  xp = lax.pad(x, neg, ((0, 0, 0),) + tuple((lo, hi, 0) for lo, hi in pads) + ((0, 0, 0),))
  n, h, w, c = xp.shape
  (kh, kw), (sh, sw) = window, strides
  out_h, out_w = (h - kh) // sh + 1, (w - kw) // sw + 1
  taps = [
    lax.slice(xp, (0, i, j, 0), (n, i + sh * (out_h - 1) + 1, j + sw * (out_w - 1) + 1, c), (1, sh, sw, 1))
    for i in range(kh)
    for j in range(kw)
  ]
  out = taps[0]
  for t in taps[1:]:
    out = jnp.maximum(out, t)
  return out, taps


def _max_pool_fwd(x, window, strides, pads):
  return max_pool(x, window, strides, pads), x


def _max_pool_bwd(window, strides, pads, x, g):
  out, taps = _max_pool_taps(x, window, strides, pads)
  taken = jnp.zeros(out.shape, bool)
  parts = []
  for t in taps:
    first = (t == out) & ~taken
    taken = taken | first
    parts.append(jnp.where(first, g, jnp.zeros((), g.dtype)))
  # The same col2im as the convolution's input gradient, with the taps as channel blocks.
  return (_col2im(jnp.concatenate(parts, -1) if len(parts) > 1 else parts[0], x.shape, window, strides, pads),)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


class Conv(nn.Module):
  """A convolution computed as one matmul over gathered kernel taps (im2col); parameters exactly nn.Conv's.

  Named Conv so that parameter paths ("Conv_0/kernel", HWIO) match nn.Conv's and
  checkpoints load either way. XLA:CPU lowers the weight and input gradients of
  small-spatial convolutions (ResNet stage 4 at 64 px: 2x2 maps) to slow
  generic loops; as one matmul, forward and both gradients are dense matmuls.
  A 1x1 convolution is a plain dot (after a strided slice at stride 2).
  `custom_vjp` (config.model.matmul_conv_vjp) selects the hand-written backward (conv_matmul)
  instead of autodiff of the forward; it changes speed only, never parameters or results.
  """

  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = (1, 1)
  padding: Any = ((0, 0), (0, 0))
  use_bias: bool = False
  kernel_init: Callable = conv_kernel_init
  dtype: Any = jnp.float32
  custom_vjp: bool = True
  # conv_impl="mixed": a kxk (k > 1) convolution whose output map is at least this many pixels on each side
  # runs as a lax convolution instead (0 = never).
  lax_min_size: int = 0

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    pads, strides = _pads(self.padding, self.kernel_size), tuple(self.strides)
    out_size = _out_size(x.shape[1:3], (kh, kw), strides, pads)
    if self.lax_min_size and kh * kw > 1 and min(out_size) >= self.lax_min_size:
      return lax.conv_general_dilated(x, kernel, strides, pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if self.custom_vjp:
      return conv_matmul(x, kernel, strides, pads)
    return _conv_matmul_fwd(x, kernel, strides, pads)[0]


def _out_size(size, kernel_size, strides, pads):
  """Output [Ho, Wo] of a convolution over a [H, W] map."""
  return tuple((n + lo + hi - k) // st + 1 for n, k, st, (lo, hi) in zip(size, kernel_size, strides, pads))


# conv_impl="mixed" (measured on XLA:CPU, f32, ResNet-18/50 at 64 px): a lax convolution is several times
# faster than the gathered-tap matmul on maps of 8x8 and larger (forward and both gradients; no 9x
# copy of the input), and pathologically slow on 2x2 and 4x4 maps, where the matmul stays.
LAX_MIN_SIZE = 8


def _pad3(x, strides: int, haiku: bool):
  """Padding of a block's 3x3 convolution: PyTorch's (1, 1), or Haiku's 'SAME' ((0, 1) at stride 2 on even sizes)."""
  return same_pads(x.shape[1:3], (3, 3), (strides, strides)) if haiku else ((1, 1), (1, 1))


class BasicBlock(nn.Module):
  """Two 3x3 convolutions (ResNet-18/34)."""

  filters: int
  strides: int
  norm: Callable[..., nn.Module]
  conv: Callable[..., nn.Module]
  haiku: bool = False  # style="haiku": SAME padding, and a projection shortcut in every stage's first block
  first: bool = False  # the first block of its stage

  @nn.compact
  def __call__(self, x):
    residual = x
    y = self.conv(self.filters, (3, 3), (self.strides, self.strides), padding=_pad3(x, self.strides, self.haiku))(x)
    y = nn.relu(self.norm()(y))
    y = self.conv(self.filters, (3, 3), padding=((1, 1), (1, 1)))(y)
    y = self.norm()(y)
    # DeepMind's BYOL ResNets (use_projection=True in all four stages) project in stage 1 too.
    if residual.shape != y.shape or (self.haiku and self.first):
      residual = self.conv(self.filters, (1, 1), (self.strides, self.strides), name="proj_conv")(residual)
      residual = self.norm(name="proj_bn")(residual)
    return nn.relu(residual + y)


class BottleneckBlock(nn.Module):
  """1x1 -> 3x3 (strided, v1.5) -> 1x1 x4 (ResNet-50 and deeper)."""

  filters: int
  strides: int
  norm: Callable[..., nn.Module]
  conv: Callable[..., nn.Module]
  haiku: bool = False  # style="haiku": SAME padding (a stage's first block always projects in both styles)
  first: bool = False

  @nn.compact
  def __call__(self, x):
    residual = x
    y = nn.relu(self.norm()(self.conv(self.filters, (1, 1))(x)))
    y = self.conv(self.filters, (3, 3), (self.strides, self.strides), padding=_pad3(y, self.strides, self.haiku))(y)
    y = nn.relu(self.norm()(y))
    last_bn = dict(scale_init=nn.initializers.zeros) if self.haiku else {}  # Haiku's BlockV1 batchnorm_2
    y = self.norm(**last_bn)(self.conv(self.filters * 4, (1, 1))(y))
    if residual.shape != y.shape:
      residual = self.conv(self.filters * 4, (1, 1), (self.strides, self.strides), name="proj_conv")(residual)
      residual = self.norm(name="proj_bn")(residual)
    return nn.relu(residual + y)


class ResNet(nn.Module):
  """ResNet v1.5 trunk returning the globally average-pooled feature."""

  stage_sizes: Sequence[int]
  block_cls: Any
  width: int = 64  # filters of the first stage; 64 is the standard network
  cifar_stem: bool = False  # 3x3/1 stem conv and no max-pool, for small images
  dtype: Any = jnp.float32
  conv_impl: str = "xla"  # xla: lax convolutions | matmul: Conv above (faster on XLA:CPU) | mixed: see LAX_MIN_SIZE
  bn_running_var: str = "biased"  # biased (Flax) | unbiased (PyTorch): see models/batch_norm.py
  # With conv_impl="matmul"/"mixed" only (config.model.matmul_*; speed only, never results): the matmul
  # Conv's hand-written backward, and the stem's max-pool as the maximum of 9 strided slices.
  matmul_conv_vjp: bool = True
  matmul_max_pool: bool = True
  # torchvision: PyTorch padding (7x7/2 pad 3, 3x3 pad 1, max-pool pad 1). haiku: DeepMind's Haiku ResNet
  # (BYOL's networks.py), which pads 'SAME' (asymmetric at stride 2 on even sizes) and projects the
  # shortcut of every stage's first block. BN (eps 1e-5, eval mode) and the v1.5 stride placement agree.
  style: str = "torchvision"

  @nn.compact
  def __call__(self, x, train: bool = True, bn_axis_name: Optional[str] = None):
    if self.conv_impl in ("matmul", "mixed"):
      conv = functools.partial(
        Conv, custom_vjp=self.matmul_conv_vjp, lax_min_size=LAX_MIN_SIZE if self.conv_impl == "mixed" else 0
      )
    else:
      conv = nn.Conv
    haiku = self.style == "haiku"
    conv = functools.partial(
      conv,
      use_bias=False,
      kernel_init=haiku_kernel_init if haiku else conv_kernel_init,
      dtype=self.dtype,
      padding="VALID",
    )
    norm = batch_norm(train, bn_axis_name, self.dtype, "haiku" if haiku else self.bn_running_var)
    x = x.astype(self.dtype)
    if self.cifar_stem:
      x = conv(self.width, (3, 3), padding=((1, 1), (1, 1)), name="stem_conv")(x)
      x = nn.relu(norm(name="stem_bn")(x))
    else:
      pads = same_pads(x.shape[1:3], (7, 7), (2, 2)) if haiku else ((3, 3), (3, 3))
      x = conv(self.width, (7, 7), (2, 2), padding=pads, name="stem_conv")(x)
      x = nn.relu(norm(name="stem_bn")(x))
      # Both styles pad the max-pool with -inf, so only the amount differs.
      pads = same_pads(x.shape[1:3], (3, 3), (2, 2)) if haiku else ((1, 1), (1, 1))
      if self.conv_impl in ("matmul", "mixed") and self.matmul_max_pool:
        x = max_pool(x, (3, 3), (2, 2), pads)
      else:
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=pads)
    for i, num_blocks in enumerate(self.stage_sizes):
      for j in range(num_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        x = self.block_cls(
          self.width * 2**i, strides, norm, conv, self.style == "haiku", j == 0, name=f"stage{i + 1}_block{j + 1}"
        )(x)
    return jnp.mean(x, axis=(1, 2)).astype(output_dtype(self.dtype))


STAGE_SIZES = archs.RESNET_STAGES  # depth -> blocks per stage (the table of models/archs.py)


def resnet(
  depth: int,
  width: int = 64,
  cifar_stem: bool = False,
  dtype: Any = jnp.float32,
  name: Optional[str] = None,
  conv_impl: str = "xla",
  bn_running_var: str = "biased",
  matmul_conv_vjp: bool = True,
  matmul_max_pool: bool = True,
  style: str = "torchvision",
) -> ResNet:
  """ResNet-{10,18,34,50,101,152,200}; depth < 50 uses basic blocks; style: torchvision | haiku (see ResNet)."""
  if depth not in STAGE_SIZES:
    raise ValueError(f"Unknown ResNet depth {depth}; choose one of {sorted(STAGE_SIZES)}.")
  if style not in STYLES:
    raise ValueError(f"Unknown ResNet style {style!r}; choose one of {list(STYLES)}.")
  block = BasicBlock if depth < 50 else BottleneckBlock
  return ResNet(
    STAGE_SIZES[depth],
    block,
    width=width,
    cifar_stem=cifar_stem,
    dtype=dtype,
    name=name,
    conv_impl=conv_impl,
    bn_running_var=bn_running_var,
    matmul_conv_vjp=matmul_conv_vjp,
    matmul_max_pool=matmul_max_pool,
    style=style,
  )


def feature_dim(depth: int, width: int = 64) -> int:
  """Size of the pooled feature: 512 for ResNet-18, 2048 for ResNet-50 at width 64."""
  return width * 8 * (4 if depth >= 50 else 1)
