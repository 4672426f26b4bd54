"""Streaming input for datasets too large for host memory: tfds datasets by name, or folders of image files.

Where the work happens (docs/spec.md "Augmentations (BYOL)", DeepMind's split):
- on the host, in tf.data: read the encoded bytes, draw the random resized crop
  window, decode only that window (``decode_and_crop_jpeg``; other formats are
  decoded whole and sliced), resize it to ``image_size`` (bicubic) -> one uint8
  crop per view (``host_crops.py``);
- on the accelerator, inside the jitted step: flip, colour jitter in random
  order, greyscale, blur, solarize and normalisation (``augment.py`` with the
  crop switched off).
Evaluation batches are a centre crop of ``eval_crop_fraction`` of the short
side, decoded the same way and resized to ``image_size``.

Exactness (batch k is a function of (seed, step) alone). Each process reads
its own equal-sized shard of the split (``tfds.even_splits`` /
every P-th file; ``sources.py``), so no example is read by two hosts. Epoch e reads the shard
in an order drawn from (seed, e, process): tfds shards are shuffled with that
seed and streamed through a seeded shuffle buffer; folder files are permuted
outright. Every crop is drawn from a stateless seed of (seed, step, global
slot, view). A restart at step k rebuilds epoch e's stream and skips the
examples of the steps before k *before* they are decoded: for folders the
skip is an index into the permutation (free), for tfds it reads the skipped
records' bytes without decoding them (seconds per 100k records). We chose
this over a checkpointable iterator (grain + array_record) because it needs
no iterator state in the checkpoint and works on the tfrecord files tfds
builds by default; the price is that a tfds resume re-reads part of the epoch.

Unreadable files (corrupt, truncated, unsupported) are skipped, counted and
logged, never a crash: an example whose decode fails is dropped by tf.data,
and the host puts every other example back in its slot and fills the failed
one with another example of the same batch, so batches keep their shape and
their composition.
"""

import dataclasses
import functools
import logging
import queue
import threading
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from simdis_jax import parallel
from simdis_jax.data import augment, host_crops, sources

# tf.data must not take the accelerator's memory (TF sees GPUs too).
tf.config.set_visible_devices([], "GPU")

FOLDER = "folder"


# ------------------------------------------------------------ batch assembly


_WARNED = set()  # unreadable files already reported in this process


def aligned_batches(
  batches: Iterator, first: int, count: int, local_batch: int, describe: Callable[[int], str]
) -> Iterator[Tuple[int, np.ndarray, np.ndarray, int]]:
  """Re-forms tf.data batches that lost failed examples into the fixed slots of each step.

  `batches` yields (positions, images, labels) in position order, some
  positions missing (their file failed). Batch b holds positions
  [b*B, (b+1)*B); a missing slot takes another example of the same batch.
  Yields (b, images, labels, slots refilled). Without failures every tf.data
  batch passes through as it is (no copy).
  """
  carry = None  # rows read ahead of the current batch
  exhausted = False
  for b in range(first, count):
    lo, hi = b * local_batch, (b + 1) * local_batch
    parts = [carry] if carry is not None else []
    carry = None
    while not exhausted and (not parts or parts[-1][0][-1] < hi - 1):
      nxt = next(batches, None)
      if nxt is None:
        exhausted = True
      else:
        parts.append(nxt)
    if len(parts) == 1 and parts[0][0].shape[0] == local_batch and parts[0][0][0] == lo and parts[0][0][-1] == hi - 1:
      yield b, parts[0][1], parts[0][2], 0  # the common case: nothing failed
      continue
    positions = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0,), np.int64)
    inside = positions < hi
    if (~inside).any():
      carry = tuple(np.concatenate([p[i] for p in parts])[~inside] for i in range(3))
    if not inside.any():
      shown = [describe(p) for p in range(lo, min(hi, lo + 3))]
      raise RuntimeError(
        f"Every example of a batch (positions {lo}..{hi - 1}) failed to decode, e.g. "
        f"{', '.join(shown)}: check that these are readable JPEG/PNG/GIF/BMP images, or "
        "remove them."
      )
    images_in = np.concatenate([p[1] for p in parts])[inside]
    labels_in = np.concatenate([p[2] for p in parts])[inside]
    slots = positions[inside] - lo
    images = np.empty((local_batch,) + images_in.shape[1:], images_in.dtype)
    labels = np.empty((local_batch,), labels_in.dtype)
    images[slots], labels[slots] = images_in, labels_in
    missing = np.setdiff1d(np.arange(local_batch), slots)
    for j, i in enumerate(missing):
      what = describe(lo + int(i))
      if what not in _WARNED:  # once per file, not again every epoch
        _WARNED.add(what)
        logging.warning(
          "Skipped an unreadable image (%s); its batch slot reuses another example of the batch "
          "(each such file is reported once).",
          what,
        )
      donor = slots[j % slots.size]
      images[i], labels[i] = images[donor], labels[donor]
    yield b, images, labels, int(missing.size)


