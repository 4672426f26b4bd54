"""A tiny real tfds dataset (JPEG-encoded, labelled), built offline into a temporary data_dir for input tests."""

import numpy as np
import tensorflow_datasets as tfds

NUM_CLASSES = 4
SIZES = {"train": 96, "test": 40}


class TinyImages(tfds.core.GeneratorBasedBuilder):
  """Random-size RGB images whose pixel mean encodes the example index; label = index % 4."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
      builder=self,
      features=tfds.features.FeaturesDict(
        {
          "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
          "label": tfds.features.ClassLabel(num_classes=NUM_CLASSES),
          "index": np.int64,
        }
      ),
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    return {split: self._generate_examples(split) for split in SIZES}

  def _generate_examples(self, split):
    rng = np.random.default_rng(0 if split == "train" else 1)
    for i in range(SIZES[split]):
      h, w = rng.integers(40, 72, size=2)
      image = np.clip(rng.normal(128, 40, size=(h, w, 3)), 0, 255).astype(np.uint8)
      yield i, {"image": image, "label": i % NUM_CLASSES, "index": i}


def build(data_dir: str) -> TinyImages:
  builder = TinyImages(data_dir=data_dir)
  builder.download_and_prepare()
  return builder
