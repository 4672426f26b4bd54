"""One siamese branch: encoder f, projector g and predictor heads q_h.

Online networks carry one predictor per head they train (docs/spec.md: the student
has ONE PREDICTOR HEAD PER TARGET VIEW); EMA networks are built with no heads,
so their parameters are exactly the online encoder + projector subtree.
"""

from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from simdis_jax.models import archs, encoders, input_adapter
from simdis_jax.models.heads import MLP, PlainMLP, TorchDense
from simdis_jax.models.resnet import output_dtype


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
  depthwise_impl: str = "xla"  # xla | shifted: the mobile networks' depthwise convolutions (models/depthwise.py)
  num_classes: int = 0  # > 0: a linear classifier on the pooled features ("logits"; supervised training)
  bn_running_var: str = "biased"  # config.model.bn_running_var (models/batch_norm.py)
  arch: str = archs.DEFAULT_ARCH  # see models/encoders.py; depth/width apply to resnet only
  patch_size: int = 16  # ViTs
  drop_path_rate: float = 0.0  # EfficientNet and ViTs; 0 = off (the SSL default)
  matmul_conv_vjp: bool = True  # conv_impl="matmul" only: see models/resnet.py ResNet
  matmul_max_pool: bool = True
  style: str = "torchvision"  # ResNets: torchvision | haiku (models/resnet.py ResNet.style)
  projector: str = "byol"  # byol: Linear-BN-ReLU-Linear | moco: Linear-ReLU-Linear (MoCo-v2, SEED's student)
  input_adapter: tuple = ()  # its own normalisation / channels (models/input_adapter.py); () = the data's
  head_bias: bool = True  # the projector's and predictors' last Linear has a bias (DeepMind's: none)
  # > 0: DeepMind's online classifier ("probe_logits") on the stop-gradient pooled feature, trained inside
  # the loss by the main optimizer (config.probe.optimizer="main"; byol_experiment.py's `classifier`).
  probe_classes: int = 0
  # A method's own heads (methods/<name>.py), else the projector above and BYOL's predictors: a flax module
  # class built as Module(hidden_dim, out_dim, dtype, bn_running_var, head_bias, style, name=...) and called
  # as module(x, train=..., bn_axis_name=...); the EMA partner is built with the same projector.
  projector_module: Any = None
  predictor_module: Any = None

  @nn.compact
  def __call__(
    self,
    x,
    train: bool = True,
    bn_axis_name: Optional[str] = None,
    features_only: bool = False,
    stochastic_depth: bool = False,
  ):
    """Outputs of `x`; stochastic_depth=True (a training forward, rngs={'dropout': key}) drops encoder branches."""
    options = encoders.EncoderOptions(self.depth, self.width, self.cifar_stem, self.patch_size, self.drop_path_rate)
    encoder = encoders.encoder(
      self.arch,
      options,
      self.dtype,
      self.conv_impl,
      name="encoder",
      bn_running_var=self.bn_running_var,
      matmul_conv_vjp=self.matmul_conv_vjp,
      matmul_max_pool=self.matmul_max_pool,
      style=self.style,
      depthwise_impl=self.depthwise_impl,
    )
    if stochastic_depth and self.arch not in encoders.STOCHASTIC_DEPTH_ARCHS:
      raise ValueError(
        f"stochastic_depth=True: arch={self.arch!r} has no stochastic depth; choose one of "
        f"{list(encoders.STOCHASTIC_DEPTH_ARCHS)} or call without it."
      )
    # Only encoders with stochastic depth take the argument (the ResNet's and MobileNet's contract is unchanged).
    drop = {"stochastic_depth": stochastic_depth} if self.arch in encoders.STOCHASTIC_DEPTH_ARCHS else {}
    feature = encoder(input_adapter.apply(x, self.input_adapter), train=train, bn_axis_name=bn_axis_name, **drop)
    if features_only:
      return {"feature": feature}
    outputs = {"feature": feature}
    if self.num_classes:
      logits = nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(feature)
      outputs["logits"] = logits.astype(output_dtype(self.dtype))
    if self.probe_classes:
      logits = TorchDense(self.probe_classes, self.dtype, style=self.style, name="probe")(
        jax.lax.stop_gradient(feature)
      )
      outputs["probe_logits"] = logits.astype(output_dtype(self.dtype))
    head = dict(head_bias=self.head_bias, style=self.style)
    if self.projector_module is not None:
      projector = self.projector_module(
        self.hidden_dim, self.proj_dim, self.dtype, self.bn_running_var, name="projector", **head
      )
    elif self.projector == "moco":
      projector = PlainMLP(self.hidden_dim, self.proj_dim, self.dtype, name="projector", **head)
    else:
      projector = MLP(self.hidden_dim, self.proj_dim, self.dtype, self.bn_running_var, name="projector", **head)
    projection = projector(feature, train=train, bn_axis_name=bn_axis_name)
    # Predictors take the raw (unnormalised) projection (docs/spec.md "Networks").
    predictor = MLP if self.predictor_module is None else self.predictor_module
    predictions = {
      h: predictor(self.hidden_dim, self.proj_dim, self.dtype, self.bn_running_var, name=f"predictor_{h}", **head)(
        projection, train=train, bn_axis_name=bn_axis_name
      )
      for h in self.heads
    }
    return {**outputs, "projection": projection, "predictions": predictions}


