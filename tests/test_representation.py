"""Tests for trainer/evaluation/representation.py: linear probe, cluster accuracy, k-means scores."""

import numpy as np
import pytest

from trainer.evaluation import representation


def _gaussian_clusters(num_per_class, num_classes=3, dimensions=5, spread=0.1, seed=0):
  """Well-separated clusters: class c is centred on 10 * (unit vector c)."""
  rng = np.random.default_rng(seed)
  centres = 10.0 * np.eye(num_classes, dimensions)
  labels = np.repeat(np.arange(num_classes), num_per_class)
  features = centres[labels] + spread * rng.normal(size=(len(labels), dimensions))
  order = rng.permutation(len(labels))
  return features[order], labels[order]


def test_probe_separable_clusters_is_perfect():
  train_features, train_labels = _gaussian_clusters(100, seed=0)
  test_features, test_labels = _gaussian_clusters(50, seed=1)
  accuracy = representation.linear_probe_accuracy(
      train_features, train_labels, test_features, test_labels)
  assert accuracy == pytest.approx(1.0)


def test_probe_random_labels_is_chance():
  rng = np.random.default_rng(0)
  train_features = rng.normal(size=(2000, 20))
  test_features = rng.normal(size=(2000, 20))
  train_labels = rng.integers(0, 4, size=2000)
  test_labels = rng.integers(0, 4, size=2000)
  accuracy = representation.linear_probe_accuracy(
      train_features, train_labels, test_features, test_labels)
  assert accuracy == pytest.approx(0.25, abs=0.05)


def test_probe_constant_columns_are_finite():
  train_features, train_labels = _gaussian_clusters(100, seed=0)
  test_features, test_labels = _gaussian_clusters(50, seed=1)
  # Dead ReLU units: all-zero and constant columns, zero variance in training.
  train_features = np.concatenate(
      [train_features, np.zeros((len(train_features), 3)), np.full((len(train_features), 1), 7.0)],
      axis=1)
  test_features = np.concatenate(
      [test_features, np.zeros((len(test_features), 3)), np.full((len(test_features), 1), 7.0)],
      axis=1)
  accuracy = representation.linear_probe_accuracy(
      train_features, train_labels, test_features, test_labels)
  assert np.isfinite(accuracy)
  assert accuracy == pytest.approx(1.0)


def test_probe_all_constant_features_is_finite():
  labels = np.tile(np.arange(2), 50)
  features = np.zeros((100, 4), dtype=np.float32)
  accuracy = representation.linear_probe_accuracy(features, labels, features, labels)
  assert accuracy == pytest.approx(0.5)


def test_probe_flattens_images():
  rng = np.random.default_rng(0)
  labels = np.tile(np.arange(2), 50)
  images = rng.uniform(size=(100, 4, 4, 1)).astype(np.float32)
  images[:, 0, 0, 0] += 5.0 * labels  # One pixel gives the class away.
  accuracy = representation.linear_probe_accuracy(images, labels, images, labels)
  assert accuracy == pytest.approx(1.0)


def test_probe_is_deterministic():
  rng = np.random.default_rng(0)
  features = rng.normal(size=(300, 8))
  labels = rng.integers(0, 3, size=300)
  first = representation.linear_probe_accuracy(features[:200], labels[:200],
                                               features[200:], labels[200:], seed=3)
  second = representation.linear_probe_accuracy(features[:200], labels[:200],
                                                features[200:], labels[200:], seed=3)
  assert first == second


@pytest.mark.parametrize("train_length,train_label_length,test_length,test_label_length,names", [
    (10, 9, 5, 5, ("train_features has 10", "train_labels has 9")),
    (10, 10, 5, 6, ("test_features has 5", "test_labels has 6")),
])
def test_probe_mismatched_lengths_raise(train_length, train_label_length, test_length,
                                        test_label_length, names):
  with pytest.raises(ValueError) as error:
    representation.linear_probe_accuracy(
        np.zeros((train_length, 3)), np.arange(train_label_length) % 2,
        np.zeros((test_length, 3)), np.arange(test_label_length) % 2)
  for name in names:
    assert name in str(error.value)


def test_probe_mismatched_widths_raise():
  with pytest.raises(ValueError, match="3 features .* 4"):
    representation.linear_probe_accuracy(np.zeros((10, 3)), np.arange(10) % 2,
                                         np.zeros((10, 4)), np.arange(10) % 2)


