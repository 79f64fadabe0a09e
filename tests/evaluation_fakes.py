"""Stand-ins for trainer/evaluation/{baselines,tuning,representation}.py in the evaluation tests.

They follow those modules' API exactly and are cheap and deterministic:
`noisy` returns its input, `median` is a 3x3 median filter, and `bm3d` (slow,
as in the real module) a box filter whose size is tuned. `install_if_missing`
puts them in place of the real modules only where those do not exist yet.
"""

import dataclasses
import importlib
import sys
import types

import numpy as np

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


def _module(name, attributes):
  module = types.ModuleType(name, f"Test stand-in for {name}.")
  for attribute in attributes:
    setattr(module, attribute, globals()[attribute])
  return module


def baselines_module():
  return _module("trainer.evaluation.baselines",
                 ("BASELINE_NAMES", "SLOW_BASELINES", "TunedBaseline"))


def tuning_module():
  return _module("trainer.evaluation.tuning", ("tune_baseline",))


def representation_module():
  return _module("trainer.evaluation.representation",
                 ("linear_probe_accuracy", "kmeans_scores"))


_FAKES = {"trainer.evaluation.baselines": baselines_module,
          "trainer.evaluation.tuning": tuning_module,
          "trainer.evaluation.representation": representation_module}


def missing_modules() -> list[str]:
  """The modules among the evaluation's baselines, tuning and representation that do not exist."""
  missing = []
  for name in _FAKES:
    try:
      importlib.import_module(name)
    except ModuleNotFoundError as error:
      if error.name != name:
        raise
      missing.append(name)
  return missing


def install_if_missing() -> list[str]:
  """Registers the stand-ins for the missing modules; returns their names."""
  missing = missing_modules()
  for name in missing:
    sys.modules[name] = _FAKES[name]()
    setattr(importlib.import_module("trainer.evaluation"), name.rsplit(".", 1)[1],
            sys.modules[name])
  return missing