def prefetch(iterator: Iterator, size: int) -> Iterator:
  """Runs `iterator` in a background thread, `size` items ahead; its exceptions surface in the caller."""
  if size <= 0:
    yield from iterator
    return
  q: "queue.Queue" = queue.Queue(maxsize=size)
  done = object()
  stop = threading.Event()

  def work():
    try:
      for item in iterator:
        while not stop.is_set():
          try:
            q.put(item, timeout=0.5)
            break
          except queue.Full:
            continue
        if stop.is_set():
          return
      q.put(done)
    except BaseException as e:  # pylint: disable=broad-except
      q.put(e)

  thread = threading.Thread(target=work, daemon=True, name="simdis-input")
  thread.start()
  try:
    while True:
      item = q.get()
      if item is done:
        return
      if isinstance(item, BaseException):
        raise item
      yield item
  finally:
    # Closed early (end of training, an error): let the worker finish its current item and stop, so that
    # no thread is left inside tf.data when the interpreter exits.
    stop.set()
    thread.join(timeout=60)


# ------------------------------------------------------------------ dataset


def _first(split: str, count: int) -> str:
  """The tfds split expression of the first `count` examples of `split` (all of it when count is 0)."""
  return f"{split}[:{int(count)}]" if count else split


def _options(threads: int = 0) -> tf.data.Options:
  options = tf.data.Options()
  if threads:
    options.threading.private_threadpool_size = int(threads)
  options.deterministic = True
  options.autotune.enabled = True
  options.experimental_optimization.map_parallelization = True
  options.threading.max_intra_op_parallelism = 1
  return options


