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

Outputs in `output_dir` (by default `<first workdir>/eval`, next to the
training run's TensorBoard eval events, so `tensorboard --logdir <workdir>`
shows both): report.json, report.md,
psnr_vs_level_<type>.png, examples_<type>.png and tensorboard/ (one run per
method, tags `<type>/<metric>`, the step being the noise level in thousandths,
so each chart draws the metric against the level). Everything is checked
(config, models, data) before anything is written, and each file is written
to a temporary name and renamed.
"""

import contextlib
import time

from absl import logging
import ml_collections
import numpy as np
import tensorflow as tf

from trainer import reports
from trainer.evaluation import baselines
from trainer.evaluation import loading
from trainer.evaluation import report as report_lib
from trainer.evaluation import representation
from trainer.evaluation import scoring
from trainer.evaluation import settings
from trainer.evaluation import tuning


class _Progress:
  """Logs one line per stage with its elapsed seconds and keeps them for report.json."""

  def __init__(self):
    self.start = time.perf_counter()
    self.timings = {}

  @contextlib.contextmanager
  def stage(self, name: str):
    start = time.perf_counter()
    yield
    elapsed = time.perf_counter() - start
    self.timings[name] = round(elapsed, 3)
    logging.info("%s: %.1f s (%.0f s since the start).", name, elapsed,
                 time.perf_counter() - self.start)


def _subset_size(config, baseline_names, num_examples: int) -> int:
  """Test images every method denoised: the slow baselines' share, else all of them."""
  if any(name in baselines.SLOW_BASELINES for name in baseline_names):
    return min(config.slow_baseline_max_images, num_examples)
  return num_examples


def _evaluate_level(config, data: loading.EvalData, models: list[loading.Model], baseline_names,
                    noise_type: str, level: float, progress: _Progress, shown: int):
  """Scores every method at one (type, level); returns (result, noisy, outputs[:shown])."""
  stage = f"{noise_type}/{scoring.level_key(level)}"
  num_examples = len(data.test_images)
  subset_size = _subset_size(config, baseline_names, num_examples)
  with progress.stage(f"{stage}: noise"):
    noisy, tune_noisy, fit_noisy = (
        scoring.add_fixed_noise(images, noise_type, level,
                                scoring.noise_seed(config.seed, noise_type, level, stream))
        for images, stream in ((data.test_images, scoring.TEST_STREAM),
                               (data.tune_images, scoring.TUNE_STREAM),
                               (data.fit_images, scoring.FIT_STREAM)))
  per_example, outputs, tuned_baselines = {}, {}, {}
  for model in models:
    with progress.stage(f"{stage}: model {model.name}"):
      denoised = model.denoise(noisy, config.batch_size)
      per_example[model.name] = _score(data.test_images, denoised, model.name, config)
      outputs[model.name] = denoised[:shown]
  for name in baseline_names:
    with progress.stage(f"{stage}: tune {name}"):
      tuned = tuning.tune_baseline(
          name, tune_noisy, data.tune_images,
          fit_noisy=fit_noisy if len(fit_noisy) else None,
          fit_clean=data.fit_images if len(fit_noisy) else None)
    images = noisy[:subset_size] if name in baselines.SLOW_BASELINES else noisy
    with progress.stage(f"{stage}: baseline {name} ({len(images)} images)"):
      denoised = tuned.denoise(images)
      per_example[name] = _score(data.test_images[:len(images)], denoised, name, config)
      outputs[name] = np.asarray(denoised[:shown], np.float32)
    tuned_baselines[name] = {"params": scoring.to_builtin(dict(tuned.params)),
                             "tuning_psnr_db": float(tuned.tuning_psnr_db),
                             "num_examples": len(images)}
  result = {
      "level": level,
      "num_examples": num_examples,
      "metrics": {name: scoring.summarize(values) for name, values in per_example.items()},
      "baselines": tuned_baselines,
  }
  if subset_size < num_examples:
    result["subset"] = {
        "num_examples": subset_size,
        "metrics": {name: scoring.summarize(values, subset_size)
                    for name, values in per_example.items()},
    }
  result["margin_over_best_baseline"] = {
      model.name: scoring.margin_over_best_baseline(result, model.name) for model in models}
  return result, noisy, outputs


def _score(clean, denoised, method: str, config) -> dict[str, np.ndarray]:
  try:
    return scoring.per_example_metrics(clean, denoised, config.batch_size)
  except ValueError as error:
    raise settings.EvaluationError(
        f"Method {method!r} returned unusable images: {error}.") from error


def _flat(features) -> np.ndarray:
  """[N, ...] features (latents or images) as float32 [N, D]."""
  return np.asarray(features, np.float32).reshape(len(features), -1)


