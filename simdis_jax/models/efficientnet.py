"""EfficientNet-B0 encoder (Tan & Le 2019), as torchvision's `efficientnet_b0` defines it.

Stages (expand ratio, kernel, stride, channels, repeats), MBConv blocks with SiLU, squeeze-excite
of max(1, block input / 4) channels with a sigmoid gate, the 1x1 convolution to 1280 channels and
torchvision's initialisation; with a 1000-class linear layer on the 1280-d pooled feature the
parameter count is torchvision's exactly (5,288,548).

BatchNorm: torchvision's B0 uses PyTorch's default BatchNorm2d (epsilon 1e-5, momentum 0.1; only
its B5-B7 pass epsilon 1e-3 / momentum 0.01), and so does this module by default (Flax momentum
0.9). The original TensorFlow EfficientNet uses epsilon 1e-3 and momentum 0.99 (Flax convention):
pass bn_epsilon=1e-3, bn_momentum=0.99 for that.

Stochastic depth: the reference drops each residual MBConv branch with probability
drop_path_rate * block_index / 16 (torchvision's default rate 0.2). Self-supervised pretraining
usually trains without it, so the default here is 0 (off). Branches are dropped only when the call
asks for it (stochastic_depth=True, with rngs={'dropout': key}): the train step does so for the
training forwards of a network whose rate is > 0; every other call (train-mode BN included) is
deterministic.

`small_images=True` is the CIFAR-style variant for 28-64 px inputs: a stride-1 stem and the first
stride-2 stage at stride 1 (overall stride 8 instead of 32), same parameters.
"""

from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from simdis_jax.models import blocks

# (expand ratio, kernel, stride, output channels, blocks); the stem gives 32 channels.
B0_STAGES = (
  (1, 3, 1, 16, 1),
  (6, 3, 2, 24, 2),
  (6, 5, 2, 40, 2),
  (6, 3, 2, 80, 3),
  (6, 5, 1, 112, 3),
  (6, 5, 2, 192, 4),
  (6, 3, 1, 320, 1),
)
STEM = 32
FEATURE = 1280  # 4 x the last stage's 320 channels


class EfficientNet(nn.Module):
  """EfficientNet-B0 trunk returning the globally average-pooled 1280-d feature."""

  small_images: bool = False
  drop_path_rate: float = 0.0
  bn_momentum: float = 0.9  # Flax convention: PyTorch's default 0.1
  bn_epsilon: float = 1e-5
  dtype: Any = jnp.float32
  conv_impl: str = "xla"
  depthwise_impl: str = "xla"  # xla | shifted (models/depthwise.py)

  @nn.compact
  def __call__(self, x, train: bool = True, bn_axis_name: Optional[str] = None, stochastic_depth: bool = False):
    conv = blocks.conv_factory(self.conv_impl, self.dtype, self.depthwise_impl)
    norm = blocks.batch_norm(train, bn_axis_name, self.dtype, self.bn_momentum, self.bn_epsilon)
    strides = tuple(stage[2] for stage in B0_STAGES)
    stem_stride, strides = blocks.small_image_strides(strides) if self.small_images else (2, strides)
    total = sum(stage[4] for stage in B0_STAGES)
    x = x.astype(self.dtype)
    x = blocks.ConvBN(STEM, 3, conv, norm, stem_stride, act=nn.silu, name="stem")(x)
    index = 0
    for s, ((expand, kernel, _, out, repeats), stride) in enumerate(zip(B0_STAGES, strides)):
      for r in range(repeats):
        block_in = x.shape[-1]
        x = blocks.InvertedResidual(
          block_in * expand,
          out,
          kernel,
          stride if r == 0 else 1,
          act=nn.silu,
          se_squeeze=max(1, block_in // 4),
          se_act=nn.silu,
          se_gate=nn.sigmoid,
          conv=conv,
          norm=norm,
          drop_path_rate=self.drop_path_rate * index / total,
          dtype=self.dtype,
          name=f"stage{s + 1}_block{r + 1}",
        )(x, train, stochastic_depth)
        index += 1
    x = blocks.ConvBN(FEATURE, 1, conv, norm, act=nn.silu, name="last_conv")(x)
    return jnp.mean(x, axis=(1, 2)).astype(jnp.float32)
