"""What a learned representation is worth: a linear probe and k-means clustering.

The evaluator calls these on frozen encoder outputs ([N, latent_dim], what the
`encoder` sub-model returns) and, for comparison, on raw pixels ([N, 784]):

- `linear_probe_accuracy`: test accuracy of a multinomial logistic regression
  fitted on standardised training features (how linearly separable the classes
  are in the representation).
- `kmeans_scores`: k-means without labels, scored against the labels by
  `cluster_accuracy` (best one-to-one cluster-to-label matching) and by
  normalised mutual information.

For scale on MNIST: k-means on pixels gives about 53% accuracy / 0.50 NMI, on an
autoencoder's 10-d code about 88% / 0.81.

Features may be of any width. Arrays of rank above 2 (e.g. images
[N, 28, 28, 1]) are flattened to [N, -1]; rank 0 or 1 is rejected, since a 1-D
array is ambiguous (N examples of one feature, or one example). Features must be
finite. Labels must be 1-D, one per example. Randomness comes only from the
explicit `seed` arguments, never from global RNG state. Nothing subsamples: the
caller picks how many examples to pass (e.g. 10,000 training examples for the
probe).
"""

import time

from absl import logging
import numpy as np
from scipy import optimize
from sklearn import cluster
from sklearn import linear_model
from sklearn import metrics
from sklearn import preprocessing
import threadpoolctl


# L-BFGS iteration cap for the probe. Measured on MNIST with C=1: standardised
# pixels converge (to scikit-learn's default tolerance) in 130-145 iterations with
# 10,000 training examples and about 180 with 60,000; 64-d codes in 40-60. The
# default cap of 100 stops short on pixels (a ConvergenceWarning, 88.5% instead
# of 88.6%), so the cap is raised with a wide margin rather than the warning
# silenced: if it still fires, the features are unusual and worth a look.
_PROBE_MAX_ITERATIONS = 1000
# BLAS threads while fitting the probe. Its products are thin ([N, width] x
# [width, num_classes]), so extra BLAS threads barely help on an idle machine,
# and on busy cores OpenBLAS's spinning threads are ruinous: on 2 shared cores,
# 10,000 x 784 pixels took 58 s with 2 BLAS threads and 2.5 s with 1 (64-d
# features: 5.6 s vs 0.3 s). scikit-learn's own OpenMP threads are left as is.
_PROBE_BLAS_THREADS = 1
# k-means restarts from different k-means++ seeds; the best inertia is kept.
_KMEANS_INITIALISATIONS = 4


def _as_features(features: np.ndarray, name: str) -> np.ndarray:
  """Returns finite float features [N, width], flattening rank > 2 input."""
  features = np.asarray(features)
  if features.ndim < 2:
    raise ValueError(
        f"{name} must be [num_examples, ...] with at least 2 dimensions, got shape "
        f"{features.shape}; reshape a single feature to [N, 1].")
  if features.ndim > 2:
    features = features.reshape(features.shape[0], -1)
  if features.shape[0] == 0 or features.shape[1] == 0:
    raise ValueError(f"{name} is empty (shape {features.shape}).")
  if not np.issubdtype(features.dtype, np.floating):
    features = features.astype(np.float32)
  if not np.all(np.isfinite(features)):
    raise ValueError(f"{name} contains NaN or infinite values.")
  return features


def _as_labels(labels: np.ndarray, name: str) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f"{name} must be 1-D [num_examples], got shape {labels.shape}.")
  return labels


def _check_same_length(first: np.ndarray, first_name: str, second: np.ndarray,
                       second_name: str) -> None:
  if len(first) != len(second):
    raise ValueError(
        f"{first_name} has {len(first)} examples but {second_name} has "
        f"{len(second)}; they must have one row per example.")


