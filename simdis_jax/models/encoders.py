"""The encoders a network can use (`model.{student,teacher}.arch`), and their cost per image.

The table of architectures is models/archs.py (`SPECS`, one `ArchSpec` per arch); this module builds from it.
Every encoder has the ResNet's call contract: encoder(x, train=..., bn_axis_name=...) -> the pooled
float32 feature [N, D]; BatchNorm layers use bn_axis_name (SyncBN when set). Those of
STOCHASTIC_DEPTH_ARCHS also take stochastic_depth=True (with a 'dropout' RNG) to drop residual branches.
Parameters and forward MACs per 224-px image beside the published figures: `python -m simdis_jax.tools.architectures`.
"""

import importlib
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp

from simdis_jax.models.archs import ARCHS, SPECS, STOCHASTIC_DEPTH_ARCHS, VITS, EncoderOptions, Implementation, spec

__all__ = ["ARCHS", "SPECS", "STOCHASTIC_DEPTH_ARCHS", "VITS", "EncoderOptions", "encoder", "feature_dim", "Classifier"]


def _module(arch: str):
  """The simdis_jax.models module that holds `arch`'s encoder."""
  return importlib.import_module(f"simdis_jax.models.{spec(arch).module}")


def encoder(
  arch: str,
  options: EncoderOptions,
  dtype: Any = jnp.float32,
  conv_impl: str = "xla",
  name: Optional[str] = None,
  bn_running_var: str = "biased",
  matmul_conv_vjp: bool = True,
  matmul_max_pool: bool = True,
  style: str = "torchvision",
  depthwise_impl: str = "xla",
) -> nn.Module:
  """The encoder module of `arch` (a row of archs.SPECS); running variance, matmul switches and style are ResNet
  options, depthwise_impl (models/depthwise.py) the mobile networks'."""
  row = spec(arch)
  if style != "torchvision" and style not in row.styles:
    raise ValueError(f"style={style!r} is implemented for arch='resnet' only; use 'torchvision' with arch={arch!r}.")
  if bn_running_var != "biased" and bn_running_var not in row.bn_running_vars:
    raise ValueError(
      f"model.bn_running_var={bn_running_var!r} is implemented for arch='resnet' only; use 'biased' with arch={arch!r}."
    )
  implementation = Implementation(conv_impl, depthwise_impl, bn_running_var, matmul_conv_vjp, matmul_max_pool, style)
  return row.build(_module(arch), options, dtype, name, implementation)


def feature_dim(arch: str, options: EncoderOptions = EncoderOptions()) -> int:
  """Size of the encoder's pooled feature."""
  return int(spec(arch).feature_dim(_module(arch), options))


class Classifier(nn.Module):
  """An encoder with a linear classifier on its feature: the reference networks' parameter layout."""

  arch: str
  options: EncoderOptions = EncoderOptions()
  num_classes: int = 1000

  @nn.compact
  def __call__(self, x, train: bool = False):
    feature = encoder(self.arch, self.options, name="encoder")(x, train=train)
    return nn.Dense(self.num_classes, name="classifier")(feature)
