"""Embedding API: `load_encoder(workdir)` restores one trained network and embeds images with it.

    enc = simdis_jax.load_encoder("workdirs/demo")            # the student's online weights, newest intact step
    features = enc(uint8_images)                              # [N, enc.num_features] float32 NumPy
    features = enc(float_images, value_range=(0, 1))          # float images say what range they are in

Only the chosen network's encoder (+ projector) parameters and BN statistics are
read from the checkpoint (a partial restore: no optimizer state, no other network),
onto one device, so any device count works. The restore is training's own verified
one (checkpoint.restore_verified): the tree, a CRC per array and finiteness are
checked, and a damaged newest step is passed over for the previous intact one with
one warning line.
"""

import dataclasses
import os
from typing import Any, Callable, Dict, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from simdis_jax import checkpoint, configuration, methods, runs, zoo
from simdis_jax import workdir as workdir_files
from simdis_jax.data import augment
from simdis_jax.evaluation import features
from simdis_jax.models import archs, depthwise
from simdis_jax.models.network import conv_impl, network_from_config

NETWORKS = ("student", "teacher")
WEIGHTS = ("online", "ema")
PathLike = Union[str, "os.PathLike[str]"]


def _resolve_source(source: PathLike) -> str:
  """The absolute workdir that `source` (a workdir path or a zoo name) names: the one place a name becomes a workdir."""
  if not isinstance(source, (str, os.PathLike)) or not str(source).strip():
    raise TypeError(f"load_encoder takes a workdir path or a zoo name (a str); got {source!r}.")
  return workdir_files.absolute(zoo.resolve(os.fspath(source)))


def image_shape(config: ml_collections.ConfigDict) -> Tuple[int, int, int]:
  """(H, W, C) of the images a run's networks were built for."""
  return runs.image_shape(config)


def model_section(config: ml_collections.ConfigDict, network: str) -> ml_collections.ConfigDict:
  """config.model.<student|teacher>: the teacher of a SimDis-Off run is described as model.teacher."""
  if network not in NETWORKS:
    raise ValueError(f"network={network!r}: choose one of {list(NETWORKS)}.")
  return config.model[network]


def build_network(config: ml_collections.ConfigDict, network: str) -> Any:
  """The flax module of one network without predictor heads: encoder + projector, float32."""
  section = model_section(config, network)
  extra = {}
  if "bn_running_var" in config.model:  # eval-mode outputs do not depend on it; kept for fidelity
    extra["bn_running_var"] = config.model.bn_running_var
  extra["data_norm"] = (config.data.augment.mean, config.data.augment.std)  # an adopted teacher's own inputs
  extra.update(methods.shared_heads(config, network))  # a method's own projector module (SimSiam's), if any
  return network_from_config(
    section, (), jnp.float32, conv_impl(config, section), depthwise_impl=depthwise.from_config(config), **extra
  )


def restore_variables(
  workdir: str,
  config: ml_collections.ConfigDict,
  network: str = "student",
  weights: str = "online",
  step: Optional[int] = None,
  sharding: Optional[jax.sharding.Sharding] = None,
) -> Tuple[Dict[str, Any], int]:
  """({'params', 'batch_stats'} of one network's encoder + projector, step), restored alone and verified.

  `step` None: the newest intact step (a damaged newer one is passed over with one warning line);
  a step that does not exist is a ValueError listing the steps; a damaged chosen step is
  checkpoint.NoIntactCheckpoint naming the others.
  """
  if weights not in WEIGHTS:
    raise ValueError(f"weights={weights!r}: choose one of {list(WEIGHTS)}.")
  if network == "teacher" and not configuration.uses_teacher(config):
    raise ValueError(f"{workdir} is a {config.method!r} run: it has no teacher; use network='student'.")
  net = build_network(config, network)
  sample = jnp.zeros((1,) + image_shape(config), jnp.float32)
  abstract = jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), sample, train=False))
  sharding = sharding or jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  prefix = "" if weights == "online" else "ema_"
  item = {network: {f"{prefix}params": abstract["params"], f"{prefix}batch_stats": abstract["batch_stats"]}}
  item = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), item)
  mgr = checkpoint.manager(workdir)
  try:
    restored, step = checkpoint.restore_verified(mgr, item, step, partial=True)
  finally:
    mgr.close()
  tree = restored[network]
  return {"params": tree[f"{prefix}params"], "batch_stats": tree[f"{prefix}batch_stats"]}, int(step)


