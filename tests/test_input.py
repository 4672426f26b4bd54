"""Fashion-MNIST reading and the (seed, step) -> batch mapping."""

import gzip
import os

import numpy as np
import pytest

from conftest import requires_fashion_mnist
from simdis_jax import configuration
from simdis_jax.data import fashion_mnist, input as data_input


@requires_fashion_mnist
def test_debian_fashion_mnist_loads_with_the_expected_shapes():
  data = fashion_mnist.load()
  assert data["train_images"].shape == (60000, 28, 28, 1) and data["train_images"].dtype == np.uint8
  assert data["test_images"].shape == (10000, 28, 28, 1)
  assert np.bincount(data["train_labels"]).tolist() == [6000] * 10
  assert np.bincount(data["test_labels"]).tolist() == [1000] * 10


def test_missing_data_says_how_to_get_it(tmp_path):
  with pytest.raises(fashion_mnist.DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
    fashion_mnist.load(str(tmp_path))


def test_idx_reader_on_a_constructed_file(tmp_path):
  path = os.path.join(tmp_path, "x.gz")
  with gzip.open(path, "wb") as f:
    f.write(
      bytes([0, 0, 8, 3]) + (2).to_bytes(4, "big") + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes(range(12))
    )
  np.testing.assert_array_equal(fashion_mnist.read_idx(path), np.arange(12).reshape(2, 2, 3))
  with gzip.open(path, "wb") as f:
    f.write(bytes([0, 0, 8, 1]) + (5).to_bytes(4, "big") + bytes(3))
  with pytest.raises(ValueError, match="truncated"):
    fashion_mnist.read_idx(path)


def test_batches_are_a_function_of_seed_and_step_and_cover_each_epoch_once():
  n, b = 100, 8
  steps_per_epoch = n // b
  epoch0 = np.concatenate([data_input.global_batch_indices(3, k, n, b) for k in range(steps_per_epoch)])
  assert len(set(epoch0.tolist())) == len(epoch0) == steps_per_epoch * b  # no repeats within the epoch
  np.testing.assert_array_equal(data_input.global_batch_indices(3, 5, n, b), epoch0[40:48])
  epoch1 = data_input.global_batch_indices(3, steps_per_epoch, n, b)
  assert not np.array_equal(epoch1, epoch0[:8])  # a fresh permutation each epoch
  assert not np.array_equal(data_input.global_batch_indices(4, 0, n, b), epoch0[:8])


def test_process_slices_are_disjoint_and_cover_the_batch():
  idx = data_input.global_batch_indices(0, 7, 1000, 64)
  parts = [data_input.process_slice(idx, p, 4) for p in range(4)]
  assert all(len(p) == 16 for p in parts)
  np.testing.assert_array_equal(np.concatenate(parts), idx)


def test_an_unprepared_imagenet_is_a_clear_error_saying_how_to_prepare_it():
  from simdis_jax import configuration  # pylint: disable=import-outside-toplevel
  from simdis_jax.data import sources  # pylint: disable=import-outside-toplevel

  data = configuration.base_config().data
  data.data_dir = "/nonexistent/tfds"
  with pytest.raises(sources.DatasetNotFoundError, match="tfds build imagenet2012.*manual_dir"):
    data_input.load_dataset(data)


@requires_fashion_mnist
def test_the_validation_split_is_fixed_disjoint_and_evaluates_where_holdout_says():
  train, validation = fashion_mnist.validation_split(60_000)
  assert (len(train), len(validation)) == (50_000, 10_000)
  assert np.intersect1d(train, validation).size == 0 and np.union1d(train, validation).size == 60_000
  np.testing.assert_array_equal(fashion_mnist.validation_split(60_000)[1], validation)  # the same draw every time
  raw = fashion_mnist.load()
  base = configuration.data_config("fashion_mnist")
  sets = {}
  for holdout in ("none", "validation", "test"):
    base.holdout = holdout
    sets[holdout] = data_input.load_dataset(base)
  assert sets["none"].num_train == 60_000 and sets["validation"].num_train == sets["test"].num_train == 50_000
  np.testing.assert_array_equal(sets["validation"].train_images, raw["train_images"][train])
  np.testing.assert_array_equal(sets["validation"].eval_images, raw["train_images"][validation])
  np.testing.assert_array_equal(sets["validation"].eval_labels, raw["train_labels"][validation])
  np.testing.assert_array_equal(sets["test"].train_labels, sets["validation"].train_labels)
  np.testing.assert_array_equal(sets["test"].eval_images, raw["test_images"])
  np.testing.assert_array_equal(sets["none"].eval_images, raw["test_images"])
  # every class is in the validation split in roughly its share (6,000 of each class in the 60k)
  counts = np.bincount(sets["validation"].eval_labels, minlength=10)
  assert counts.sum() == 10_000 and counts.min() > 900 and counts.max() < 1100
  base.holdout = "later"
  c = configuration.base_config()
  c.data = base
  with pytest.raises(ValueError, match="data.holdout='later'"):
    configuration.check_rules(c, configuration.RULES)
