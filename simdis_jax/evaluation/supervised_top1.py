"""Top-1 of a supervised run's own classifier on the held-out split (Figure 3's supervised upper bound)."""

import functools
from typing import Callable

import jax
import numpy as np

from simdis_jax import parallel
from simdis_jax.data import augment
from simdis_jax.evaluation import features


def make_logits_fn(network, aug_config, image_size: int, mesh) -> Callable:
  """Jitted fn(variables, uint8 images) -> eval-mode classifier logits (eval view: resize / centre crop)."""
  rep, batch = parallel.replicated(mesh), parallel.batch_sharded(mesh)

  def logits(variables, images):
    x = augment.eval_view(images, aug_config, out_size=image_size)
    return network.apply(variables, x, train=False)["logits"]

  return jax.jit(logits, in_shardings=(rep, batch), out_shardings=batch)


def classifier_top1(
  network,
  variables,
  dataset,
  aug_config,
  image_size: int,
  mesh,
  eval_examples: int = 0,
  batch_size: int = 512,
  seed: int = 0,
) -> float:
  """Top-1 (%) of the network's classifier over the held-out split (`eval_examples` 0 = all of it)."""
  fn = functools.partial(
    make_logits_fn(network, dataset.device_augment_config(aug_config), image_size, mesh), variables
  )
  logits, labels = features.extract_features(fn, dataset.eval_batches("eval", eval_examples, batch_size, mesh, seed))
  return float(100.0 * np.mean(np.argmax(logits, -1) == labels))
