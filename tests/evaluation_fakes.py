"""Stand-ins for the evaluation's registry (trainer/evaluation/registry.py) in its tests.

They follow the real baselines', tuning's and representation's API exactly
and are cheap and deterministic: `noisy` returns its input, `median` is a 3x3
median filter, and `bm3d` (slow, as in the real module) a box filter whose
size is tuned. `registry()` hands them to the evaluation.
"""

import dataclasses
import os
import subprocess
import sys

import numpy as np

from configs import evaluate as evaluate_config
from input_pipeline import data_source

from trainer.evaluation import registry as registry_lib

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BASELINE_NAMES = ("noisy", "median", "bm3d")
SLOW_BASELINES = ("bm3d",)


def _psnr(clean, denoised):
  mse = np.mean((clean.astype(np.float64) - denoised) ** 2, axis=(1, 2, 3))
  return float(np.mean(10 * np.log10(1 / np.maximum(mse, 1e-10))))


def _filter(images, size, reduce):
  pad = size // 2
  padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
  height, width = images.shape[1:3]
  windows = [padded[:, i:i + height, j:j + width] for i in range(size) for j in range(size)]
  return reduce(np.stack(windows), axis=0).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class TunedBaseline:
  name: str
  params: dict
  tuning_psnr_db: float

  def denoise(self, noisy: np.ndarray) -> np.ndarray:
    if self.name == "noisy":
      return noisy.copy()
    reduce = np.median if self.name == "median" else np.mean
    return _filter(noisy, self.params["size"], reduce)


def tune_baseline(name, noisy_tune, clean_tune, fit_noisy=None, fit_clean=None):
  del fit_noisy, fit_clean  # Only the real Wiener filter is fitted.
  sizes = {"noisy": (None,), "median": (3,), "bm3d": (3, 5)}[name]
  candidates = [TunedBaseline(name, {"size": size} if size else {}, 0.0) for size in sizes]
  scored = [(_psnr(clean_tune, candidate.denoise(noisy_tune)), candidate)
            for candidate in candidates]
  psnr, best = max(scored, key=lambda pair: pair[0])
  return dataclasses.replace(best, tuning_psnr_db=psnr)


def linear_probe_accuracy(train_features, train_labels, test_features, test_labels, seed=0):
  """Nearest class mean, standing in for a logistic regression."""
  del seed
  classes = np.unique(train_labels)
  means = np.stack([train_features[train_labels == label].mean(axis=0) for label in classes])
  distances = ((test_features[:, None, :] - means[None]) ** 2).sum(axis=-1)
  return float(np.mean(classes[np.argmin(distances, axis=1)] == test_labels))


def kmeans_scores(features, labels, num_clusters=10, seed=0):
  """One assignment to seeded random centres, standing in for k-means."""
  rng = np.random.default_rng(seed)
  centres = features[rng.choice(len(features), min(num_clusters, len(features)), replace=False)]
  clusters = np.argmin(((features[:, None, :] - centres[None]) ** 2).sum(axis=-1), axis=1)
  correct = sum(np.bincount(labels[clusters == cluster]).max()
                for cluster in np.unique(clusters))
  return {"accuracy": float(correct / len(labels)), "nmi": float(correct / len(labels) / 2)}


def registry() -> registry_lib.Registry:
  """A registry of these stand-ins, to hand to `runner.evaluate_and_report`."""
  return registry_lib.Registry(
      baseline_names=BASELINE_NAMES, slow_baselines=SLOW_BASELINES, tune_baseline=tune_baseline,
      baseline_sources=(__file__,), linear_probe_accuracy=linear_probe_accuracy,
      kmeans_scores=kmeans_scores, representation_sources=(__file__,))


def save_signatures(path: str, denoise, encode, denoised_key: str = "denoised",
                    latent_key: str = "latent") -> str:
  """A SavedModel (no trainer.main export) whose signatures compute `denoise` and `encode`.

  For the models the evaluation must refuse: outputs under another key, NaN or infinity.
  """
  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  from trainer import export

  spec = tf.TensorSpec([None, 28, 28, 1], tf.float32, name="images")
  module = tf.Module()
  module.denoise = tf.function(lambda images: {denoised_key: denoise(images)},
                               input_signature=[spec])
  module.encode = tf.function(lambda images: {latent_key: encode(images)},
                              input_signature=[spec])
  tf.saved_model.save(module, path, signatures={
      export.SERVING_ENDPOINT: module.denoise.get_concrete_function(),
      export.ENCODE_ENDPOINT: module.encode.get_concrete_function()})
  return path


def assert_python_runs(code: str) -> None:
  """Runs `code` in a fresh Python at the repository's root; fails with its stderr if it fails.

  For what must hold in a process of its own (e.g. which modules a step imports).
  """
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=_REPO_ROOT)
  assert result.returncode == 0, result.stderr[-2000:]


# The small evaluation's test images, and the subset the slow baseline (bm3d) scores.
NUM_EXAMPLES = 24
SLOW_SUBSET = 10


def small_config(cache_dir=None, num_workers=1):
  """Four levels on 24 images; the baseline cache in `cache_dir` (off without one)."""
  config = evaluate_config.get_config()
  config.num_workers = num_workers
  config.use_cache = cache_dir is not None
  config.cache_dir = str(cache_dir or "")
  config.num_examples = NUM_EXAMPLES
  config.levels.gaussian = (0.2, 0.4)
  config.levels.salt_and_pepper = (0.1,)
  config.levels.masking = (0.25,)
  config.baselines = ("noisy", "median", "bm3d")
  config.slow_baseline_max_images = SLOW_SUBSET
  config.tuning_examples = 16
  config.wiener_fit_examples = 16
  config.representation.train_examples = 100
  config.batch_size = 16  # Several batches per call.
  config.num_images_to_show = 4
  return config


def train_images(count):
  builder = data_source.get_builder("mnist", None)
  batch = next(builder.as_dataset(split=f"train[:{count}]").batch(count).as_numpy_iterator())
  return batch["image"].astype(np.float32) / 255.0
