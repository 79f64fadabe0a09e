"""Evaluation of exported denoising autoencoders against classical baselines.

`evaluate_and_report(config, model_paths, output_dir)` is the orchestrator
behind `python -m trainer.evaluate` (config: configs/evaluate.py). It scores
SavedModels (their `serving_default` and `encode` signatures, see
trainer/export.py), never training code, so it evaluates exactly what is served.

How the numbers are made comparable and reproducible:
- For each (noise type, level), the noisy test images are drawn once with
  `input_pipeline.noise.add_noise`, image i with the seed
  fold_in((config.seed, crc32(type, level)), i): every method (each model and
  each baseline) is scored on the very same noisy images, a rerun reproduces
  them, and an image's noise does not depend on how many images are scored.
- Baselines (trainer/evaluation/baselines.py) are tuned per (type, level) on the LAST
  `tuning_examples` images of the training split, with noise of their own seed,
  and the Wiener filter is fitted on the `wiener_fit_examples` just before them:
  nothing is tuned on the test images.
- One function, `per_example_metrics`, scores every method: BCE (as the
  training loss, `metrics.per_example_loss(..., "bce")`), MSE, PSNR and SSIM.
  PSNR comes in two conventions: `psnr_mean_db`, the mean over images of each
  image's PSNR (what trainer/train.py reports as `psnr`), and `psnr_pooled_db`,
  10 * log10(1 / MSE) of the MSE pooled over all images. The per-image mean is
  never the smaller (Jensen): 20.23 against 19.79 dB for the default 50-epoch
  dense model at Gaussian 0.4. An image reproduced exactly has MSE 0 and an
  infinite PSNR, so each image's PSNR is capped at `MAX_PSNR_DB` (its MSE
  floored at `MIN_MSE`); the clean images as output score exactly the cap.
- Baselines in `baselines.SLOW_BASELINES` denoise only the first
  `slow_baseline_max_images` test images; every method is also scored on that
  subset, for a side-by-side on the same images.
- What does not depend on the models, each baseline's result at each level
  and the raw-pixel representation scores, is kept in a cache
  (trainer/evaluation/cache.py; `config.cache_dir`, `config.use_cache`) and
  reused by the next evaluation with the same inputs; report.json says which
  results came from it. The baselines' work runs in `config.num_workers`
  processes (trainer/evaluation/plan.py, schedule.py, parallel.py), with the same numbers
  as a serial run.

Outputs in `output_dir` (by default `<first workdir>/eval`, next to the
training run's TensorBoard eval events, so `tensorboard --logdir <workdir>`
shows both): report.json, report.md,
psnr_vs_level_<type>.png, examples_<type>.png and tensorboard/ (one run per
method, tags `<type>/<metric>`, the step being the noise level in thousandths,
so each chart draws the metric against the level). Everything is checked
(config, models, data) before anything is written, and each file is written
to a temporary name and renamed.
"""

import os
import time

from absl import logging
import ml_collections
import numpy as np
import tensorflow as tf

from trainer import errors
from input_pipeline import noise as noise_lib
from trainer.evaluation import cache as cache_lib
from trainer.evaluation import loading
from trainer.evaluation import parallel
from trainer.evaluation import plan as plan_lib
from trainer.evaluation import progress as progress_lib
from trainer.evaluation import registry as registry_lib
from trainer.evaluation import report as report_lib
from trainer.evaluation import schedule
from trainer.evaluation import scoring
from trainer.evaluation import settings
from trainer import workdir as workdir_lib


def _flat(features) -> np.ndarray:
  """[N, ...] features (latents or images) as float32 [N, D]."""
  return np.asarray(features, np.float32).reshape(len(features), -1)


def _feature_scores(train_clean, train_noisy, test_clean, test_noisy, data: loading.EvalData,
                    seed: int, registry: registry_lib.Registry) -> dict:
  """Probe accuracies and k-means scores of one kind of features (see `_evaluate_representation`).

  Each condition is a probe of its own: trained on clean training features and
  tested on clean test features, or trained on noisy training features and
  tested on noisy test features. A probe trained on clean and tested on noisy
  features would measure the distribution shift (on raw pixels, chance level),
  not what the features are worth for classifying noisy images.
  """
  train_clean, train_noisy, test_clean, test_noisy = map(
      _flat, (train_clean, train_noisy, test_clean, test_noisy))
  clean_kmeans = registry.kmeans_scores(test_clean, data.test_labels,
                                              num_clusters=data.num_classes, seed=seed)
  noisy_kmeans = registry.kmeans_scores(test_noisy, data.test_labels,
                                              num_clusters=data.num_classes, seed=seed)
  return {
      "dim": int(train_clean.shape[1]),
      "probe_accuracy_clean": float(registry.linear_probe_accuracy(
          train_clean, data.probe_labels, test_clean, data.test_labels, seed=seed)),
      "probe_accuracy_noisy": float(registry.linear_probe_accuracy(
          train_noisy, data.probe_labels, test_noisy, data.test_labels, seed=seed)),
      "kmeans_accuracy_clean": float(clean_kmeans["accuracy"]),
      "kmeans_nmi_clean": float(clean_kmeans["nmi"]),
      "kmeans_accuracy_noisy": float(noisy_kmeans["accuracy"]),
      "kmeans_nmi_noisy": float(noisy_kmeans["nmi"]),
  }


