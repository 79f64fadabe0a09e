"""The classical methods an evaluation compares the models with, handed to it as one object.

`Registry` names the baselines (and which are slow), the function that tunes
one, the representation scorers (linear probe, k-means), and the source
files whose code their results depend on (part of the cache keys). The
evaluation never imports those modules itself: `runner.evaluate_and_report`
takes a registry, by default `default_registry()` (trainer/evaluation/
baselines.py, tuning.py, wiener.py, representation.py), and the config picks
baselines from it by name (`config.baselines`). Tests hand in a registry of
cheap stand-ins (tests/evaluation_fakes.py) instead of patching modules.
"""

import dataclasses
from typing import Callable


@dataclasses.dataclass(frozen=True)
class Registry:
  """The baselines and representation scorers an evaluation may use.

  Attributes:
    baseline_names: every baseline, in report order; `config.baselines` picks among them.
    slow_baselines: those run on the first `config.slow_baseline_max_images` test images only.
    tune_baseline: (name, noisy_tune, clean_tune, fit_noisy=, fit_clean=) -> a tuned
      baseline with `params`, `tuning_psnr_db` and `denoise(noisy)`; module-level (and
      its result picklable), as it runs in worker processes.
    baseline_sources: the files whose code a baseline's result depends on.
    linear_probe_accuracy: (train_features, train_labels, test_features, test_labels,
      seed=) -> accuracy.
    kmeans_scores: (features, labels, num_clusters=, seed=) -> {"accuracy", "nmi"}.
    representation_sources: the files whose code the representation scores depend on.
  """
  baseline_names: tuple[str, ...]
  slow_baselines: tuple[str, ...]
  tune_baseline: Callable
  baseline_sources: tuple[str, ...]
  linear_probe_accuracy: Callable
  kmeans_scores: Callable
  representation_sources: tuple[str, ...]


def default_registry() -> Registry:
  """The project's baselines and scorers (needs the eval extra's libraries only when run)."""
  # pylint: disable=g-import-not-at-top
  from trainer.evaluation import baselines
  from trainer.evaluation import representation
  from trainer.evaluation import tuning
  from trainer.evaluation import wiener
  return Registry(
      baseline_names=baselines.BASELINE_NAMES,
      slow_baselines=baselines.SLOW_BASELINES,
      tune_baseline=tuning.tune_baseline,
      baseline_sources=(baselines.__file__, tuning.__file__, wiener.__file__),
      linear_probe_accuracy=representation.linear_probe_accuracy,
      kmeans_scores=representation.kmeans_scores,
      representation_sources=(representation.__file__,))