def test_probe_one_class_raises():
  with pytest.raises(ValueError, match="at least 2"):
    representation.linear_probe_accuracy(np.zeros((10, 3)), np.zeros(10),
                                         np.zeros((10, 3)), np.zeros(10))


def test_probe_one_dimensional_features_raise():
  with pytest.raises(ValueError, match=r"\[N, 1\]"):
    representation.linear_probe_accuracy(np.zeros(10), np.arange(10) % 2,
                                         np.zeros(10), np.arange(10) % 2)


def test_probe_non_finite_features_raise():
  features = np.zeros((10, 3))
  features[0, 0] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    representation.linear_probe_accuracy(features, np.arange(10) % 2,
                                         np.zeros((10, 3)), np.arange(10) % 2)


def test_cluster_accuracy_permuted_labels_is_perfect():
  labels = np.array([0, 0, 1, 1, 2, 2, 3])
  assignments = np.array([2, 2, 3, 3, 0, 0, 1])
  assert representation.cluster_accuracy(labels, assignments) == 1.0


def test_cluster_accuracy_arbitrary_ids_is_perfect():
  labels = np.array([7, 7, -1, -1, 3])
  assignments = np.array([10, 10, 42, 42, 5])
  assert representation.cluster_accuracy(labels, assignments) == 1.0


def test_cluster_accuracy_hand_computed():
  # Cluster 0 holds labels {0, 0, 1}, cluster 1 holds {1, 1, 0}, cluster 2 holds {2, 1}.
  labels = np.array([0, 0, 1, 1, 1, 0, 2, 1])
  assignments = np.array([0, 0, 0, 1, 1, 1, 2, 2])
  # Best matching: 0->0 (2 right), 1->1 (2 right), 2->2 (1 right): 5 of 8.
  assert representation.cluster_accuracy(labels, assignments) == pytest.approx(5 / 8)


def test_cluster_accuracy_is_one_to_one():
  # All in one cluster: only one label can be matched, even with two clusters' worth.
  labels = np.array([0, 0, 0, 1, 1])
  assignments = np.zeros(5, dtype=int)
  assert representation.cluster_accuracy(labels, assignments) == pytest.approx(3 / 5)
  # More clusters than labels: the extra cluster counts as wrong.
  labels = np.array([0, 0, 1, 1])
  assignments = np.array([0, 1, 2, 2])
  assert representation.cluster_accuracy(labels, assignments) == pytest.approx(3 / 4)


def test_cluster_accuracy_mismatched_lengths_raise():
  with pytest.raises(ValueError, match="labels has 3.*assignments has 2"):
    representation.cluster_accuracy(np.zeros(3), np.zeros(2))


def test_kmeans_separable_clusters_are_perfect():
  features, labels = _gaussian_clusters(100, num_classes=3)
  scores = representation.kmeans_scores(features, labels, num_clusters=3)
  assert set(scores) == {"accuracy", "nmi"}
  assert scores["accuracy"] == pytest.approx(1.0)
  assert scores["nmi"] == pytest.approx(1.0)


def test_kmeans_noise_has_low_nmi():
  rng = np.random.default_rng(0)
  features = rng.normal(size=(1000, 5))
  labels = rng.integers(0, 3, size=1000)
  scores = representation.kmeans_scores(features, labels, num_clusters=3)
  assert scores["nmi"] < 0.05
  assert scores["accuracy"] < 0.45


def test_kmeans_constant_columns_are_finite():
  features, labels = _gaussian_clusters(100, num_classes=3)
  features = np.concatenate([features, np.zeros((len(features), 4))], axis=1)
  scores = representation.kmeans_scores(features, labels, num_clusters=3)
  assert all(np.isfinite(value) for value in scores.values())
  assert scores["accuracy"] == pytest.approx(1.0)


def test_kmeans_is_deterministic_given_seed():
  rng = np.random.default_rng(0)
  features = rng.normal(size=(300, 4))
  labels = rng.integers(0, 3, size=300)
  first = representation.kmeans_scores(features, labels, num_clusters=3, seed=5)
  second = representation.kmeans_scores(features, labels, num_clusters=3, seed=5)
  assert first == second


def test_kmeans_mismatched_lengths_raise():
  with pytest.raises(ValueError, match="features has 10.*labels has 9"):
    representation.kmeans_scores(np.zeros((10, 3)), np.zeros(9), num_clusters=2)


def test_kmeans_too_many_clusters_raise():
  with pytest.raises(ValueError, match="num_clusters=11"):
    representation.kmeans_scores(np.zeros((10, 3)), np.zeros(10), num_clusters=11)
