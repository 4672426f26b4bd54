"""The encoders a network can use (`model.{student,teacher}.arch`), and their cost per image.

Every encoder has the ResNet's call contract: encoder(x, train=..., bn_axis_name=...) -> the pooled
float32 feature [N, D]; BatchNorm layers use bn_axis_name (SyncBN when set). Those of
STOCHASTIC_DEPTH_ARCHS also take stochastic_depth=True (with a 'dropout' RNG) to drop residual branches.
Parameters and forward MACs per 224-px image beside the published figures: `python -m simdis_jax.tools.architectures`.
"""

from typing import Any, NamedTuple, Optional

import flax.linen as nn
import jax.numpy as jnp

from simdis_jax.models import efficientnet, mobilenet_v3, resnet, vit

ARCHS = ("resnet", "mobilenet_v3_large", "mobilenet_v3_small", "efficientnet_b0", "vit_tiny", "vit_small")
VITS = ("vit_tiny", "vit_small")
# Archs whose reference has stochastic depth (drop_path_rate); their encoders take stochastic_depth=.
STOCHASTIC_DEPTH_ARCHS = ("efficientnet_b0",) + VITS


class EncoderOptions(NamedTuple):
  """What a model.{student,teacher} section says about its encoder (depth/width are ResNet's only)."""
  depth: int = 18
  width: int = 64
  cifar_stem: bool = False         # every convolutional arch: its CIFAR-style small-image variant
  patch_size: int = 16             # ViTs only
  drop_path_rate: float = 0.0      # EfficientNet and ViTs (stochastic depth); 0 = off, the SSL default


_BUILDERS = {
    "resnet": lambda o, dtype, conv_impl, dw, name: resnet.resnet(o.depth, o.width, o.cifar_stem, dtype, name=name,
                                                                 conv_impl=conv_impl),
    "mobilenet_v3_large": lambda o, dtype, conv_impl, dw, name: mobilenet_v3.MobileNetV3(
        "large", o.cifar_stem, dtype, conv_impl, dw, name=name),
    "mobilenet_v3_small": lambda o, dtype, conv_impl, dw, name: mobilenet_v3.MobileNetV3(
        "small", o.cifar_stem, dtype, conv_impl, dw, name=name),
    "efficientnet_b0": lambda o, dtype, conv_impl, dw, name: efficientnet.EfficientNet(
        o.cifar_stem, o.drop_path_rate, dtype=dtype, conv_impl=conv_impl, depthwise_impl=dw, name=name),
    "vit_tiny": lambda o, dtype, conv_impl, dw, name: vit.ViT("tiny", o.patch_size, o.drop_path_rate, dtype,
                                                              name=name),
    "vit_small": lambda o, dtype, conv_impl, dw, name: vit.ViT("small", o.patch_size, o.drop_path_rate, dtype,
                                                               name=name),
}


def encoder(arch: str, options: EncoderOptions, dtype: Any = jnp.float32, conv_impl: str = "xla",
            name: Optional[str] = None, bn_running_var: str = "biased", matmul_conv_vjp: bool = True,
            matmul_max_pool: bool = True, style: str = "torchvision", depthwise_impl: str = "xla") -> nn.Module:
  """The encoder module of `arch` (one of ARCHS); running variance, matmul switches and style are ResNet options,
  depthwise_impl (models/depthwise.py) the mobile networks'."""
  if arch not in _BUILDERS:
    raise ValueError(f"Unknown encoder arch {arch!r}; choose one of {list(ARCHS)}.")
  if arch == "resnet":
    return resnet.resnet(options.depth, options.width, options.cifar_stem, dtype, name=name, conv_impl=conv_impl,
                         bn_running_var=bn_running_var, matmul_conv_vjp=matmul_conv_vjp,
                         matmul_max_pool=matmul_max_pool, style=style)
  if style != "torchvision":
    raise ValueError(f"style={style!r} is implemented for arch='resnet' only; use 'torchvision' with arch={arch!r}.")
  if bn_running_var != "biased":
    raise ValueError(f"model.bn_running_var={bn_running_var!r} is implemented for arch='resnet' only; "
                     f"use 'biased' with arch={arch!r}.")
  return _BUILDERS[arch](options, dtype, conv_impl, depthwise_impl, name)


def feature_dim(arch: str, options: EncoderOptions = EncoderOptions()) -> int:
  """Size of the encoder's pooled feature."""
  if arch == "resnet":
    return resnet.feature_dim(options.depth, options.width)
  return {"mobilenet_v3_large": mobilenet_v3.feature_dim("large"),
          "mobilenet_v3_small": mobilenet_v3.feature_dim("small"), "efficientnet_b0": efficientnet.FEATURE,
          "vit_tiny": vit.feature_dim("tiny"), "vit_small": vit.feature_dim("small")}[arch]


class Classifier(nn.Module):
  """An encoder with a linear classifier on its feature: the reference networks' parameter layout."""
  arch: str
  options: EncoderOptions = EncoderOptions()
  num_classes: int = 1000

  @nn.compact
  def __call__(self, x, train: bool = False):
    feature = encoder(self.arch, self.options, name="encoder")(x, train=train)
    return nn.Dense(self.num_classes, name="classifier")(feature)