def check_images(images: Any, channels: int, value_range: Optional[Tuple[float, float]] = None) -> np.ndarray:
  """Images [N, H, W, C] (or [N, H, W] for 1 channel) as uint8 0..255 or float32 in [0, 1], or a clear error.

  uint8 images are 0..255. Float images must say their range (`value_range=(0, 1)` or `(0, 255)`, any
  (low, high)) and lie within it; other dtypes are refused: a wrong guess would give wrong features silently.
  """
  images = np.asarray(images)
  if images.ndim == 3 and channels == 1:
    if images.shape[-1] == 1:  # one image [H, W, 1], or a batch of 1-pixel-wide images? Never guessed.
      raise ValueError(
        f"Images of shape {images.shape} are ambiguous: pass a batch [N, H, W, 1] (one image: images[None])."
      )
    images = images[..., None]
  if images.ndim != 4 or images.shape[-1] != channels:
    raise ValueError(
      f"Images must be [N, H, W, {channels}] (this network was trained on {channels}-channel "
      f"images); got shape {images.shape}."
    )
  if images.dtype == np.uint8:
    if value_range is not None and tuple(value_range) != (0, 255):
      raise ValueError(f"uint8 images are 0..255; value_range={tuple(value_range)} does not apply to them.")
    return images
  if not np.issubdtype(images.dtype, np.floating):
    raise TypeError(
      f"Images of dtype {images.dtype} are ambiguous: pass uint8 (0..255), e.g. "
      "images.astype(np.uint8), or float images with value_range=(0, 1) or (0, 255)."
    )
  if value_range is None:
    raise ValueError(
      f"Float images ({images.dtype}) need their range: pass value_range=(0, 1) or (0, 255) "
      "(or uint8 images, which are 0..255)."
    )
  low, high = (float(v) for v in value_range)
  if not high > low:
    raise ValueError(f"value_range={tuple(value_range)} must be (low, high) with high > low, e.g. (0, 1).")
  if images.size:
    lo, hi = float(np.min(images)), float(np.max(images))
    if not (np.isfinite(lo) and np.isfinite(hi)):
      raise ValueError("The images hold NaN or Inf values.")
    slack = 1e-3 * (high - low)
    if lo < low - slack or hi > high + slack:
      raise ValueError(
        f"The images' values span [{lo:g}, {hi:g}], outside value_range={tuple(value_range)}: "
        "pass the range they are in (e.g. (0, 255))."
      )
  return ((images.astype(np.float32) - np.float32(low)) / np.float32(high - low)).astype(np.float32)


