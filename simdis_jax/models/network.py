"""One siamese branch: encoder f, projector g and predictor heads q_h.

Online networks carry one predictor per head they train (SPEC.md: the student
has ONE PREDICTOR HEAD PER TARGET VIEW); EMA networks are built with no heads,
so their parameters are exactly the online encoder + projector subtree.
"""

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from simdis_jax.models.heads import MLP
from simdis_jax.models.resnet import output_dtype, resnet


class Network(nn.Module):
  """Encoder + projector (+ predictor heads); returns features, projection, predictions."""
  depth: int
  width: int
  cifar_stem: bool
  hidden_dim: int
  proj_dim: int
  heads: Sequence[str] = ()
  dtype: Any = jnp.float32
  conv_impl: str = "xla"  # see models/resnet.py Conv
  num_classes: int = 0  # > 0: a linear classifier on the pooled features ("logits"; supervised training)
  matmul_conv_vjp: bool = True  # conv_impl="matmul" only: see models/resnet.py ResNet
  matmul_max_pool: bool = True

  @nn.compact
  def __call__(self, x, train: bool = True, bn_axis_name: Optional[str] = None, features_only: bool = False):
    encoder = resnet(self.depth, self.width, self.cifar_stem, self.dtype, name="encoder", conv_impl=self.conv_impl,
                     matmul_conv_vjp=self.matmul_conv_vjp, matmul_max_pool=self.matmul_max_pool)
    feature = encoder(x, train=train, bn_axis_name=bn_axis_name)
    if features_only:
      return {"feature": feature}
    outputs = {"feature": feature}
    if self.num_classes:
      logits = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(feature)
      outputs["logits"] = logits.astype(output_dtype(self.dtype))
    projection = MLP(self.hidden_dim, self.proj_dim, self.dtype, name="projector")(
        feature, train=train, bn_axis_name=bn_axis_name)
    # Predictors take the raw (unnormalised) projection (SPEC.md "Networks").
    predictions = {
        h: MLP(self.hidden_dim, self.proj_dim, self.dtype, name=f"predictor_{h}")(
            projection, train=train, bn_axis_name=bn_axis_name)
        for h in self.heads}
    return {**outputs, "projection": projection, "predictions": predictions}


def network_from_config(model_config, heads: Sequence[str] = (), dtype: Any = jnp.float32,
                        conv_impl: str = "xla", num_classes: int = 0, matmul_conv_vjp: bool = True,
                        matmul_max_pool: bool = True) -> Network:
  """Builds a Network from a config.model.{student,teacher} section (and config.model's matmul switches)."""
  return Network(depth=model_config.depth, width=model_config.width, cifar_stem=model_config.cifar_stem,
                 hidden_dim=model_config.hidden_dim, proj_dim=model_config.proj_dim,
                 heads=tuple(heads), dtype=dtype, conv_impl=conv_impl, num_classes=num_classes,
                 matmul_conv_vjp=matmul_conv_vjp, matmul_max_pool=matmul_max_pool)
