"""The encoder architectures a network can use (`model.{student,teacher}.arch`): one table, `SPECS`.

An `ArchSpec` row holds everything the code knows about an architecture: how its encoder is built
(models/encoders.py builds from the row), its feature size, whether it has stochastic depth, whether it
cuts the image into patches, its depths and styles, and the parameters LARS and the 'kernels' weight decay
leave out. Also here: the other fixed choices of a model section. Pure data: this module imports no JAX
(an arch's module is imported when its encoder is first built), so the configuration schema validates
against the table without importing JAX.
"""

from typing import Any, Callable, NamedTuple, Tuple

# ResNet depth -> blocks per stage (models/resnet.py); depth < 50 uses basic blocks, else bottlenecks.
RESNET_STAGES = {
  10: (1, 1, 1, 1),
  18: (2, 2, 2, 2),
  34: (3, 4, 6, 3),
  50: (3, 4, 6, 3),
  101: (3, 4, 23, 3),
  152: (3, 8, 36, 3),
  200: (3, 24, 36, 3),
}
# torchvision's ResNet, or DeepMind's Haiku one (padding, shortcuts, init, BN averages: models/resnet.py).
RESNET_STYLES = ("torchvision", "haiku")
# config.model.<net>.projector -> the projector's module ("byol": with BN, the default; "moco": without).
PROJECTORS = ("byol", "moco")
# config.model.depthwise_impl: the mobile networks' depthwise convolutions (models/depthwise.py).
DEPTHWISE_IMPLS = ("auto", "xla", "shifted")
# A network's own input keys (models/input_adapter.py) and what a section written without them means: the data's.
INPUT_DEFAULTS = dict(in_channels=0, input_mean=[], input_std=[])  # lists: as a saved config.json reads back


class EncoderOptions(NamedTuple):
  """What a model.{student,teacher} section says about its encoder (depth/width are ResNet's only)."""

  depth: int = 18
  width: int = 64
  cifar_stem: bool = False  # every convolutional arch: its CIFAR-style small-image variant
  patch_size: int = 16  # ViTs only
  drop_path_rate: float = 0.0  # EfficientNet and ViTs (stochastic depth); 0 = off, the SSL default


class Implementation(NamedTuple):
  """How an encoder computes (same parameters either way); the ResNet options apply to ResNets only."""

  conv_impl: str = "xla"  # models/resnet.py Conv
  depthwise_impl: str = "xla"  # models/depthwise.py
  bn_running_var: str = "biased"  # ResNet: models/batch_norm.py
  matmul_conv_vjp: bool = True  # ResNet, conv_impl="matmul"
  matmul_max_pool: bool = True
  style: str = "torchvision"  # ResNet: RESNET_STYLES


class ArchSpec(NamedTuple):
  """One architecture. `build(module, options, dtype, name, implementation)` returns its encoder (a flax
  module) and `feature_dim(module, options)` the size of its pooled feature, `module` being the imported
  simdis_jax.models.<module>."""

  module: str
  build: Callable[..., Any]
  feature_dim: Callable[..., int]
  stochastic_depth: bool = False  # takes drop_path_rate, and stochastic_depth=True with a 'dropout' RNG
  patches: bool = False  # a ViT: the image cut into patch_size patches (its total stride)
  depths: Tuple[int, ...] = ()  # the depths it is built at (ResNet's); () = the depth key is unused
  styles: Tuple[str, ...] = ("torchvision",)
  bn_running_vars: Tuple[str, ...] = ("biased",)
  # The names of its parameters that LARS's trust ratio (and weight_decay_mask='kernels') leaves out: every
  # parameter not named 'kernel' (optim.kernel_mask), listed here per architecture and checked by a test.
  lars_excluded: Tuple[str, ...] = ("bias", "scale")
  # Its name in the report's tables; "" = its key. An arch with depths is written "<label>-<depth> w<width>".
  label: str = ""
  # What config.model.conv_impl="auto" gives it on CPU; "" = decide by its width (ResNet's rule: models/network.py).
  cpu_conv_impl: str = ""


def _resnet(m, o: EncoderOptions, dtype, name, x: Implementation):
  return m.resnet(
    o.depth,
    o.width,
    o.cifar_stem,
    dtype,
    name=name,
    conv_impl=x.conv_impl,
    bn_running_var=x.bn_running_var,
    matmul_conv_vjp=x.matmul_conv_vjp,
    matmul_max_pool=x.matmul_max_pool,
    style=x.style,
  )


def _mobilenet_v3(variant: str) -> ArchSpec:
  return ArchSpec(
    "mobilenet_v3",
    lambda m, o, dtype, name, x: m.MobileNetV3(variant, o.cifar_stem, dtype, x.conv_impl, x.depthwise_impl, name=name),
    lambda m, o: m.feature_dim(variant),
    # 1x1 convolutions as dots, whose kernel gradient lax's convolution runs as a full-map window (slow on
    # XLA:CPU); the stem's kxk on its large map stays lax's (docs/architectures.md).
    cpu_conv_impl="mixed",
  )


def _vit(size: str) -> ArchSpec:
  return ArchSpec(
    "vit",
    lambda m, o, dtype, name, x: m.ViT(size, o.patch_size, o.drop_path_rate, dtype, name=name),
    lambda m, o: m.feature_dim(size),
    stochastic_depth=True,
    patches=True,
    lars_excluded=("bias", "scale", "cls_token", "pos_embedding"),
  )


SPECS = {
  "resnet": ArchSpec(
    "resnet",
    _resnet,
    lambda m, o: m.feature_dim(o.depth, o.width),
    depths=tuple(RESNET_STAGES),
    styles=RESNET_STYLES,
    bn_running_vars=("biased", "unbiased"),
    label="ResNet",
  ),
  "mobilenet_v3_large": _mobilenet_v3("large"),
  "mobilenet_v3_small": _mobilenet_v3("small"),
  "efficientnet_b0": ArchSpec(
    "efficientnet",
    lambda m, o, dtype, name, x: m.EfficientNet(
      o.cifar_stem, o.drop_path_rate, dtype=dtype, conv_impl=x.conv_impl, depthwise_impl=x.depthwise_impl, name=name
    ),
    lambda m, o: m.FEATURE,
    stochastic_depth=True,
    cpu_conv_impl="mixed",  # as MobileNetV3's
  ),
  "vit_tiny": _vit("tiny"),
  "vit_small": _vit("small"),
}
# The arch of a model section that names none (sections saved before the `arch` key existed).
DEFAULT_ARCH = "resnet"
# Views of the table, in its order.
ARCHS = tuple(SPECS)
VITS = tuple(a for a, s in SPECS.items() if s.patches)
STOCHASTIC_DEPTH_ARCHS = tuple(a for a, s in SPECS.items() if s.stochastic_depth)


def arch_of(section) -> str:
  """The arch a model.{student,teacher} section names; DEFAULT_ARCH for one saved before the `arch` key."""
  return section.get("arch", DEFAULT_ARCH)


def spec(arch: str) -> ArchSpec:
  """The row of `arch`, or one line naming the valid ones."""
  if arch not in SPECS:
    raise ValueError(f"Unknown encoder arch {arch!r}; choose one of {list(ARCHS)}.")
  return SPECS[arch]