@dataclasses.dataclass(repr=False)
class Encoder:
  """One trained network in eval mode: `enc(images)` / `enc.embed(images)` for NumPy, `apply_fn` for JAX.

  Attributes:
    module: the flax module (encoder + projector, no predictor heads).
    variables: its {'params', 'batch_stats'} as restored from the checkpoint.
    config: the run's config (data, augmentation and model sections).
    network: "student" or "teacher"; weights: "online" or "ema"; step: the checkpoint step restored.
    project: whether embeddings are the projector's output instead of the pooled encoder features.
    batch_size: images per forward pass inside `embed`.
    workdir: the run's workdir.

  `apply_fn` takes images already preprocessed (float32 [B, S, S, C], normalised, S =
  `image_size`); `embed` / `__call__` do the evaluation preprocessing (centre crop, resize,
  normalise) themselves, exactly as the kNN monitor and the exports do.
  """

  module: Any
  variables: Dict[str, Any]
  config: ml_collections.ConfigDict
  network: str
  weights: str
  step: int
  project: bool
  batch_size: int = 256
  workdir: str = ""

  def __repr__(self) -> str:
    net = model_section(self.config, self.network)
    arch = archs.arch_of(net)
    what = f"{arch}-{net.depth} width {net.width}" if arch == "resnet" else arch
    return (
      f"Encoder({self.network}/{self.weights} of {self.config.method} at step {self.step}: {what}, "
      f"{self.image_size}x{self.image_size}x{self.channels} -> {self.num_features} "
      f"{'projections' if self.project else 'features'}, workdir={self.workdir!r})"
    )

  @property
  def image_size(self) -> int:
    """Side of the square images the network sees (config.data.image_size)."""
    return int(self.config.data.image_size)

  @property
  def channels(self) -> int:
    """Channels the network expects (1 for Fashion-MNIST runs, else 3)."""
    return image_shape(self.config)[2]

  @property
  def num_features(self) -> int:
    """Size of one embedding (the encoder's feature size, or the projector's with project=True)."""
    if not hasattr(self, "_num_features"):
      sample = jnp.zeros((1, self.image_size, self.image_size, self.channels), jnp.float32)
      shape = jax.eval_shape(self.apply_fn, self.variables, sample).shape
      self._num_features = int(shape[-1])  # pylint: disable=attribute-defined-outside-init
    return self._num_features

  @property
  def feature_dim(self) -> int:
    """Size of one embedding (the same as `num_features`)."""
    return self.num_features

  @property
  def apply_fn(self) -> Callable[[Dict[str, Any], jax.Array], jax.Array]:
    """(variables, preprocessed float images) -> features [B, D] (eval-mode BN); pure, jittable."""
    key = "projection" if self.project else "feature"

    def apply(variables, x):
      return self.module.apply(variables, x, train=False, features_only=not self.project)[key]

    return apply

  def preprocess(self, images: Any, value_range: Optional[Tuple[float, float]] = None) -> jax.Array:
    """The evaluation view of images [B, H, W(, C)] (input contract of `embed`): centre crop, resize, normalise."""
    images = check_images(images, self.channels, value_range)
    return augment.eval_view(images, self.config.data.augment, out_size=self.image_size)

  def features_fn(self) -> Callable[[Dict[str, Any], jax.Array], jax.Array]:
    """Pure (variables, uint8 0..255 or float [0, 1] images) -> features: the kNN/linear feature function."""
    return features.feature_function(self.module, self.config.data.augment, self.image_size, self.project)

  def embed(
    self, images: Any, value_range: Optional[Tuple[float, float]] = None, batch_size: Optional[int] = None
  ) -> np.ndarray:
    """Features [N, num_features] (float32 NumPy) of images [N, H, W, C] (or [N, H, W] for 1 channel).

    Args:
      images: uint8 0..255, or float with `value_range` given; any H × W (centre-cropped and resized).
      value_range: (low, high) of float images, e.g. (0, 1) or (0, 255); refused for other dtypes.
      batch_size: images per forward pass (default `self.batch_size`); the result does not depend on it.
    Raises:
      ValueError / TypeError: a wrong shape, channel count, dtype, missing or wrong value_range.
    """
    images = check_images(images, self.channels, value_range)
    if not hasattr(self, "_jitted"):
      self._jitted = jax.jit(self.features_fn())  # pylint: disable=attribute-defined-outside-init
    size = batch_size or self.batch_size
    out = []
    for start in range(0, images.shape[0], size):
      chunk = images[start : start + size]
      n = chunk.shape[0]
      if n < size and images.shape[0] > size:  # pad the tail: one compiled shape for every chunk
        chunk = np.concatenate([chunk, np.zeros((size - n,) + chunk.shape[1:], chunk.dtype)])
      out.append(np.asarray(self._jitted(self.variables, chunk))[:n])
    if not out:
      return np.zeros((0, self.num_features), np.float32)
    return np.concatenate(out)

  def __call__(
    self, images: Any, value_range: Optional[Tuple[float, float]] = None, batch_size: Optional[int] = None
  ) -> np.ndarray:
    """`embed(images, value_range, batch_size)`: features [N, num_features] as float32 NumPy."""
    return self.embed(images, value_range, batch_size)


def _run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config of a pretraining workdir, or one line saying what the workdir is instead."""
  config = runs.read_run_config(workdir)
  if workdir_files.is_linear_eval(config):
    pretrained = config.get("pretrained", {}).get("workdir", "")
    raise ValueError(
      f"{workdir} is a linear-evaluation workdir, not a pretraining run: load the encoder from "
      f"the run it evaluated{f' ({pretrained})' if pretrained else ''}."
    )
  if "model" not in config or "student" not in config.model:
    raise ValueError(f"{workdir}'s config.json describes no pretraining run (no model.student).")
  return config


def load_encoder(
  workdir: PathLike,
  *,
  network: str = "student",
  weights: str = "online",
  step: Optional[int] = None,
  project: bool = False,
  batch_size: int = 256,
) -> Encoder:
  """One network of a simdis_jax pretraining run (trained or imported) as an `Encoder`.

  Args:
    workdir: the run's --workdir (a path), or a zoo name (`python -m simdis_jax.zoo` lists them).
    network: "student" or "teacher" (SimDis and SEED runs hold both).
    weights: "online" or "ema" (the momentum copy).
    step: a checkpoint step (default: the newest intact one; a bad step lists the steps there are).
    project: embed with the projector's output instead of the pooled encoder features.
    batch_size: images per forward pass inside `embed`.
  Raises:
    FileNotFoundError: not a simdis_jax workdir, or no checkpoint yet.
    ValueError: a bad network / weights / step, or a workdir that is not a pretraining run.
    checkpoint.NoIntactCheckpoint: the chosen step (or every step) is damaged.
  """
  workdir = _resolve_source(workdir)
  config = _run_config(workdir)
  model_section(config, network)
  module = build_network(config, network)
  variables, step = restore_variables(workdir, config, network, weights, step)
  return Encoder(module, variables, config, network, weights, step, project, batch_size, workdir)
