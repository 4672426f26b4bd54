"""The deployable students in plain PyTorch, for timing beside the JAX encoders (torchvision is not needed).

Same layouts as models/mobilenet_v3.py, models/efficientnet.py and models/vit.py (tables, squeeze-excite
widths, activations, the small-image variant, MobileNetV3's final Linear + hard-swish), so the two
frameworks' training steps do the same arithmetic. Built for timing only: initialisation is PyTorch's
default and no weights are shared with the JAX modules.
"""

import torch
from torch import nn
from torch.nn import functional as F

from simdis_jax.models import blocks, efficientnet, mobilenet_v3, vit


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act=None, eps: float = 1e-5):
  layers = [
    nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
    nn.BatchNorm2d(cout, eps=eps),
  ]
  return nn.Sequential(*layers, *([act()] if act else []))


class SqueezeExcite(nn.Module):
  """fc(squeeze) -> act -> fc(channels) -> gate, on the pooled map (1x1 convolutions with bias)."""

  def __init__(self, channels: int, squeeze: int, act, gate):
    super().__init__()
    self.fc1, self.fc2, self.act, self.gate = (
      nn.Conv2d(channels, squeeze, 1),
      nn.Conv2d(squeeze, channels, 1),
      act(),
      gate(),
    )

  def forward(self, x):
    return x * self.gate(self.fc2(self.act(self.fc1(F.adaptive_avg_pool2d(x, 1)))))


class InvertedResidual(nn.Module):
  """[1x1 expand] -> kxk depthwise -> [squeeze-excite] -> 1x1 project, plus the input when shapes allow."""

  def __init__(self, cin, expanded, out, kernel, stride, act, se_squeeze, se_act, se_gate, eps):
    super().__init__()
    layers = [] if expanded == cin else [_conv_bn(cin, expanded, 1, act=act, eps=eps)]
    layers.append(_conv_bn(expanded, expanded, kernel, stride, groups=expanded, act=act, eps=eps))
    if se_squeeze:
      layers.append(SqueezeExcite(expanded, se_squeeze, se_act, se_gate))
    layers.append(_conv_bn(expanded, out, 1, eps=eps))
    self.body, self.residual = nn.Sequential(*layers), stride == 1 and cin == out

  def forward(self, x):
    y = self.body(x)
    return x + y if self.residual else y


class MobileNetV3(nn.Module):
  """torchvision's MobileNetV3 trunk + its first classifier layer (the feature models/mobilenet_v3.py returns)."""

  def __init__(self, variant: str = "small", small_images: bool = False, in_channels: int = 3):
    super().__init__()
    table, last_conv, feature = mobilenet_v3.VARIANTS[variant]
    strides = tuple(row[-1] for row in table)
    stem_stride, strides = blocks.small_image_strides(strides) if small_images else (2, strides)
    eps = mobilenet_v3.BN_EPSILON
    layers, cin = [_conv_bn(in_channels, 16, 3, stem_stride, act=nn.Hardswish, eps=eps)], 16
    for (kernel, expanded, out, se, hs, _), stride in zip(table, strides):
      layers.append(
        InvertedResidual(
          cin,
          expanded,
          out,
          kernel,
          stride,
          nn.Hardswish if hs else nn.ReLU,
          blocks.make_divisible(expanded // 4) if se else 0,
          nn.ReLU,
          nn.Hardsigmoid,
          eps,
        )
      )
      cin = out
    layers.append(_conv_bn(cin, last_conv, 1, act=nn.Hardswish, eps=eps))
    self.features, self.head = nn.Sequential(*layers), nn.Linear(last_conv, feature)

  def forward(self, x):
    return F.hardswish(self.head(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)))


class EfficientNetB0(nn.Module):
  """torchvision's EfficientNet-B0 trunk: the pooled 1280-d feature."""

  def __init__(self, small_images: bool = False, in_channels: int = 3):
    super().__init__()
    strides = tuple(stage[2] for stage in efficientnet.B0_STAGES)
    stem_stride, strides = blocks.small_image_strides(strides) if small_images else (2, strides)
    layers, cin = [_conv_bn(in_channels, efficientnet.STEM, 3, stem_stride, act=nn.SiLU)], efficientnet.STEM
    for (expand, kernel, _, out, repeats), stride in zip(efficientnet.B0_STAGES, strides):
      for r in range(repeats):
        layers.append(
          InvertedResidual(
            cin,
            cin * expand,
            out,
            kernel,
            stride if r == 0 else 1,
            nn.SiLU,
            max(1, cin // 4),
            nn.SiLU,
            nn.Sigmoid,
            1e-5,
          )
        )
        cin = out
    layers.append(_conv_bn(cin, efficientnet.FEATURE, 1, act=nn.SiLU))
    self.features = nn.Sequential(*layers)

  def forward(self, x):
    return F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)


class Block(nn.Module):
  """Pre-norm transformer block: x + attn(LN(x)), x + MLP(LN(x)) (fused scaled-dot-product attention)."""

  def __init__(self, dim: int, heads: int):
    super().__init__()
    self.norm1, self.norm2 = nn.LayerNorm(dim, eps=vit.LN_EPSILON), nn.LayerNorm(dim, eps=vit.LN_EPSILON)
    self.qkv, self.proj, self.heads = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim), heads
    self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

  def forward(self, x):
    n, t, d = x.shape
    q, k, v = self.qkv(self.norm1(x)).reshape(n, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
    x = x + self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, t, d))
    return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class ViT(nn.Module):
  """DeiT-style ViT: patch embedding, class token, position embedding, blocks, final LayerNorm; class token out."""

  def __init__(self, size: str = "tiny", patch_size: int = 16, image_size: int = 224, in_channels: int = 3):
    super().__init__()
    dim, depth, heads = vit.SIZES[size]
    tokens = (image_size // patch_size) ** 2 + 1
    self.patch = nn.Conv2d(in_channels, dim, patch_size, patch_size)
    self.cls, self.pos = nn.Parameter(torch.zeros(1, 1, dim)), nn.Parameter(torch.zeros(1, tokens, dim))
    self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
    self.norm = nn.LayerNorm(dim, eps=vit.LN_EPSILON)

  def forward(self, x):
    x = self.patch(x).flatten(2).transpose(1, 2)
    x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
    return self.norm(self.blocks(x))[:, 0]


def build(arch: str, image_size: int, in_channels: int) -> nn.Module:
  """The torch model of `arch` at `image_size` (small-image variant / patch 4 below 64 px, as the study's)."""
  small = image_size < 64
  if arch.startswith("mobilenet_v3_"):
    return MobileNetV3(arch.rsplit("_", 1)[1], small, in_channels)
  if arch == "efficientnet_b0":
    return EfficientNetB0(small, in_channels)
  if arch.startswith("vit_"):
    return ViT(arch.split("_")[1], 4 if small else 16, image_size, in_channels)
  raise ValueError(f"No torch model for arch {arch!r}; choose mobilenet_v3_small/large, efficientnet_b0, vit_*.")
