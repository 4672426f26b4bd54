"""Where streaming input's records come from: one process's shard of a tfds split (`TfdsSource`) or of a folder of
image files (`FolderSource`), read in an order drawn from (seed, epoch, process), and the tfds builder behind them
(prepared, or an error that says how to get the dataset). How the records become exact, resumable batches is
data/pipeline.py (its docstring tells the whole story).
"""

from typing import List, Optional

import jax
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


class DatasetNotFoundError(FileNotFoundError):
  """The dataset is not on disk; the message says how to get it."""


def _epoch_seed(seed: int, epoch: int, process_index: int) -> int:
  return int(np.random.default_rng([seed, epoch, process_index, 0x5D]).integers(2**31 - 1))


class TfdsSource:
  """One process's shard of a tfds split, read as (encoded image, label) records."""

  def __init__(
    self,
    data_config,
    split: str,
    process_index: int,
    process_count: int,
    builder: Optional[tfds.core.DatasetBuilder] = None,
  ):
    self.builder = builder or get_builder(data_config)
    self.data_config = data_config
    self.image_key, self.label_key = data_config.image_key, data_config.label_key
    self.shuffle_buffer = int(data_config.shuffle_buffer)
    self.split = split
    self.process_index = process_index
    features = self.builder.info.features
    if self.image_key not in features:
      raise ValueError(
        f"config.data.image_key={self.image_key!r} is not a feature of {self.builder.name} "
        f"(features: {sorted(features.keys())})."
      )
    self.has_labels = self.label_key in features
    self.num_classes = int(getattr(features[self.label_key], "num_classes", 0) or 0) if self.has_labels else 0
    # Equal shards (drop_remainder): every host runs the same number of steps per epoch.
    self.host_split = tfds.even_splits(split, n=process_count, drop_remainder=True)[process_index]
    self.num_examples = split_size(self.builder, self.host_split)
    self.label = f"{self.builder.name}:{split}"

  def _read(self, shuffle_seed: Optional[int]) -> tf.data.Dataset:
    read_config = tfds.ReadConfig(
      shuffle_seed=shuffle_seed, try_autocache=False, interleave_cycle_length=16, interleave_block_length=1
    )
    ds = self.builder.as_dataset(
      split=self.host_split,
      shuffle_files=shuffle_seed is not None,
      read_config=read_config,
      decoders={self.image_key: tfds.decode.SkipDecoding()},
    )
    label_key, image_key = self.label_key, self.image_key
    if self.has_labels:
      return ds.map(lambda ex: (ex[image_key], tf.cast(ex[label_key], tf.int32)))
    return ds.map(lambda ex: (ex[image_key], tf.constant(-1, tf.int32)))

  def records(self, seed: int, epoch: int, start: int, shuffle: bool = True) -> tf.data.Dataset:
    """(position, encoded, label) of epoch `epoch` from position `start` on; the order is a function of
    (seed, epoch)."""
    eseed = _epoch_seed(seed, epoch, self.process_index) if shuffle else None
    ds = self._read(eseed)
    if shuffle:
      ds = ds.shuffle(self.shuffle_buffer, seed=eseed, reshuffle_each_iteration=False)
    # Skip before decoding: the skipped records are read, never decoded.
    ds = ds.enumerate().skip(start)
    return ds.map(lambda i, r: (i, r[0], r[1]))

  def describe(self, seed: int, epoch: int, position: int) -> str:
    del seed
    return f"{self.label} example at position {position} of this process's epoch {epoch}"


