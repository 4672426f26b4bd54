"""Fashion-MNIST reading and the (seed, step) -> batch mapping."""

import gzip
import os

import numpy as np
import pytest

from conftest import requires_fashion_mnist
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
    f.write(bytes([0, 0, 8, 3]) + (2).to_bytes(4, "big") + (2).to_bytes(4, "big") + (3).to_bytes(4, "big")
            + bytes(range(12)))
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
  from simdis_jax.data import pipeline  # pylint: disable=import-outside-toplevel
  data = configuration.base_config().data
  data.data_dir = "/nonexistent/tfds"
  with pytest.raises(pipeline.DatasetNotFoundError, match="tfds build imagenet2012.*manual_dir"):
    data_input.load_dataset(data)
