"""Embedding API: `load_encoder(workdir)` restores one trained network and embeds images with it.

Only the chosen network's encoder (+ projector) parameters and BN statistics are
read from the checkpoint (a partial orbax restore: no optimizer state, no other
network), onto one device, so any device count works.
"""

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from simdis_jax import checkpoint, configuration, runs
from simdis_jax import workdir as workdir_files
from simdis_jax.data import augment
from simdis_jax.evaluation import features
from simdis_jax.models import depthwise
from simdis_jax.models.network import network_from_config

NETWORKS = ("student", "teacher")
WEIGHTS = ("online", "ema")


def image_shape(config) -> tuple:
  """(H, W, C) of the images a run's networks were built for."""
  return runs.image_shape(config)


def model_section(config, network: str):
  """config.model.<student|teacher>: the teacher of a SimDis-Off run is described as model.teacher."""
  if network not in NETWORKS:
    raise ValueError(f"network={network!r}: choose one of {list(NETWORKS)}.")
  return config.model[network]


def build_network(config, network: str):
  """The flax module of one network without predictor heads: encoder + projector, float32."""
  section = model_section(config, network)
  extra = {}
  if "bn_running_var" in config.model:  # eval-mode outputs do not depend on it; kept for fidelity
    extra["bn_running_var"] = config.model.bn_running_var
  return network_from_config(section, (), jnp.float32, configuration.conv_impl(config, section),
                             depthwise_impl=depthwise.from_config(config), **extra)


def restore_variables(workdir: str, config, network: str = "student", weights: str = "online",
                      step: Optional[int] = None, sharding=None):
  """{'params', 'batch_stats'} of one network's encoder + projector, restored alone; and the step."""
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
  restore_args = checkpoint.ocp.checkpoint_utils.construct_restore_args(item)
  mgr = checkpoint.manager(workdir)
  try:
    step = mgr.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"{workdir!r} has no checkpoint yet.")
    restored = mgr.restore(step, args=checkpoint.ocp.args.PyTreeRestore(
        item, restore_args=restore_args, partial_restore=True))
  finally:
    mgr.close()
  tree = restored[network]
  return {"params": tree[f"{prefix}params"], "batch_stats": tree[f"{prefix}batch_stats"]}, int(step)


@dataclasses.dataclass
class Encoder:
  """One trained network in eval mode: `embed(images)` for NumPy users, `apply_fn(variables, x)` for JAX users.

  `apply_fn` takes images already preprocessed (float32 [B, S, S, C], normalised,
  S = `image_size`); `embed` does the evaluation preprocessing itself.
  """
  module: Any
  variables: dict
  config: ml_collections.ConfigDict
  network: str
  weights: str
  step: int
  project: bool
  batch_size: int = 256

  @property
  def image_size(self) -> int:
    """Side of the square images the network sees (config.data.image_size)."""
    return int(self.config.data.image_size)

  @property
  def channels(self) -> int:
    """Channels the network expects (1 for Fashion-MNIST runs, else 3)."""
    return image_shape(self.config)[2]

  @property
  def apply_fn(self) -> Callable:
    """(variables, preprocessed float images) -> features [B, D] (eval-mode BN); pure, jittable."""
    key = "projection" if self.project else "feature"

    def apply(variables, x):
      return self.module.apply(variables, x, train=False, features_only=not self.project)[key]

    return apply

  def preprocess(self, images) -> jnp.ndarray:
    """The evaluation view of uint8 (0..255) or float ([0, 1]) images [B, H, W(, C)]: centre crop, resize, normalise."""
    return augment.eval_view(images, self.config.data.augment, out_size=self.image_size)

  def features_fn(self) -> Callable:
    """Pure function (variables, raw images) -> features: the kNN/linear feature function (export traces it)."""
    return features.feature_function(self.module, self.config.data.augment, self.image_size, self.project)

  def embed(self, images, batch_size: Optional[int] = None) -> np.ndarray:
    """Features [N, D] (float32 NumPy) of images [N, H, W, C] or [N, H, W]; batched internally."""
    images = self._check(images)
    if not hasattr(self, "_jitted"):
      self._jitted = jax.jit(self.features_fn())  # pylint: disable=attribute-defined-outside-init
    size = batch_size or self.batch_size
    out = []
    for start in range(0, images.shape[0], size):
      chunk = images[start:start + size]
      n = chunk.shape[0]
      if n < size and images.shape[0] > size:  # pad the tail: one compiled shape for every chunk
        chunk = np.concatenate([chunk, np.zeros((size - n,) + chunk.shape[1:], chunk.dtype)])
      out.append(np.asarray(self._jitted(self.variables, chunk))[:n])
    if not out:
      return np.zeros((0, self.feature_dim), np.float32)
    return np.concatenate(out)

  @property
  def feature_dim(self) -> int:
    """Size of one embedding."""
    sample = jnp.zeros((1, self.image_size, self.image_size, self.channels), jnp.float32)
    return int(jax.eval_shape(self.apply_fn, self.variables, sample).shape[-1])

  def _check(self, images) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 3 and self.channels == 1:
      images = images[..., None]
    if images.ndim != 4 or images.shape[-1] != self.channels:
      raise ValueError(f"embed() takes images [N, H, W, {self.channels}] (uint8 0..255 or float 0..1); got shape "
                       f"{images.shape}. This {self.network} was trained on {self.channels}-channel images.")
    if images.dtype != np.uint8:
      images = images.astype(np.float32)
    return images


def load_encoder(workdir: str, network: str = "student", weights: str = "online", step: Optional[int] = None,
                 project: bool = False, batch_size: int = 256) -> Encoder:
  """One network of a simdis_jax run (trained or imported) as an Encoder; `project=True` embeds with the projector."""
  workdir = workdir_files.absolute(workdir)
  config = runs.read_run_config(workdir)
  model_section(config, network)
  module = build_network(config, network)
  variables, step = restore_variables(workdir, config, network, weights, step)
  return Encoder(module, variables, config, network, weights, step, project, batch_size)