class FolderSource:
  """One process's shard of a folder (or glob) of unlabelled image files."""

  def __init__(self, pattern: str, process_index: int, process_count: int):
    files = list_image_files(pattern)
    per_process = len(files) // process_count
    if per_process == 0:
      raise ValueError(
        f"config.data.folder={pattern!r} holds {len(files)} image file(s), fewer than the "
        f"{process_count} processes; add images or use fewer hosts."
      )
    # Every P-th file: disjoint shards of equal size (the last < P files are left out).
    self.files = np.asarray(files[process_index::process_count][:per_process])
    self.num_examples = per_process
    self.num_classes = 0
    self.has_labels = False
    self.process_index = process_index
    self.label = pattern

  def order(self, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    if not shuffle:
      return np.arange(self.num_examples)
    return np.random.default_rng([seed, epoch, self.process_index]).permutation(self.num_examples)

  def records(self, seed: int, epoch: int, start: int, shuffle: bool = True) -> tf.data.Dataset:
    """(position, encoded, -1) of epoch `epoch` from `start`; the skip is an index into the permutation."""
    paths = self.files[self.order(seed, epoch, shuffle)][start:]
    ds = tf.data.Dataset.from_tensor_slices((np.arange(start, self.num_examples, dtype=np.int64), paths))
    return ds.map(lambda i, p: (i, tf.io.read_file(p), tf.constant(-1, tf.int32)))

  def describe(self, seed: int, epoch: int, position: int) -> str:
    return str(self.files[self.order(seed, epoch)[position]])


def list_image_files(pattern: str) -> List[str]:
  """Sorted image files of a directory tree (recursively) or a glob; local paths or gs://."""
  if any(ch in pattern for ch in "*?["):
    files = tf.io.gfile.glob(pattern)
  elif tf.io.gfile.isdir(pattern):
    files = [tf.io.gfile.join(root, name) for root, _, names in tf.io.gfile.walk(pattern) for name in names]
  else:
    raise DatasetNotFoundError(
      f"config.data.folder={pattern!r} is neither a directory nor a glob pattern "
      "that exists; point it at a folder of images or a pattern like '/data/*/*.jpg'."
    )
  files = sorted(f for f in files if f.lower().endswith(IMAGE_EXTENSIONS))
  if not files:
    raise DatasetNotFoundError(
      f"config.data.folder={pattern!r} holds no image files ({', '.join(IMAGE_EXTENSIONS)})"
      "; point it at a folder of images."
    )
  return files


def get_builder(data_config) -> tfds.core.DatasetBuilder:
  """The tfds builder of config.data.name, prepared (ImageNet from its manual directory), or a clear error."""
  kwargs = {"data_dir": data_config.data_dir} if data_config.data_dir else {}
  try:
    builder = tfds.builder(data_config.name, **kwargs)
  except tfds.core.registered.DatasetNotFoundError as e:
    hint = " ".join(line.strip() for line in str(e).splitlines() if "did you mean" in line.lower())
    raise DatasetNotFoundError(
      f"config.data.name={data_config.name!r} is not a tfds dataset. {hint} Use a tfds "
      "name (imagenet2012, imagenette, stl10, cifar10, ...; `tfds.list_builders()` lists "
      "them), 'fashion_mnist', or 'folder' with config.data.folder."
    ) from e
  if _is_prepared(builder):
    return builder
  if data_config.manual_dir or data_config.allow_download:
    if jax.process_index() == 0:
      config = tfds.download.DownloadConfig(manual_dir=data_config.manual_dir or None)
      builder.download_and_prepare(download_config=config)
    _barrier(f"prepare {data_config.name}")
    return tfds.builder(data_config.name, **kwargs)
  raise DatasetNotFoundError(
    f"The tfds dataset {data_config.name!r} is not prepared in {builder.data_dir_root}. Prepare it once with\n"
    f"    tfds build {data_config.name} --data_dir <dir> [--manual_dir <dir with the downloaded archives>]\n"
    f"and pass --config.data.data_dir=<dir>; ImageNet needs its archives (ILSVRC2012_img_train.tar, "
    f"ILSVRC2012_img_val.tar) in the manual directory (--config.data.manual_dir=<dir> prepares it on the "
    f"first run). On a machine with internet access --config.data.allow_download=True downloads public ones."
  )


def _is_prepared(builder) -> bool:
  if builder.is_prepared():
    return True
  # Readable without being prepared here: tfds.testing.mock_data (tests) patches reading, not is_prepared.
  try:
    builder.as_dataset(split="train")
    return True
  except Exception:  # pylint: disable=broad-except
    return False


def _barrier(name: str) -> None:
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel

    multihost_utils.sync_global_devices(name)


def split_size(builder, split: str) -> int:
  """Examples in `split` (any tfds split expression): from the dataset info, else by the dataset's cardinality."""
  try:
    return int(builder.info.splits[split].num_examples)
  except (KeyError, ValueError, TypeError, AssertionError):
    ds = builder.as_dataset(
      split=split,
      decoders={
        k: tfds.decode.SkipDecoding()
        for k in builder.info.features.keys()
        if isinstance(builder.info.features[k], tfds.features.Image)
      },
    )
    n = int(ds.cardinality())
    if n < 0:
      n = int(ds.reduce(0, lambda c, _: c + 1))
    return n
