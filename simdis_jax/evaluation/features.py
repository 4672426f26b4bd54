"""Frozen-encoder features: the one eval-mode feature function of kNN, linear evaluation and export.

A feature is the pooled encoder output before the projector, of a network in
eval mode (running BN statistics), on the eval preprocessing (resize + centre
crop) of uint8 images; the encoder's variables are an argument, never a
trained parameter.
"""

from typing import Any, Callable, Dict, Iterable, Tuple

import jax
import numpy as np
from jax.experimental import multihost_utils

from simdis_jax import parallel
from simdis_jax.data import augment


def encoder_variables(net_state, weights: str = "online") -> Dict[str, Any]:
  """A network's encoder params and BN statistics: its online weights or their EMA ('online' | 'ema')."""
  if weights == "online":
    params, stats = net_state.params, net_state.batch_stats
  else:
    params, stats = net_state.ema_params, net_state.ema_batch_stats
  # Only the encoder subtree: that is all features_only=True touches, and all a reader of features may see.
  # A ViT encoder has no BatchNorm, hence no statistics of its own.
  return {"params": {"encoder": params["encoder"]}, "batch_stats": {"encoder": stats.get("encoder", {})}}


def feature_function(network, aug_config, image_size: int, project: bool = False) -> Callable:
  """Pure fn(variables, images) -> eval-mode features: the pooled encoder output, or with `project` the projector's.

  Images are uint8 (0..255) or float ([0, 1]); they get the eval view (centre crop, resize, normalise).
  """
  key = "projection" if project else "feature"

  def features(variables, images):
    x = augment.eval_view(images, aug_config, out_size=image_size)
    return network.apply(variables, x, train=False, features_only=not project)[key]

  return features


def make_feature_fn(network, aug_config, image_size: int, mesh) -> Callable:
  """Jitted fn(variables, uint8 images) -> eval-mode pooled encoder features, batch-sharded over `mesh`."""
  rep, batch = parallel.replicated(mesh), parallel.batch_sharded(mesh)
  return jax.jit(feature_function(network, aug_config, image_size), in_shardings=(rep, batch), out_shardings=batch)


def extract_features(feature_fn: Callable, batches: Iterable[Dict[str, jax.Array]]) -> Tuple[np.ndarray, np.ndarray]:
  """Runs `feature_fn(images)` over masked global batches (every process) -> host numpy features and labels."""
  feats, labs = [], []
  for batch in batches:
    f, l, m = (
      multihost_utils.process_allgather(x, tiled=True)
      for x in (feature_fn(batch["images"]), batch["labels"], batch["mask"])
    )
    feats.append(f[m.astype(bool)])
    labs.append(l[m.astype(bool)])
  return np.concatenate(feats), np.concatenate(labs)
