"""The encoders a network can use (`model.{student,teacher}.arch`), and their cost per image.

Every encoder has the ResNet's call contract: encoder(x, train=..., bn_axis_name=...) -> the pooled
float32 feature [N, D]; BatchNorm layers use bn_axis_name (SyncBN when set).

    python -m simdis_jax.models.encoders    # parameters and forward MACs per 224-px image vs the references
"""

from typing import Any, Dict, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from simdis_jax.models import efficientnet, mobilenet_v3, resnet, vit

ARCHS = ("resnet", "mobilenet_v3_large", "mobilenet_v3_small", "efficientnet_b0", "vit_tiny", "vit_small")
VITS = ("vit_tiny", "vit_small")


class EncoderOptions(NamedTuple):
  """What a model.{student,teacher} section says about its encoder (depth/width are ResNet's only)."""
  depth: int = 18
  width: int = 64
  cifar_stem: bool = False         # every convolutional arch: its CIFAR-style small-image variant
  patch_size: int = 16             # ViTs only
  drop_path_rate: float = 0.0      # EfficientNet and ViTs (stochastic depth); 0 = off, the SSL default


_BUILDERS = {
    "resnet": lambda o, dtype, conv_impl, name: resnet.resnet(o.depth, o.width, o.cifar_stem, dtype, name=name,
                                                             conv_impl=conv_impl),
    "mobilenet_v3_large": lambda o, dtype, conv_impl, name: mobilenet_v3.MobileNetV3(
        "large", o.cifar_stem, dtype, conv_impl, name=name),
    "mobilenet_v3_small": lambda o, dtype, conv_impl, name: mobilenet_v3.MobileNetV3(
        "small", o.cifar_stem, dtype, conv_impl, name=name),
    "efficientnet_b0": lambda o, dtype, conv_impl, name: efficientnet.EfficientNet(
        o.cifar_stem, o.drop_path_rate, dtype=dtype, conv_impl=conv_impl, name=name),
    "vit_tiny": lambda o, dtype, conv_impl, name: vit.ViT("tiny", o.patch_size, o.drop_path_rate, dtype, name=name),
    "vit_small": lambda o, dtype, conv_impl, name: vit.ViT("small", o.patch_size, o.drop_path_rate, dtype, name=name),
}


def encoder(arch: str, options: EncoderOptions, dtype: Any = jnp.float32, conv_impl: str = "xla",
            name: Optional[str] = None, bn_running_var: str = "biased", style: str = "torchvision") -> nn.Module:
  """The encoder module of `arch` (one of ARCHS); PyTorch's unbiased running variance and style are ResNet options."""
  if arch not in _BUILDERS:
    raise ValueError(f"Unknown encoder arch {arch!r}; choose one of {list(ARCHS)}.")
  if arch == "resnet":
    return resnet.resnet(options.depth, options.width, options.cifar_stem, dtype, name=name, conv_impl=conv_impl,
                         bn_running_var=bn_running_var, style=style)
  if style != "torchvision":
    raise ValueError(f"style={style!r} is implemented for arch='resnet' only; use 'torchvision' with arch={arch!r}.")
  if bn_running_var != "biased":
    raise ValueError(f"model.bn_running_var={bn_running_var!r} is implemented for arch='resnet' only; "
                     f"use 'biased' with arch={arch!r}.")
  return _BUILDERS[arch](options, dtype, conv_impl, name)


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


# Published parameter counts (with the 1000-class classifier) and forward G multiply-adds per 224-px
# image: torchvision's model metadata for the convolutional networks (MobileNetV3-L/S 0.217/0.057,
# EfficientNet-B0 0.386 "GFLOPS", i.e. GMACs), DeiT's Table 1 for ViT-Ti/16 and ViT-S/16 (1.3, 4.6).
PUBLISHED = {
    "resnet": (11_689_512, 1.81),  # ResNet-18
    "mobilenet_v3_large": (5_483_032, 0.217),
    "mobilenet_v3_small": (2_542_856, 0.057),
    "efficientnet_b0": (5_288_548, 0.386),
    "vit_tiny": (5_717_416, 1.3),
    "vit_small": (22_050_664, 4.6),
}


def reference_cost(arch: str, options: EncoderOptions = EncoderOptions(), image_size: int = 224,
                   num_classes: int = 1000, channels: int = 3) -> Dict[str, float]:
  """Parameters and forward MACs per image of the encoder, alone and with a `num_classes` classifier.

  MACs are counted by simdis_jax.benchmark.count_macs (every convolution tap and matmul, attention
  included); nothing is computed: shapes only.
  """
  from simdis_jax.benchmark import count_macs  # pylint: disable=import-outside-toplevel
  net = Classifier(arch, options, num_classes)
  x = jax.ShapeDtypeStruct((1, image_size, image_size, channels), jnp.float32)
  variables = jax.eval_shape(lambda x: net.init(jax.random.PRNGKey(0), x), x)
  params = variables["params"]
  count = lambda tree: sum(int(l.size) for l in jax.tree.leaves(tree))
  apply = lambda v, x: net.apply(v, x)
  total_macs = count_macs(apply, variables, x)
  head_macs = feature_dim(arch, options) * num_classes
  return {"params": count(params), "encoder_params": count(params["encoder"]),
          "macs": total_macs, "encoder_macs": total_macs - head_macs}


def format_table(costs: Dict[str, Dict[str, float]]) -> str:
  """A Markdown table of measured parameters / G MACs beside the published figures."""
  lines = ["| arch | params (with classifier) | published | encoder params | G MACs @224 (with classifier) "
           "| published | encoder G MACs |", "|---|---:|---:|---:|---:|---:|---:|"]
  for arch, c in costs.items():
    params, gmacs = PUBLISHED[arch]
    lines.append(f"| {arch} | {c['params']:,} | {params:,} | {c['encoder_params']:,} | {c['macs'] / 1e9:.3f} "
                 f"| {gmacs} | {c['encoder_macs'] / 1e9:.3f} |")
  return "\n".join(lines)


if __name__ == "__main__":
  print(format_table({arch: reference_cost(arch) for arch in ARCHS}))
