"""The dataset table (data/datasets.py): its facts, its raw-pixel references against their archived measurements."""

import json
import os

import pytest

from simdis_jax import configuration, runs
from simdis_jax.data import augment, datasets, fashion_mnist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCES = os.path.join(ROOT, "results", "fashion_mnist_v3", "references")


@pytest.mark.parametrize("holdout", ["none", "validation", "test"])
def test_the_raw_pixel_references_are_the_archived_measurements_of_their_command(holdout):
  with open(os.path.join(REFERENCES, f"raw_pixels_{holdout}.json"), encoding="utf-8") as f:
    record = json.load(f)
  assert datasets.DATASETS["fashion_mnist"].raw_pixels[holdout] == {
    "knn": record["knn_top1/k20"],
    "linear": record["linear_top1"],
  }
  assert record["command"].startswith(datasets.RAW_PIXELS_COMMAND.format(holdout=holdout) + " --out ")


def test_a_dataset_is_its_row_and_any_other_name_is_streamed():
  fmnist = datasets.get("fashion_mnist")
  assert (fmnist.channels, fmnist.image_size, fmnist.num_classes, fmnist.loader) == (1, 28, 10, fashion_mnist)
  assert len(fmnist.class_names) == 10 and fmnist.class_names[9] == "Ankle boot"
  assert datasets.get("imagenet2012") is datasets.get("folder") is datasets.STREAMED
  assert (datasets.in_memory("fashion_mnist"), datasets.in_memory("imagenet2012")) == (True, False)
  assert (runs.image_channels("fashion_mnist"), runs.image_channels("stl10")) == (1, 3)


def test_the_augmentation_sections_are_the_ones_written_before_the_table():
  assert augment.default_config is datasets.augment_config
  grey, rgb = datasets.augment_config(1), datasets.augment_config(3)
  assert (tuple(grey.mean), tuple(grey.std)) == ((0.2860,), (0.3530,))
  assert (tuple(rgb.mean), tuple(rgb.std)) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
  preset = configuration.fashion_mnist_augment()
  assert preset.to_dict() == {**grey.to_dict(), "crop_scale": (0.2, 1.0)}
  assert list(preset.keys()) == list(grey.keys())
  with pytest.raises(ValueError, match="num_channels must be 1 or 3, got 2"):
    datasets.augment_config(2)
