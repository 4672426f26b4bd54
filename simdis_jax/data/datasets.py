"""The datasets a run can name (`config.data.name`): one table, `DATASETS`, of those held in memory.

A `Dataset` row holds what the code knows about a dataset: its loader, channels, classes, normalisation,
its augmentation preset, and its raw-pixel references with the command that measured them. A name not
in the table is streamed (any tfds dataset, or 'folder': data/pipeline.py) as `STREAMED` describes it.
Pure data: nothing here imports JAX, so the configuration schema reads it without importing JAX.
"""

from types import ModuleType
from typing import Mapping, NamedTuple, Optional, Tuple

import ml_collections

from simdis_jax.data import fashion_mnist

# The command that measures a dataset's raw-pixel references (evaluation/raw_pixels.py), per holdout split.
RAW_PIXELS_COMMAND = "python -m simdis_jax.evaluation.raw_pixels --holdout {holdout}"


class Dataset(NamedTuple):
  """One dataset's facts."""

  title: str  # its name in prose
  channels: int  # of the images as the networks see them
  mean: Tuple[float, ...]  # per-channel statistics of the pixels scaled to [0, 1]
  std: Tuple[float, ...]
  # In memory: the data/ module whose load(data_dir, allow_download) gives the train / test arrays and
  # validation_split(num_train) the fixed validation split; None = streamed (tfds, folder).
  loader: Optional[ModuleType] = None
  image_size: int = 0  # in memory: the images' own side (the device crops them); 0 = streamed
  num_classes: int = 0  # 0 = config.probe.num_classes / tfds's metadata
  class_names: Tuple[str, ...] = ()  # in label order; () = the figures show class indices
  crop_scale: Tuple[float, float] = (0.08, 1.0)  # its augmentation preset's RandomResizedCrop scale
  # config.data.holdout -> raw-pixel top-1 (%): weighted cosine kNN (k=20, T=0.07) and the fast linear
  # evaluation on the normalised pixels, measured by RAW_PIXELS_COMMAND (archived in
  # results/fashion_mnist_v3/references/raw_pixels_<holdout>.json).
  raw_pixels: Mapping[str, Mapping[str, float]] = {}


# A streamed dataset (tfds, folder): RGB, normalised by ImageNet's statistics.
STREAMED = Dataset("a streamed dataset", 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

DATASETS = {
  "fashion_mnist": Dataset(
    "Fashion-MNIST",
    1,
    (0.2860,),
    (0.3530,),
    loader=fashion_mnist,
    image_size=28,
    num_classes=fashion_mnist.NUM_CLASSES,
    class_names=(
      "T-shirt/top",
      "Trouser",
      "Pullover",
      "Dress",
      "Coat",
      "Sandal",
      "Shirt",
      "Sneaker",
      "Bag",
      "Ankle boot",
    ),
    crop_scale=(0.2, 1.0),  # 8% of 28×28 is an 8-pixel patch: too little of a garment
    raw_pixels={
      "none": {"knn": 85.69, "linear": 83.1},
      "validation": {"knn": 86.2, "linear": 84.34},
      "test": {"knn": 85.29, "linear": 83.0},
    },
  ),
}


def get(name: str) -> Dataset:
  """The row of config.data.name: its own if held in memory, else STREAMED's."""
  return DATASETS.get(name, STREAMED)


def in_memory(name: str) -> bool:
  """Whether config.data.name is a dataset held in memory (the device does every augmentation, crop included)."""
  return get(name).loader is not None


def augment_config(num_channels: int = 3) -> ml_collections.ConfigDict:
  """BYOL's augmentations (docs/spec.md), with the mean/std of C channels: ImageNet's for 3, Fashion-MNIST's for 1."""
  if num_channels not in (1, 3):
    raise ValueError(f'num_channels must be 1 or 3, got {num_channels}')
  config = ml_collections.ConfigDict()
  config.crop = True
  config.crop_scale = (0.08, 1.0)
  config.crop_ratio = (3 / 4, 4 / 3)
  config.flip = True
  config.jitter_prob = 0.8
  config.brightness = 0.4
  config.contrast = 0.4
  config.saturation = 0.2
  config.hue = 0.1
  config.grey_prob = 0.2
  # Per-view (view 0, view 1): BYOL's asymmetric blur / solarize (docs/spec.md).
  config.blur_prob = (1.0, 0.1)
  config.blur_sigma = (0.1, 2.0)
  config.blur_kernel_fraction = 0.1
  config.solarize_prob = (0.0, 0.2)
  # 1.0 keeps the whole image; ImageNet evaluation uses 224 / 256 = 0.875.
  config.eval_crop_fraction = 1.0
  normalisation = STREAMED if num_channels == 3 else DATASETS["fashion_mnist"]
  config.mean = normalisation.mean
  config.std = normalisation.std
  return config


def augment_preset(name: str) -> ml_collections.ConfigDict:
  """The augmentation section of a dataset's presets: BYOL's, with its channels, normalisation and crop scale."""
  dataset = get(name)
  config = augment_config(dataset.channels)
  config.mean, config.std = dataset.mean, dataset.std
  config.crop_scale = dataset.crop_scale
  return config
