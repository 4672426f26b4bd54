"""Training and evaluation input: which examples form each batch, and where they go.

Two kinds of dataset share one interface (`train_batches`, `eval_batches`,
`device_augment_config`, `num_classes`, `num_train`): `InMemoryDataset` for
small datasets held in host memory (data/datasets.py's: Fashion-MNIST; the device does every
augmentation, crop included) and `pipeline.StreamingDataset` for tfds datasets
and image folders (the host decodes and crops with tf.data). This module
holds the in-memory one; `load_dataset` picks by config.data.name.

The order is a pure function of (seed, step): epoch e uses the permutation
drawn from (seed, e), and step k takes its slot in that epoch. A restart at step
k therefore sees exactly the batch an uninterrupted run would have seen, with
no example repeated or skipped within the epoch, at the cost of one
permutation per epoch (no iterator state to checkpoint). Each process
materialises only its own contiguous slice of every global batch.
"""

import dataclasses
from typing import Dict, Iterator, Tuple

import jax
import numpy as np

from simdis_jax import parallel
from simdis_jax.data import datasets


@dataclasses.dataclass
class InMemoryDataset:
  """A labelled image dataset held in host memory (small datasets such as Fashion-MNIST)."""

  train_images: np.ndarray
  train_labels: np.ndarray
  eval_images: np.ndarray
  eval_labels: np.ndarray
  num_classes: int
  host_crops = False  # batches are whole images; the device crops

  @property
  def num_train(self) -> int:
    """Number of training examples."""
    return int(self.train_images.shape[0])

  @property
  def image_shape(self) -> Tuple[int, ...]:
    """Shape of one image as batches deliver it."""
    return tuple(self.train_images.shape[1:])

  def device_augment_config(self, aug):
    """The device does every augmentation of in-memory images, crop included."""
    return aug

  def split(self, split: str) -> Tuple[np.ndarray, np.ndarray]:
    """(images, labels) of 'train' or 'eval'."""
    return (self.train_images, self.train_labels) if split == "train" else (self.eval_images, self.eval_labels)

  def num_examples(self, split: str) -> int:
    """Examples of a split ('train' / 'eval')."""
    return int(self.split(split)[0].shape[0])

  def train_batches(
    self, seed: int, start_step: int, batch_size: int, mesh, views: int = 2, aug=None, source=None
  ) -> Iterator[Tuple[int, jax.Array, jax.Array]]:
    """Yields (step, global uint8 images [B, H, W, C], labels) from `start_step` on (views/aug: the device's job)."""
    del views, aug, source
    return train_batches(self, seed, start_step, batch_size, mesh)

  def eval_batches(self, split: str, count: int, batch_size: int, mesh, seed: int = 0):
    """Global batches of a fixed random subset of `count` (0 = all) examples of 'train' / 'eval', tail masked."""
    images, labels = subset(*self.split(split), count, seed if split == "train" else seed + 1)
    return eval_batches(images, labels, batch_size, mesh)


def subset(images: np.ndarray, labels: np.ndarray, count: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
  """A fixed random subset of `count` examples (all when count is 0 or too large)."""
  if not count or count >= images.shape[0]:
    return images, labels
  idx = np.sort(np.random.default_rng(seed).choice(images.shape[0], count, replace=False))
  return images[idx], labels[idx]


def load_dataset(data_config):
  """The dataset config.data names: one of data/datasets.py's in memory, any tfds dataset or an image folder
  streamed."""
  dataset = datasets.get(data_config.name)
  if dataset.loader is not None:
    raw = dataset.loader.load(data_config.data_dir, data_config.allow_download)
    holdout = data_config.get("holdout", "none")
    if holdout == "none":
      return InMemoryDataset(
        raw["train_images"], raw["train_labels"], raw["test_images"], raw["test_labels"], dataset.num_classes
      )
    train, validation = dataset.loader.validation_split(len(raw["train_labels"]))
    held = (
      (raw["train_images"][validation], raw["train_labels"][validation])
      if holdout == "validation"
      else (raw["test_images"], raw["test_labels"])
    )
    return InMemoryDataset(raw["train_images"][train], raw["train_labels"][train], *held, dataset.num_classes)
  from simdis_jax.data import pipeline  # pylint: disable=import-outside-toplevel  (tf.data only when streaming)

  return pipeline.load(data_config)


def epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  """The example order of one epoch, a function of (seed, epoch) alone."""
  return np.random.default_rng([seed, epoch]).permutation(num_examples)


class EpochOrder:
  """Which examples form global batch `step` (drop-remainder epochs): epoch e's permutation, step k's slot.

  The one definition of the training order (pretraining and linear evaluation);
  it keeps only the current epoch's permutation, so consecutive steps draw it once.
  """

  def __init__(self, seed: int, num_examples: int, batch_size: int):
    self.seed, self.num_examples, self.batch_size = seed, num_examples, batch_size
    self.steps_per_epoch = num_examples // batch_size
    if self.steps_per_epoch == 0:
      raise ValueError(f"Global batch {batch_size} is larger than the {num_examples} training examples.")
    self._epoch, self._permutation = None, None

  def batch(self, step: int) -> np.ndarray:
    """Indices of the examples of global batch `step`."""
    epoch, slot = divmod(step, self.steps_per_epoch)
    if epoch != self._epoch:
      self._epoch, self._permutation = epoch, epoch_permutation(self.seed, epoch, self.num_examples)
    return self._permutation[slot * self.batch_size : (slot + 1) * self.batch_size]

  def batches(self, start: int, stop: int) -> np.ndarray:
    """int32 [stop - start, batch] indices of global batches start .. stop - 1."""
    return np.stack([self.batch(step) for step in range(start, stop)]).astype(np.int32)


def global_batch_indices(seed: int, step: int, num_examples: int, batch_size: int) -> np.ndarray:
  """Indices of the examples forming global batch `step` (one look-up into EpochOrder)."""
  return EpochOrder(seed, num_examples, batch_size).batch(step)


def process_slice(indices: np.ndarray, process_index: int, process_count: int) -> np.ndarray:
  """This process's contiguous share of a global batch."""
  per_process = len(indices) // process_count
  return indices[process_index * per_process : (process_index + 1) * per_process]


def train_batches(
  dataset: InMemoryDataset, seed: int, start_step: int, batch_size: int, mesh
) -> Iterator[Tuple[int, jax.Array, jax.Array]]:
  """Yields (step, global uint8 images, global labels) from `start_step` on, sharded over the data axis."""
  order = EpochOrder(seed, dataset.num_train, batch_size)
  step = start_step
  while True:
    indices = order.batch(step)
    local = process_slice(indices, jax.process_index(), jax.process_count())
    yield (
      step,
      parallel.global_batch(dataset.train_images[local], mesh),
      parallel.global_batch(dataset.train_labels[local], mesh),
    )
    step += 1


def eval_batches(images: np.ndarray, labels: np.ndarray, batch_size: int, mesh) -> Iterator[Dict[str, jax.Array]]:
  """Yields global batches covering every example once; the tail is padded and masked."""
  n = images.shape[0]
  count = jax.process_count()
  for start in range(0, n, batch_size):
    idx = np.arange(start, start + batch_size)
    mask = idx < n
    idx = np.where(mask, idx, 0)
    local = process_slice(idx, jax.process_index(), count)
    local_mask = process_slice(mask, jax.process_index(), count)
    yield {
      "images": parallel.global_batch(images[local], mesh),
      "labels": parallel.global_batch(labels[local], mesh),
      "mask": parallel.global_batch(local_mask, mesh),
    }