def _feature_scores(train_clean, train_noisy, test_clean, test_noisy, data: loading.EvalData,
                    seed: int) -> dict:
  """Probe accuracies and k-means scores of one kind of features (see `_evaluate_representation`).

  Each condition is a probe of its own: trained on clean training features and
  tested on clean test features, or trained on noisy training features and
  tested on noisy test features. A probe trained on clean and tested on noisy
  features would measure the distribution shift (on raw pixels, chance level),
  not what the features are worth for classifying noisy images.
  """
  train_clean, train_noisy, test_clean, test_noisy = map(
      _flat, (train_clean, train_noisy, test_clean, test_noisy))
  clean_kmeans = representation.kmeans_scores(test_clean, data.test_labels,
                                              num_clusters=data.num_classes, seed=seed)
  noisy_kmeans = representation.kmeans_scores(test_noisy, data.test_labels,
                                              num_clusters=data.num_classes, seed=seed)
  return {
      "dim": int(train_clean.shape[1]),
      "probe_accuracy_clean": float(representation.linear_probe_accuracy(
          train_clean, data.probe_labels, test_clean, data.test_labels, seed=seed)),
      "probe_accuracy_noisy": float(representation.linear_probe_accuracy(
          train_noisy, data.probe_labels, test_noisy, data.test_labels, seed=seed)),
      "kmeans_accuracy_clean": float(clean_kmeans["accuracy"]),
      "kmeans_nmi_clean": float(clean_kmeans["nmi"]),
      "kmeans_accuracy_noisy": float(noisy_kmeans["accuracy"]),
      "kmeans_nmi_noisy": float(noisy_kmeans["nmi"]),
  }


def _evaluate_representation(config, data: loading.EvalData, models: list[loading.Model],
                             reference_noisy: np.ndarray, progress: _Progress) -> dict:
  """Linear probe and k-means scores of each encoder's features, and of the raw pixels."""
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
      data.probe_images, reference_type, reference_level,
      scoring.noise_seed(config.seed, reference_type, reference_level, "representation_train"))
  images = (data.probe_images, probe_noisy, data.test_images, reference_noisy)
  with progress.stage(f"representation: {scoring.RAW_PIXELS}"):
    result["features"][scoring.RAW_PIXELS] = _feature_scores(*images, data, config.seed)
  for model in models:
    with progress.stage(f"representation: {model.name}"):
      features = [model.encode(batch, config.batch_size) for batch in images]
      result["features"][model.name] = _feature_scores(*features, data, config.seed)
  return result


def evaluate_and_report(config: ml_collections.ConfigDict, model_paths_by_name: dict[str, str],
                        output_dir: str) -> dict:
  """Evaluates the SavedModels against the baselines and writes the report to `output_dir`.

  Args:
    config: configs/evaluate.py's config.
    model_paths_by_name: {model name: SavedModel path}, e.g. from `model_paths`.
    output_dir: directory (local or gs://) for the report, plots and TensorBoard events.

  Returns:
    The content of report.json.

  Raises:
    EvaluationError: a bad config, model, dataset split or output directory, found before
      anything is written; or the report could not be written.
    data_source.DatasetUnavailableError: the dataset is neither prepared nor downloadable.
  """
  progress = _Progress()
  settings.validate_config(config)
  try:
    reports.check_workdir(output_dir, flag="--output_dir")
  except ValueError as error:
    raise settings.EvaluationError(str(error)) from error
  for name in model_paths_by_name:
    loading.check_model_name(name)
  baseline_names = settings.selected_baselines(config)
  levels = settings.noise_levels(config)
  with progress.stage("load models"):
    models = [loading.load_model(name, path) for name, path in model_paths_by_name.items()]
  with progress.stage("load data"):
    data = loading.load_data(config)
  logging.info("Evaluating %s and baselines %s on %d images of %s.",
               ", ".join(model.name for model in models), ", ".join(baseline_names),
               len(data.test_images), config.split)

  shown = min(config.num_images_to_show,
              _subset_size(config, baseline_names, len(data.test_images)))
  results, examples, reference_noisy = {}, {}, None
  for noise_type, type_levels in levels.items():
    results[noise_type] = {}
    shown_level = type_levels[len(type_levels) // 2]
    for level in type_levels:
      result, noisy, outputs = _evaluate_level(config, data, models, baseline_names,
                                               noise_type, level, progress, shown)
      results[noise_type][scoring.level_key(level)] = result
      if level == shown_level:
        examples[noise_type] = {
            "level": level,
            # The "noisy" baseline's output is the noisy row itself.
            "rows": [("original", data.test_images[:shown]), ("noisy input", noisy[:shown]),
                     *((name, images) for name, images in outputs.items() if name != "noisy")],
        }
      if (noise_type, level) == (config.reference.type, float(config.reference.level)):
        reference_noisy = noisy
  representation_result = _evaluate_representation(config, data, models, reference_noisy,
                                                   progress)

  slow = [name for name in baseline_names if name in baselines.SLOW_BASELINES]
  report = {
      "dataset": {"name": config.dataset, "num_examples": len(data.test_images),
                  "splits": data.splits},
      "config": config.to_dict(),
      "models": {model.name: model.path for model in models},
      "training_runs": {model.name: model.training_run for model in models},
      "baselines": list(baseline_names),
      "slow_baselines": {name: min(config.slow_baseline_max_images, len(data.test_images))
                         for name in slow},
      "reference": {"type": config.reference.type, "level": float(config.reference.level)},
      "psnr_conventions": {**scoring.PSNR_CONVENTIONS, "max_psnr_db": scoring.MAX_PSNR_DB,
                           "min_mse": scoring.MIN_MSE},
      "results": results,
      "representation": representation_result,
      "timings_seconds": dict(progress.timings),
  }
  with progress.stage("write report"):
    try:
      report_lib.write_outputs(report, examples, output_dir)
    except (OSError, tf.errors.OpError) as error:
      raise settings.EvaluationError(
          f"Cannot write the report to {output_dir} ({type(error).__name__}: "
          f"{' '.join(str(error).split())[:300]}); choose another --output_dir or fix its "
          "permissions.") from error
  logging.info("Wrote the evaluation report to %s in %.0f s.", output_dir,
               time.perf_counter() - progress.start)
  return report
