"""Parameters and forward MACs per image of every encoder architecture, beside the published figures.

python -m simdis_jax.tools.architectures    # the table of docs/architectures.md
"""

from typing import Dict

import jax
import jax.numpy as jnp

from simdis_jax.models import encoders
from simdis_jax.flops import count_macs


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


def reference_cost(
  arch: str,
  options: encoders.EncoderOptions = encoders.EncoderOptions(),
  image_size: int = 224,
  num_classes: int = 1000,
  channels: int = 3,
) -> Dict[str, float]:
  """Parameters and forward MACs per image of the encoder, alone and with a `num_classes` classifier.

  MACs are counted by simdis_jax.flops.count_macs (every convolution tap and matmul, attention
  included); nothing is computed: shapes only.
  """
  net = encoders.Classifier(arch, options, num_classes)
  x = jax.ShapeDtypeStruct((1, image_size, image_size, channels), jnp.float32)
  variables = jax.eval_shape(lambda x: net.init(jax.random.PRNGKey(0), x), x)
  params = variables["params"]
  count = lambda tree: sum(int(l.size) for l in jax.tree.leaves(tree))
  apply = lambda v, x: net.apply(v, x)
  total_macs = count_macs(apply, variables, x)
  head_macs = encoders.feature_dim(arch, options) * num_classes
  return {
    "params": count(params),
    "encoder_params": count(params["encoder"]),
    "macs": total_macs,
    "encoder_macs": total_macs - head_macs,
  }


def format_table(costs: Dict[str, Dict[str, float]]) -> str:
  """A Markdown table of measured parameters / G MACs beside the published figures."""
  lines = [
    "| arch | params (with classifier) | published | encoder params | G MACs @224 (with classifier) "
    "| published | encoder G MACs |",
    "|---|---:|---:|---:|---:|---:|---:|",
  ]
  for arch, c in costs.items():
    params, gmacs = PUBLISHED[arch]
    lines.append(
      f"| {arch} | {c['params']:,} | {params:,} | {c['encoder_params']:,} | {c['macs'] / 1e9:.3f} "
      f"| {gmacs} | {c['encoder_macs'] / 1e9:.3f} |"
    )
  return "\n".join(lines)


if __name__ == "__main__":
  from simdis_jax import cli  # pylint: disable=import-outside-toplevel

  cli.parse(lambda fv: None, None, __doc__)  # no flags: --help says what it prints, anything else is an error
  print(format_table({arch: reference_cost(arch) for arch in encoders.ARCHS}))