def network_from_config(
  model_config,
  heads: Sequence[str] = (),
  dtype: Any = jnp.float32,
  conv_impl: str = "xla",
  num_classes: int = 0,
  bn_running_var: str = "biased",
  matmul_conv_vjp: bool = True,
  matmul_max_pool: bool = True,
  data_norm: tuple = (),
  probe_classes: int = 0,
  depthwise_impl: str = "xla",
  projector_module: Any = None,
  predictor_module: Any = None,
) -> Network:
  """Builds a Network from a config.model.{student,teacher} section (and config.model's BN and matmul options).

  `data_norm` (the data's (mean, std)) is needed when the section sets its own input normalisation or channels.
  """
  if model_config.get("style", "torchvision") == "haiku" and bn_running_var != "biased":
    raise ValueError(
      "model.<net>.style='haiku' keeps Haiku's BN averages (biased variance, debiased average); "
      f"config.model.bn_running_var={bn_running_var!r} contradicts it: set it to 'biased'."
    )
  own = any(model_config.get(k) for k in ("input_mean", "input_std", "in_channels"))
  if own and not data_norm:
    raise ValueError("network_from_config: the section sets its own input normalisation/channels; pass data_norm.")
  adapter = input_adapter.affine(model_config, *data_norm) if own else ()
  return Network(
    depth=model_config.depth,
    width=model_config.width,
    cifar_stem=model_config.cifar_stem,
    hidden_dim=model_config.hidden_dim,
    proj_dim=model_config.proj_dim,
    heads=tuple(heads),
    dtype=dtype,
    conv_impl=conv_impl,
    num_classes=num_classes,
    bn_running_var=bn_running_var,
    matmul_conv_vjp=matmul_conv_vjp,
    matmul_max_pool=matmul_max_pool,
    depthwise_impl=depthwise_impl,
    # Sections written before the arch key existed describe ResNets.
    arch=archs.arch_of(model_config),
    patch_size=model_config.get("patch_size", 16),
    drop_path_rate=model_config.get("drop_path_rate", 0.0),
    style=model_config.get("style", "torchvision"),
    projector=model_config.get("projector", "byol"),
    input_adapter=adapter,
    head_bias=model_config.get("head_bias", True),
    probe_classes=probe_classes,
    projector_module=projector_module,
    predictor_module=predictor_module,
  )


def compute_dtype(config):
  """The networks' compute dtype: config.model.compute_dtype, with auto = bfloat16 on GPU/TPU, float32 on CPU."""
  name = config.model.get("compute_dtype", "auto")
  if name == "auto":
    name = "float32" if jax.default_backend() == "cpu" else "bfloat16"
  return jnp.dtype(name)


def conv_impl(config, model_config=None) -> str:
  """A network's convolution implementation: config.model.conv_impl, where auto on CPU = its arch's
  `cpu_conv_impl` (the mobile networks: mixed, docs/architectures.md), else mixed for networks of width
  >= 32 (measured fastest there: docs/performance.md) and xla for narrower ones (such as the demo's: the
  gathered taps cost more than the slow gradients save); auto = xla on GPU/TPU."""
  name = config.model.get("conv_impl", "auto")
  if name == "auto":
    if jax.default_backend() != "cpu":
      return "xla"
    own = archs.spec(archs.arch_of(model_config)).cpu_conv_impl if model_config is not None else ""
    wide = model_config is None or model_config.width >= 32
    name = own or ("mixed" if wide else "xla")
  return name