def linear_probe_accuracy(train_features: np.ndarray, train_labels: np.ndarray,
                          test_features: np.ndarray, test_labels: np.ndarray,
                          seed: int = 0) -> float:
  """Multinomial logistic regression on standardised features (fitted on train), accuracy on test.

  Each feature is standardised with the training mean and standard deviation;
  constant features (e.g. dead ReLU units) have zero variance and are left at
  zero rather than divided by zero. The classifier is scikit-learn's L2-
  regularised (C=1) logistic regression with the L-BFGS solver, at most
  `_PROBE_MAX_ITERATIONS` iterations (several times what MNIST pixels need;
  scikit-learn's ConvergenceWarning is left to surface if it is ever hit), with
  BLAS limited to one thread (see `_PROBE_BLAS_THREADS`).

  Args:
    train_features: [num_train, ...] features to fit on.
    train_labels: [num_train] integer (or any comparable) class labels; at least
      two distinct classes.
    test_features: [num_test, ...] features of the same width as the training ones.
    test_labels: [num_test] class labels.
    seed: seed for the classifier (L-BFGS itself is deterministic; kept explicit
      so a change of solver stays reproducible).

  Returns:
    The fraction of test examples classified correctly, in [0, 1].

  Raises:
    ValueError: on mismatched lengths or widths, fewer than two training classes,
      non-finite features, or features of rank below 2.
  """
  train_features = _as_features(train_features, "train_features")
  test_features = _as_features(test_features, "test_features")
  train_labels = _as_labels(train_labels, "train_labels")
  test_labels = _as_labels(test_labels, "test_labels")
  _check_same_length(train_features, "train_features", train_labels, "train_labels")
  _check_same_length(test_features, "test_features", test_labels, "test_labels")
  if train_features.shape[1] != test_features.shape[1]:
    raise ValueError(
        f"train_features have {train_features.shape[1]} features per example but "
        f"test_features have {test_features.shape[1]}.")
  num_classes = len(np.unique(train_labels))
  if num_classes < 2:
    raise ValueError(
        f"train_labels have {num_classes} distinct class(es); a probe needs at least 2.")

  start = time.perf_counter()
  scaler = preprocessing.StandardScaler().fit(train_features)
  classifier = linear_model.LogisticRegression(
      solver="lbfgs", max_iter=_PROBE_MAX_ITERATIONS, random_state=seed)
  with threadpoolctl.threadpool_limits(limits=_PROBE_BLAS_THREADS, user_api="blas"):
    classifier.fit(scaler.transform(train_features), train_labels)
    predictions = classifier.predict(scaler.transform(test_features))
  accuracy = float(np.mean(predictions == test_labels))
  iterations = int(np.max(classifier.n_iter_))
  logging.info(
      "Linear probe: %d train x %d features, %d classes, %d iterations, %.1f s, "
      "test accuracy %.4f.", train_features.shape[0], train_features.shape[1],
      num_classes, iterations, time.perf_counter() - start, accuracy)
  return accuracy


def cluster_accuracy(labels: np.ndarray, assignments: np.ndarray) -> float:
  """Accuracy under the best one-to-one cluster-to-label matching (the Hungarian method).

  Labels and cluster ids may be any values (they need not be 0..k-1), and the
  numbers of clusters and of labels may differ: with more clusters than labels,
  the unmatched clusters count as wrong.

  Args:
    labels: [N] true class labels.
    assignments: [N] cluster ids.

  Returns:
    The largest fraction of examples that any one-to-one mapping from clusters
    to labels gets right, in [0, 1].

  Raises:
    ValueError: if the two arrays are not 1-D, of equal length, and non-empty.
  """
  labels = _as_labels(labels, "labels")
  assignments = _as_labels(assignments, "assignments")
  _check_same_length(labels, "labels", assignments, "assignments")
  if len(labels) == 0:
    raise ValueError("labels and assignments are empty.")
  _, label_indices = np.unique(labels, return_inverse=True)
  _, cluster_indices = np.unique(assignments, return_inverse=True)
  # counts[c, l]: examples in cluster c with label l.
  counts = np.zeros((cluster_indices.max() + 1, label_indices.max() + 1), dtype=np.int64)
  np.add.at(counts, (cluster_indices, label_indices), 1)
  cluster_rows, label_columns = optimize.linear_sum_assignment(counts, maximize=True)
  return float(counts[cluster_rows, label_columns].sum() / len(labels))


def kmeans_scores(features: np.ndarray, labels: np.ndarray, num_clusters: int = 10,
                  seed: int = 0) -> dict[str, float]:
  """k-means clustering scored against the labels: {"accuracy": ..., "nmi": ...}.

  "accuracy" is `cluster_accuracy`, "nmi" scikit-learn's normalized_mutual_info_score.

  The features are clustered as given (not standardised: k-means on the raw
  representation is the usual benchmark, and standardising would inflate the
  weight of near-constant pixels). Lloyd's algorithm from
  `_KMEANS_INITIALISATIONS` k-means++ initialisations, keeping the lowest inertia.

  Args:
    features: [N, ...] features to cluster.
    labels: [N] true class labels, used only for scoring.
    num_clusters: k, usually the number of classes.
    seed: seed of the k-means++ initialisations.

  Returns:
    {"accuracy": `cluster_accuracy` of the clusters, "nmi": normalised mutual
    information (arithmetic mean normalisation) between labels and clusters}.

  Raises:
    ValueError: on mismatched lengths, num_clusters outside [1, N], non-finite
      features, or features of rank below 2.
  """
  features = _as_features(features, "features")
  labels = _as_labels(labels, "labels")
  _check_same_length(features, "features", labels, "labels")
  if not 1 <= num_clusters <= len(features):
    raise ValueError(
        f"num_clusters={num_clusters} must be between 1 and the number of examples "
        f"({len(features)}).")
  start = time.perf_counter()
  kmeans = cluster.KMeans(n_clusters=num_clusters, n_init=_KMEANS_INITIALISATIONS,
                          random_state=seed)
  assignments = kmeans.fit_predict(features)
  scores = {
      "accuracy": cluster_accuracy(labels, assignments),
      "nmi": float(metrics.normalized_mutual_info_score(labels, assignments)),
  }
  logging.info("k-means: %d x %d features, k=%d, %.1f s, accuracy %.4f, NMI %.4f.",
               features.shape[0], features.shape[1], num_clusters,
               time.perf_counter() - start, scores["accuracy"], scores["nmi"])
  return scores