_FEATURE_SCORES = ("dim", "probe_accuracy_clean", "probe_accuracy_noisy", "kmeans_accuracy_clean",
                   "kmeans_nmi_clean", "kmeans_accuracy_noisy", "kmeans_nmi_noisy")


def _raw_pixels_key(config, data: loading.EvalData, registry: registry_lib.Registry) -> dict:
  """The cache key of the raw-pixel representation scores: everything they depend on."""
  reference_type, reference_level = config.reference.type, float(config.reference.level)
  files = [__file__, scoring.__file__, *registry.representation_sources]
  labels = (data.probe_labels, data.test_labels)
  return {
      "kind": "representation",
      "features": scoring.RAW_PIXELS,
      "code": {"sources": cache_lib.source_digest(files),
               "libraries": {**cache_lib.library_versions(("numpy", "scipy", "scikit-learn")),
                             "tensorflow": tf.__version__}},
      "dataset": {"name": config.dataset, "version": data.dataset_version,
                  "split": config.split, "train_split": config.train_split},
      "probe": {"split": data.splits["representation_train"],
                "images": cache_lib.array_digest(data.probe_images),
                "labels": cache_lib.array_digest(*labels)},
      "test": {"num_images": len(data.test_images),
               "images": cache_lib.array_digest(data.test_images)},
      "noise": {"type": reference_type, "level": reference_level, "seed": int(config.seed),
                "stream_seeds": {stream: plan_lib.noise_seed(
                    config.seed, reference_type, reference_level, stream).tolist()
                                 for stream in (plan_lib.TEST_STREAM, "representation_train")}},
      "num_classes": int(data.num_classes),
  }


def _check_feature_scores(entry: cache_lib.Entry) -> None:
  if set(entry.value) != set(_FEATURE_SCORES):
    raise ValueError(f"it holds {sorted(entry.value)}, not the feature scores")


def _evaluate_representation(config, data: loading.EvalData, models: list[loading.Model],
                             reference_noisy: np.ndarray, progress: progress_lib.Progress,
                             cache: cache_lib.Cache, registry: registry_lib.Registry) -> dict:
  """Linear probe and k-means scores of each encoder's features, and of the raw pixels.

  The raw pixels' scores do not depend on the models: they come from the cache
  when an earlier evaluation computed them with the same inputs.
  """
  if not config.representation.train_examples:
    return {"skipped": "representation.train_examples is 0"}
  if data.test_labels is None or not data.num_classes:
    return {"skipped": f"dataset {config.dataset} has no class labels"}
  reference_type, reference_level = config.reference.type, float(config.reference.level)
  result = {
      "num_train_examples": len(data.probe_images),
      "num_test_examples": len(data.test_images),
      "train_split": data.splits["representation_train"],
      "noise": {"type": reference_type, "level": reference_level},
      "protocol": ("linear probes on the features of training images, tested on the features "
                   "of test images: clean -> clean, and noisy -> noisy (reference noise, its own "
                   f"draw for the training images); k-means with {data.num_classes} clusters on "
                   "the test features"),
      "features": {},
  }
  probe_noisy = scoring.add_fixed_noise(
      data.probe_images, noise_lib.NoiseSpec(reference_type, reference_level),
      plan_lib.noise_seed(config.seed, reference_type, reference_level, "representation_train"))
  images = (data.probe_images, probe_noisy, data.test_images, reference_noisy)
  key = _raw_pixels_key(config, data, registry)
  cached = cache.load("representation", key, _check_feature_scores)
  result["raw_pixels_from_cache"] = cached is not None
  if cached is not None:
    result["features"][scoring.RAW_PIXELS] = cached.value
  else:
    with progress.stage(f"representation: {scoring.RAW_PIXELS}"):
      result["features"][scoring.RAW_PIXELS] = _feature_scores(*images, data, config.seed, registry)
    cache.store("representation", key, result["features"][scoring.RAW_PIXELS])
  for model in models:
    with progress.stage(f"representation: {model.name}"):
      features = [model.encode(batch, config.batch_size) for batch in images]
      result["features"][model.name] = _feature_scores(*features, data, config.seed, registry)
  return result


