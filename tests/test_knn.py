"""The weighted cosine kNN classifier."""

import numpy as np
import pytest

from simdis_jax.evaluation import knn


def test_knn_on_a_constructed_case_matches_the_hand_computation():
  bank = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]], np.float32)
  labels = np.array([0, 1, 1, 2])
  query = np.array([[2.0, 0.2]], np.float32)
  pred, scores = knn.knn_classify(bank, labels, query, k=2, temperature=0.5, num_classes=3)
  q = query[0] / np.linalg.norm(query[0])
  sims = bank @ q  # bank rows are unit vectors
  # Top-2 are examples 0 (class 0) and 1 (class 1).
  expected = np.array([np.exp(sims[0] / 0.5), np.exp(sims[1] / 0.5), 0.0])
  np.testing.assert_allclose(scores[0], expected, rtol=1e-5)
  assert pred.tolist() == [0]
  # With k=3 the two class-1 neighbours outvote class 0.
  pred, _ = knn.knn_classify(bank, labels, query, k=3, temperature=10.0, num_classes=3)
  assert pred.tolist() == [1]


def test_k_larger_than_the_bank_is_a_clear_error():
  with pytest.raises(ValueError, match=r"k=5 needs at least k memory-bank examples.*holds 4"):
    knn.knn_classify(np.eye(4, dtype=np.float32), np.arange(4), np.eye(4, dtype=np.float32), k=5)


def test_separable_clusters_are_classified_perfectly():
  rng = np.random.default_rng(0)
  centres = np.eye(5, 16, dtype=np.float32) * 5
  labels = rng.integers(0, 5, 500)
  bank = centres[labels] + rng.normal(size=(500, 16)).astype(np.float32) * 0.3
  q_labels = rng.integers(0, 5, 200)
  queries = centres[q_labels] + rng.normal(size=(200, 16)).astype(np.float32) * 0.3
  pred, _ = knn.knn_classify(bank, labels, queries, k=20, temperature=0.07, chunk=64)
  assert np.mean(pred == q_labels) == 1.0
