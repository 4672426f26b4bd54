"""Weighted cosine kNN on frozen features (the InstDisc/DINO monitor).

Each query takes its k most cosine-similar memory-bank examples; neighbour i
votes for its class with weight exp(sim_i / T); the class with the largest
summed vote wins.
"""

import functools
from typing import Callable, Dict, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from simdis_jax.data import augment, input as data_input
from simdis_jax.simdis import l2_normalize


@functools.partial(jax.jit, static_argnames=("k", "num_classes"))
def knn_scores(bank: jnp.ndarray, bank_labels: jnp.ndarray, queries: jnp.ndarray, k: int, temperature: float,
               num_classes: int) -> jnp.ndarray:
  """Class scores [Q, C] of each query from its k nearest (cosine) bank examples."""
  sims = l2_normalize(queries) @ l2_normalize(bank).T
  top_sims, top_idx = jax.lax.top_k(sims, k)
  weights = jnp.exp(top_sims / temperature)
  votes = jax.nn.one_hot(bank_labels[top_idx], num_classes) * weights[..., None]
  return jnp.sum(votes, axis=1)


def knn_classify(bank: np.ndarray, bank_labels: np.ndarray, queries: np.ndarray, k: int = 20,
                 temperature: float = 0.07, num_classes: int = 0, chunk: int = 1024) -> Tuple[np.ndarray, np.ndarray]:
  """Returns (top-1 predictions [Q], class scores [Q, C]); k larger than the bank is an error."""
  if k > bank.shape[0]:
    raise ValueError(f"kNN with k={k} needs at least k memory-bank examples, but the bank holds "
                     f"{bank.shape[0]}; lower config.knn.k or raise config.knn.train_examples.")
  num_classes = num_classes or int(bank_labels.max()) + 1
  scores = [np.asarray(knn_scores(bank, bank_labels, queries[i:i + chunk], k, temperature, num_classes))
            for i in range(0, queries.shape[0], chunk)]
  scores = np.concatenate(scores)
  return scores.argmax(-1), scores


def extract_features(feature_fn: Callable, images: np.ndarray, labels: np.ndarray, batch_size: int,
                     mesh) -> Tuple[np.ndarray, np.ndarray]:
  """Runs `feature_fn(images)` over all images (every process) and returns host numpy features and labels."""
  feats, labs = [], []
  for batch in data_input.eval_batches(images, labels, batch_size, mesh):
    f, l, m = (multihost_utils.process_allgather(x, tiled=True)
               for x in (feature_fn(batch["images"]), batch["labels"], batch["mask"]))
    feats.append(f[m.astype(bool)])
    labs.append(l[m.astype(bool)])
  return np.concatenate(feats), np.concatenate(labs)


def make_feature_fn(network, variables, aug_config, image_size: int) -> Callable:
  """Jitted eval-mode pooled encoder features (before the projector) of uint8 images."""

  @jax.jit
  def fn(images):
    x = augment.eval_view(images, aug_config, out_size=image_size)
    return network.apply(variables, x, train=False, features_only=True)["feature"]

  return fn


def subset(images: np.ndarray, labels: np.ndarray, count: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
  """A fixed random subset of `count` examples (all when count is 0 or too large)."""
  if not count or count >= images.shape[0]:
    return images, labels
  idx = np.sort(np.random.default_rng(seed).choice(images.shape[0], count, replace=False))
  return images[idx], labels[idx]


def knn_accuracy(network, variables, dataset, knn_config, aug_config, image_size: int, mesh,
                 seed: int = 0) -> Dict[str, float]:
  """Top-1 kNN accuracy (%) of a network's encoder: train split as the bank, held-out split as queries."""
  fn = make_feature_fn(network, variables, aug_config, image_size)
  bank_x, bank_y = subset(dataset.train_images, dataset.train_labels, knn_config.train_examples, seed)
  query_x, query_y = subset(dataset.eval_images, dataset.eval_labels, knn_config.eval_examples, seed + 1)
  bank, bank_y = extract_features(fn, bank_x, bank_y, knn_config.batch_size, mesh)
  queries, query_y = extract_features(fn, query_x, query_y, knn_config.batch_size, mesh)
  pred, _ = knn_classify(bank, bank_y, queries, knn_config.k, knn_config.temperature, dataset.num_classes)
  return {"knn_top1": float(100.0 * np.mean(pred == query_y))}