def _representation_cost(config, data: loading.EvalData, models, cache: cache_lib.Cache,
                         registry: registry_lib.Registry) -> float:
  """Prior cost of `_evaluate_representation`, for the time-left estimate."""
  if not config.representation.train_examples or data.test_labels is None:
    return 0.0
  raw_cached = cache.enabled and os.path.exists(
      cache.path("representation", _raw_pixels_key(config, data, registry)))
  return (progress_lib.cached_cost() if raw_cached else progress_lib.REPRESENTATION_RAW_COST) + (
      progress_lib.REPRESENTATION_MODEL_COST * len(models))


def evaluate_and_report(config: ml_collections.ConfigDict, model_paths_by_name: dict[str, str],
                        output_dir: str, registry: registry_lib.Registry | None = None) -> dict:
  """Evaluates the SavedModels against the baselines and writes the report to `output_dir`.

  Args:
    config: configs/evaluate.py's config.
    model_paths_by_name: {model name: SavedModel path}, e.g. from `model_paths`.
    output_dir: directory (local or gs://) for the report, plots and TensorBoard events.
    registry: the baselines and representation scorers (`config.baselines` picks among
      its baselines); default `registry.default_registry()`.

  Returns:
    The content of report.json.

  Raises:
    EvaluationError: a bad config, model, dataset split or output directory, found before
      anything is written; or the report could not be written.
    errors.DatasetUnavailableError: the dataset is neither prepared nor downloadable.
  """
  progress = progress_lib.Progress()
  registry = registry or registry_lib.default_registry()
  settings.validate_config(config, registry.baseline_names)
  workdir_lib.check_workdir(output_dir, flag="--output_dir")
  report_lib.check_writable(output_dir)
  for name in model_paths_by_name:
    loading.check_model_name(name)
  baseline_names = settings.selected_baselines(config)
  levels = settings.noise_levels(config)
  cache = cache_lib.Cache(config.cache_dir or None, enabled=config.use_cache)
  workers = parallel.worker_count(config.num_workers)
  with progress.stage("load models"):
    models = [loading.load_model(name, path) for name, path in model_paths_by_name.items()]
  with progress.stage("load data"):
    data = loading.load_data(config)
  logging.info("Evaluating %s and baselines %s on %d images of %s, at %d noise levels, with %d "
               "worker process%s; baseline cache: %s.",
               ", ".join(model.name for model in models), ", ".join(baseline_names),
               len(data.test_images), config.split, sum(map(len, levels.values())), workers,
               "" if workers == 1 else "es", cache.directory if cache.enabled else "off")

  plan = plan_lib.make_plan(config, data, levels, baseline_names, registry.slow_baselines,
                            cache, schedule.code_key(registry), len(models))
  evaluated = schedule.evaluate_levels(
      plan, config, data, models, registry, progress, cache, workers,
      later_cost=_representation_cost(config, data, models, cache, registry))
  representation_result = _evaluate_representation(
      config, data, models, evaluated.reference_noisy, progress, cache, registry)

  slow = [name for name in baseline_names if name in registry.slow_baselines]
  report = {
      "dataset": {"name": config.dataset, "num_examples": len(data.test_images),
                  "splits": data.splits, "version": data.dataset_version},
      "config": config.to_dict(),
      "models": {model.name: model.path for model in models},
      "training_runs": {model.name: model.training_run for model in models},
      "baselines": list(baseline_names),
      "slow_baselines": {name: min(config.slow_baseline_max_images, len(data.test_images))
                         for name in slow},
      "reference": {"type": config.reference.type, "level": float(config.reference.level)},
      "psnr_conventions": {**scoring.PSNR_CONVENTIONS, "max_psnr_db": scoring.MAX_PSNR_DB,
                           "min_mse": scoring.MIN_MSE},
      "results": evaluated.results,
      "representation": representation_result,
      "baseline_cache": {"directory": cache.directory, "enabled": cache.enabled,
                         **evaluated.cache},
      "workers": workers,
      "timings_seconds": dict(progress.timings),
      "wall_seconds": round(time.perf_counter() - progress.start, 1),
  }
  with progress.stage("write report"):
    try:
      report_lib.write_outputs(report, evaluated.examples, output_dir)
    except (OSError, tf.errors.OpError) as error:
      raise errors.EvaluationError(
          f"Cannot write the report to {output_dir} ({type(error).__name__}: "
          f"{' '.join(str(error).split())[:300]}); choose another --output_dir or fix its "
          "permissions.") from error
  logging.info("Wrote the evaluation report to %s in %.0f s (%d baseline results computed, %d "
               "from the cache).", output_dir, time.perf_counter() - progress.start,
               evaluated.cache["computed"], evaluated.cache["from_cache"])
  return report