@dataclasses.dataclass
class StreamingDataset:
  """A dataset read from disk on every step: pretraining batches of host crops, evaluation batches of centre crops."""

  data_config: ml_collections.ConfigDict
  train: Any  # TfdsSource | FolderSource: the pretraining split
  labelled: Dict[str, Any]  # "train"/"eval" -> TfdsSource of the labelled splits (kNN, linear eval)
  num_classes: int
  host_crops: bool = True
  stats: Dict[str, int] = dataclasses.field(default_factory=lambda: {"skipped": 0})

  @property
  def num_train(self) -> int:
    """Examples of the pretraining split (all processes together, after equal sharding)."""
    return self.train.num_examples * jax.process_count()

  def device_augment_config(self, aug: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """What the device still does: everything but the crop; evaluation images arrive centre-cropped already."""
    return augment.without_crop(aug)

  @property
  def image_shape(self) -> Tuple[int, int, int]:
    """Shape of one evaluation image as batches deliver it."""
    return (int(self.data_config.image_size),) * 2 + (3,)

  def _stream(self, source, seed, epoch, start, local_batch, steps_per_epoch, views, aug, process_index, global_batch):
    size, channels = int(self.data_config.image_size), 3
    scale, ratio = tuple(aug.crop_scale), tuple(aug.crop_ratio)

    def crop(pos, encoded, label):
      step = epoch * steps_per_epoch + pos // local_batch
      slot = process_index * local_batch + pos % local_batch
      example_seed = tf.random.experimental.stateless_fold_in(
        tf.constant([seed, 0x51D15], tf.int64), step * global_batch + slot
      )
      return pos, host_crops.train_crops(encoded, example_seed, views, size, scale, ratio, channels), label

    ds = source.records(seed, epoch, start).take(steps_per_epoch * local_batch - start)
    ds = ds.map(crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # A file that fails to decode is dropped here; aligned_batches puts the others back in their slots.
    ds = ds.ignore_errors(log_warning=False)
    ds = ds.batch(local_batch).prefetch(2).with_options(_options(self.data_config.host_threads))
    return ds.as_numpy_iterator()

  def train_batches(
    self,
    seed: int,
    start_step: int,
    batch_size: int,
    mesh,
    views: int = 2,
    aug: Optional[ml_collections.ConfigDict] = None,
    source=None,
  ) -> Iterator[Tuple[int, jax.Array, jax.Array]]:
    """Yields (step, uint8 crops [B, views, S, S, C], labels [B]) from `start_step` on, as global arrays."""
    source = source or self.train
    aug = aug or self.data_config.augment
    pi, pc = jax.process_index(), jax.process_count()
    local_batch = batch_size // pc
    steps_per_epoch = source.num_examples // local_batch
    if steps_per_epoch == 0:
      raise ValueError(
        f"The global batch {batch_size} is larger than the {source.num_examples * pc} examples "
        f"of {source.label}; lower config.train.batch_size."
      )

    def host_batches():
      epoch, first = divmod(start_step, steps_per_epoch)
      while True:
        elements = self._stream(
          source, seed, epoch, first * local_batch, local_batch, steps_per_epoch, views, aug, pi, batch_size
        )
        describe = functools.partial(source.describe, seed, epoch)
        for b, images, labels, skipped in aligned_batches(elements, first, steps_per_epoch, local_batch, describe):
          yield epoch * steps_per_epoch + b, images, labels, skipped
        epoch, first = epoch + 1, 0

    def to_device(items):
      for step, images, labels, skipped in items:
        yield step, parallel.global_batch(images, mesh), parallel.global_batch(labels, mesh), skipped

    for step, images, labels, skipped in prefetch(to_device(host_batches()), int(self.data_config.prefetch)):
      # Counted as batches are handed over (not as they are prefetched): this process's skips so far.
      self.stats["skipped"] += skipped
      yield step, images, labels

  def _labelled(self, split: str):
    if split not in self.labelled:
      raise ValueError(
        f"{self.train.label} has no labelled {split!r} split for kNN / linear evaluation; set "
        "config.data.eval_name (a labelled tfds dataset) or disable config.knn.networks / "
        "config.probe / config.final_eval."
      )
    return self.labelled[split]

  def labelled_source(self, split: str, count: int = 0) -> sources.TfdsSource:
    """This process's shard of the first `count` (0 = all) examples of a labelled split, in tfds order."""
    source = self._labelled(split)
    if not count:
      return source
    return sources.TfdsSource(
      source.data_config, _first(source.split, count), jax.process_index(), jax.process_count(), builder=source.builder
    )

  def _host_shares(self, split: str, count: int = 0) -> Tuple[Any, List[str], List[int]]:
    """(source, every process's share of the first `count` examples of a labelled split, their sizes)."""
    source = self._labelled(split)
    shares = tfds.even_splits(_first(source.split, count), n=jax.process_count(), drop_remainder=False)
    return source, shares, [sources.split_size(source.builder, s) for s in shares]

  def num_examples(self, split: str) -> int:
    """Examples of a labelled split over all processes (counting each host's even share)."""
    return sum(self._host_shares(split)[2])

  def eval_batches(
    self, split: str, count: int, batch_size: int, mesh, seed: int = 0
  ) -> Iterator[Dict[str, jax.Array]]:
    """Every example of the first `count` (0 = all) of a labelled split once, centre-cropped; tail padded and masked."""
    del seed  # tfds order: the first `count` examples
    source, host_splits, sizes = self._host_shares(split, count)
    pi = jax.process_index()
    local_batch = batch_size // jax.process_count()
    num_batches = -(-max(sizes) // local_batch)
    size, fraction = int(self.data_config.image_size), float(self.data_config.augment.eval_crop_fraction)
    image_key, label_key = source.image_key, source.label_key
    ds = source.builder.as_dataset(
      split=host_splits[pi],
      shuffle_files=False,
      read_config=tfds.ReadConfig(try_autocache=False),
      decoders={image_key: tfds.decode.SkipDecoding()},
    )
    ds = ds.map(
      lambda ex: (host_crops.eval_crop(ex[image_key], size, fraction), tf.cast(ex[label_key], tf.int32)),
      num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=True,
    )
    ds = ds.batch(local_batch).prefetch(tf.data.AUTOTUNE).with_options(_options(self.data_config.host_threads))

    def host_batches():
      it = ds.as_numpy_iterator()
      for _ in range(num_batches):
        images, labels = next(it, (None, None))
        if images is None:
          images, labels = np.zeros((0, size, size, 3), np.uint8), np.zeros((0,), np.int32)
        n = images.shape[0]
        mask = np.arange(local_batch) < n
        pad = local_batch - n
        if pad:
          images = np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])
          labels = np.concatenate([labels, np.zeros((pad,), labels.dtype)])
        yield {
          "images": parallel.global_batch(images, mesh),
          "labels": parallel.global_batch(labels, mesh),
          "mask": parallel.global_batch(mask, mesh),
        }

    yield from prefetch(host_batches(), int(self.data_config.prefetch))


def load(data_config) -> StreamingDataset:
  """The streaming dataset config.data names: a tfds name, or 'folder' (+ config.data.eval_name for labels)."""
  pi, pc = jax.process_index(), jax.process_count()
  labelled: Dict[str, sources.TfdsSource] = {}
  if data_config.name == FOLDER:
    if not data_config.folder:
      raise ValueError("config.data.name='folder' needs config.data.folder: a directory of images or a glob.")
    train = sources.FolderSource(data_config.folder, pi, pc)
    eval_name = data_config.eval_name
  else:
    train = sources.TfdsSource(data_config, data_config.pretrain_split, pi, pc)
    eval_name = data_config.eval_name or data_config.name
  num_classes = 0
  if eval_name:
    eval_config = ml_collections.ConfigDict(data_config.to_dict())
    eval_config.name = eval_name
    builder = train.builder if isinstance(train, sources.TfdsSource) and eval_name == data_config.name else None
    for split, split_name in (("train", data_config.train_split), ("eval", data_config.eval_split)):
      if split_name:
        labelled[split] = sources.TfdsSource(eval_config, split_name, pi, pc, builder=builder)
        builder = labelled[split].builder
    num_classes = max((s.num_classes for s in labelled.values()), default=0)
  logging.info(
    "Streaming input: %s, %d examples per process for pretraining%s.",
    train.label,
    train.num_examples,
    f"; labelled splits {sorted(labelled)} of {eval_name}" if labelled else "",
  )
  return StreamingDataset(data_config, train, labelled, num_classes)
