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
- Baselines (trainer/baselines.py) are tuned per (type, level) on the LAST
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
import dataclasses
import math
import os
import re
import time
import zlib

from absl import logging
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from input_pipeline import data_source
from input_pipeline import noise
from input_pipeline import pipeline
from trainer import baselines
from trainer import export
from trainer import metrics
from trainer import reports
from trainer import representation
from trainer import summaries

# Cap on each image's PSNR: an exact reproduction (MSE 0) scores this, not infinity.
MAX_PSNR_DB = 100.0
# The MSE floor that gives MAX_PSNR_DB: 10 * log10(1 / MIN_MSE) = MAX_PSNR_DB.
MIN_MSE = 10.0 ** (-MAX_PSNR_DB / 10.0)
# Scalars reported per (method, noise type, level).
METRICS = ("psnr_mean_db", "psnr_pooled_db", "ssim", "bce", "mse")
# The representation row of the flattened pixels, the comparison for the encoders.
RAW_PIXELS = "raw_pixels"
# The default output directory inside the first workdir.
DEFAULT_OUTPUT_DIRNAME = "eval"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"
TENSORBOARD_DIRNAME = "tensorboard"
PSNR_CONVENTIONS = {
    "psnr_mean_db": "mean over images of each image's 10*log10(1/MSE) (trainer/train.py's "
                    f"psnr), each capped at {MAX_PSNR_DB:g} dB",
    "psnr_pooled_db": "10*log10(1/MSE) of the MSE pooled over all images",
}
# Independent noise streams of each (type, level): test, tuning and Wiener-fit images.
_TEST_STREAM, _TUNE_STREAM, _FIT_STREAM = "test", "tune", "fit"
_READ_CONFIG = tfds.ReadConfig(try_autocache=False)
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class EvaluationError(ValueError):
  """The evaluation cannot run; the message names the bad value and the fix."""


# ---------------------------------------------------------------------------
# Config and command-line values.


def selected_baselines(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """`config.baselines` as names, in order, without duplicates.

  Items may hold several comma-separated names, as `--config.baselines=noisy,median`
  gives a one-item tuple "noisy,median".
  """
  names = [name.strip() for item in config.baselines for name in str(item).split(",")]
  return tuple(dict.fromkeys(name for name in names if name))


def noise_levels(config: ml_collections.ConfigDict) -> dict[str, tuple[float, ...]]:
  """{noise type: sorted levels} to evaluate, the reference level included; empty types dropped.

  Assumes `validate_config` passed: types outside noise.NOISE_TYPES are not returned.
  """
  levels = {noise_type: {float(level) for level in config.levels[noise_type]}
            for noise_type in config.levels}
  levels.setdefault(config.reference.type, set()).add(float(config.reference.level))
  # In NOISE_TYPES order (a ConfigDict iterates its keys sorted).
  return {noise_type: tuple(sorted(levels[noise_type])) for noise_type in noise.NOISE_TYPES
          if levels.get(noise_type)}


def _check_level(noise_type: str, level, field: str) -> None:
  if not isinstance(level, (int, float)) or isinstance(level, bool):
    raise EvaluationError(f"{field} holds {level!r}, not a number; set --config.{field}=... "
                          "with numbers, e.g. 0.1,0.4.")
  try:
    noise.validate_noise_config(ml_collections.ConfigDict(
        {"type": noise_type, "factor": float(level)}))
  except ValueError as error:
    valid = ("fractions of pixels in [0, 1]" if noise_type in noise.FRACTION_NOISE_TYPES
             else "standard deviations >= 0")
    raise EvaluationError(
        f"{field} holds {level!r}, not a valid {noise_type} level: {noise_type} levels are "
        f"{valid}; set --config.{field}=... accordingly.") from error


def _check_count(config: ml_collections.ConfigDict, field: str, minimum: int) -> None:
  value = config
  for part in field.split("."):
    value = value[part]
  if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
    raise EvaluationError(f"{field}={value!r} must be an integer >= {minimum} "
                          f"(set --config.{field}=...).")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises EvaluationError naming the bad field and the fix; reads no data."""
  for noise_type in config.levels:
    if noise_type not in noise.NOISE_TYPES:
      raise EvaluationError(
          f"levels.{noise_type}: unknown noise type {noise_type!r}; valid types are "
          f"{', '.join(noise.NOISE_TYPES)}.")
    for level in config.levels[noise_type]:
      _check_level(noise_type, level, f"levels.{noise_type}")
  if config.reference.type not in noise.NOISE_TYPES:
    raise EvaluationError(
        f"Unknown reference.type {config.reference.type!r}; valid types are "
        f"{', '.join(noise.NOISE_TYPES)} (set --config.reference.type=...).")
  _check_level(config.reference.type, config.reference.level, "reference.level")
  for name in selected_baselines(config):
    if name not in baselines.BASELINE_NAMES:
      raise EvaluationError(
          f"Unknown baseline {name!r} in baselines; valid baselines are "
          f"{', '.join(baselines.BASELINE_NAMES)} (e.g. --config.baselines=noisy,median).")
  for field in ("num_examples", "wiener_fit_examples", "representation.train_examples"):
    _check_count(config, field, 0)
  if "wiener" in selected_baselines(config) and not config.wiener_fit_examples:
    raise EvaluationError("The wiener baseline is fitted on wiener_fit_examples training images, "
                          "but wiener_fit_examples=0; set --config.wiener_fit_examples=5000 or "
                          "leave wiener out of --config.baselines.")
  for field in ("batch_size", "slow_baseline_max_images", "tuning_examples",
                "num_images_to_show"):
    _check_count(config, field, 1)
  if "[" in config.train_split:
    raise EvaluationError(
        f"train_split={config.train_split!r} must be a plain split name such as 'train', "
        "not a slice: its last examples are taken for tuning (set --config.train_split=...).")


def model_paths(workdirs, saved_models) -> dict[str, str]:
  """{model name: SavedModel path} from the --workdir and --saved_model values, in order.

  A workdir's model is its `saved_model/`, named after the workdir. A
  --saved_model value is `NAME=PATH` or a plain path, named after its last
  folder (after its parent's for a path ending in `saved_model`).
  """
  named = []
  for workdir in workdirs or ():
    workdir = workdir.rstrip("/")
    named.append((os.path.basename(workdir), os.path.join(workdir, "saved_model"), workdir))
  for value in saved_models or ():
    name, separator, path = value.partition("=")
    if not separator or "/" in name:
      path = value.rstrip("/")
      name = os.path.basename(path)
      if name == "saved_model":
        name = os.path.basename(os.path.dirname(path)) or name
    named.append((name, path.rstrip("/"), value))
  if not named:
    raise EvaluationError("No model to evaluate; pass --workdir=DIR (a workdir trained by "
                          "trainer.main) or --saved_model=[NAME=]PATH, either repeatable.")
  paths = {}
  for name, path, given in named:
    check_model_name(name, given)
    if name in paths:
      raise EvaluationError(
          f"Two models are named {name!r} ({paths[name]} and {path}); name them with "
          "--saved_model=NAME=PATH.")
    paths[name] = path
  return paths


def check_model_name(name: str, given: str | None = None) -> None:
  """Raises EvaluationError unless `name` can name a model (a report row, a TensorBoard run)."""
  if name in baselines.BASELINE_NAMES or name == RAW_PIXELS:
    problem = f"reserved (a baseline or {RAW_PIXELS})"
  elif not _MODEL_NAME.match(name):
    problem = "not made of letters, digits, _ . -"
  else:
    return
  raise EvaluationError(f"{given or name!r} gives the model name {name!r}, which is {problem}; "
                        "choose another name with --saved_model=NAME=PATH.")


def default_output_dir(workdirs) -> str:
  """`<first workdir>/eval`; EvaluationError when there is no workdir to put it in.

  Not `<workdir>/eval`: trainer.main writes its TensorBoard eval run there.
  """
  if not workdirs:
    raise EvaluationError("Pass --output_dir=DIR: without a --workdir there is no default "
                          f"(<first workdir>/{DEFAULT_OUTPUT_DIRNAME}).")
  return os.path.join(workdirs[0].rstrip("/"), DEFAULT_OUTPUT_DIRNAME)


# ---------------------------------------------------------------------------
# Models.


@dataclasses.dataclass(frozen=True)
class Model:
  """An exported model: `denoise` (serving_default) and `encode` on numpy batches."""
  name: str
  path: str
  loaded: object

  def _call(self, endpoint: str, output: str, images: np.ndarray,
            batch_size: int) -> np.ndarray:
    signature = self.loaded.signatures[endpoint]
    return np.concatenate([
        signature(images=tf.constant(images[start:start + batch_size]))[output].numpy()
        for start in range(0, len(images), batch_size)])

  def denoise(self, images: np.ndarray, batch_size: int) -> np.ndarray:
    return self._call(export.SERVING_ENDPOINT, "denoised", images, batch_size)

  def encode(self, images: np.ndarray, batch_size: int) -> np.ndarray:
    return self._call(export.ENCODE_ENDPOINT, "latent", images, batch_size)


def training_run(saved_model_path: str) -> dict | None:
  """What trained a SavedModel, from the workdir around it (None if it is not in one).

  {"model_type", "num_parameters", "epochs", "step", "noise"}, read from the
  metrics.json and config.json that `trainer.main` writes next to saved_model/.
  """
  workdir = os.path.dirname(saved_model_path.rstrip("/"))
  paths = [os.path.join(workdir, name) for name in (reports.METRICS_FILENAME,
                                                      reports.CONFIG_FILENAME)]
  if not all(tf.io.gfile.exists(path) for path in paths):
    return None
  try:
    metrics, config = (reports.read_json(path) for path in paths)
  except ValueError:  # Including reports.CorruptFileError: report without it.
    return None
  return {"model_type": config.get("model", {}).get("type"),
          "num_parameters": metrics.get("num_parameters"),
          "epochs": metrics.get("epochs"), "step": metrics.get("step"),
          "noise": config.get("noise")}


def load_model(name: str, path: str) -> Model:
  """Loads the SavedModel at `path`; EvaluationError naming the path and the fix if unusable."""
  if not tf.saved_model.contains_saved_model(path):
    workdir = os.path.dirname(path) or "."
    raise EvaluationError(
        f"No SavedModel at {path} (model {name!r}); train first (python -m trainer.main "
        f"--config=configs/default.py --workdir={workdir}) or pass --saved_model=PATH of an "
        "exported model.")
  try:
    loaded = tf.saved_model.load(path)
  except (tf.errors.OpError, ValueError, OSError) as error:
    raise EvaluationError(
        f"Cannot load the SavedModel at {path} ({type(error).__name__}: "
        f"{' '.join(str(error).split())[:300]}); export it again with trainer.main.") from error
  missing = [endpoint for endpoint in (export.SERVING_ENDPOINT, export.ENCODE_ENDPOINT)
             if endpoint not in loaded.signatures]
  if missing:
    raise EvaluationError(
        f"The SavedModel at {path} lacks the signature(s) {', '.join(missing)}; evaluate a "
        "model exported by trainer.main (trainer/export.py).")
  return Model(name, path, loaded)


# ---------------------------------------------------------------------------
# Data.


@dataclasses.dataclass(frozen=True)
class EvalData:
  """Clean images (float32 [N, 28, 28, 1] in [0, 1]) and labels of one evaluation.

  Attributes:
    test_images, test_labels: the images every method is scored on.
    tune_images: the training split's last examples, on which baselines are tuned.
    fit_images: the training examples just before those, for the Wiener filter.
    probe_images, probe_labels: the training split's first examples, for the
      representation probes.
    num_classes: label classes (k-means clusters); 0 when the dataset has no labels.
    splits: the TFDS split of each of the above.
  """
  test_images: np.ndarray
  test_labels: np.ndarray | None
  tune_images: np.ndarray
  fit_images: np.ndarray
  probe_images: np.ndarray
  probe_labels: np.ndarray | None
  num_classes: int
  splits: dict[str, str]


def _read_split(builder, split: str, num_examples: int = 0):
  """(images float32 in [0, 1], labels or None) of `split`, its first `num_examples` if > 0."""
  dataset = builder.as_dataset(split=split, shuffle_files=False, read_config=_READ_CONFIG)
  if num_examples:
    dataset = dataset.take(num_examples)
  has_labels = "label" in builder.info.features
  images, labels = [], []
  for batch in dataset.batch(10_000).as_numpy_iterator():
    images.append(pipeline.scale_images(batch["image"]).numpy())
    if has_labels:
      labels.append(batch["label"])
  if not images:
    return np.zeros((0, *data_source.IMAGE_SHAPE), np.float32), None
  return np.concatenate(images), (np.concatenate(labels) if has_labels else None)


def _split_size(builder, split: str, field: str) -> int:
  try:
    return builder.info.splits[split].num_examples
  except (KeyError, ValueError) as error:
    raise EvaluationError(
        f"{field}={split!r} is not a split of TFDS dataset {builder.name!r} (its splits: "
        f"{', '.join(sorted(builder.info.splits.keys()))}); set --config.{field}=...") from error


def load_data(config: ml_collections.ConfigDict) -> EvalData:
  """Reads the test images and the training examples for tuning, fitting and probing."""
  try:
    builder = data_source.get_builder(config.dataset, config.data_dir)
  except ValueError as error:
    raise EvaluationError(str(error)) from error
  data_source.ensure_prepared(builder)
  num_test = _split_size(builder, config.split, "split")
  num_train = _split_size(builder, config.train_split, "train_split")
  held_out = config.tuning_examples + config.wiener_fit_examples
  if held_out > num_train:
    raise EvaluationError(
        f"tuning_examples + wiener_fit_examples = {held_out} exceeds the {num_train} examples "
        f"of train_split {config.train_split!r}; lower --config.tuning_examples or "
        "--config.wiener_fit_examples.")
  if num_test < 1:
    raise EvaluationError(f"split {config.split!r} is empty; choose another --config.split.")
  train = config.train_split
  tune_start = num_train - config.tuning_examples
  fit_start = tune_start - config.wiener_fit_examples
  probe_count = min(config.representation.train_examples, num_train)
  splits = {
      "test": config.split + (f" (first {config.num_examples})" if config.num_examples else ""),
      "tuning": f"{train}[{tune_start}:{num_train}]",
      "wiener_fit": f"{train}[{fit_start}:{tune_start}]",
      "representation_train": f"{train}[:{probe_count}]",
  }
  test_images, test_labels = _read_split(builder, config.split, config.num_examples)
  tune_images, _ = _read_split(builder, splits["tuning"])
  fit_images, _ = (_read_split(builder, splits["wiener_fit"]) if config.wiener_fit_examples
                   else (np.zeros((0, *data_source.IMAGE_SHAPE), np.float32), None))
  probe_images, probe_labels = (_read_split(builder, splits["representation_train"])
                                if probe_count else (test_images[:0], None))
  label = builder.info.features["label"] if "label" in builder.info.features else None
  return EvalData(test_images=test_images, test_labels=test_labels, tune_images=tune_images,
                  fit_images=fit_images, probe_images=probe_images, probe_labels=probe_labels,
                  num_classes=getattr(label, "num_classes", 0) or 0, splits=splits)


# ---------------------------------------------------------------------------
# Noise and metrics.


def noise_seed(seed: int, noise_type: str, level: float, stream: str) -> np.ndarray:
  """The [2] int64 seed of one (stream, noise type, level): stable across processes and runs."""
  key = zlib.crc32(f"{stream}/{noise_type}/{float(level)!r}".encode())
  return np.array([seed, key], np.int64)


def add_fixed_noise(clean: np.ndarray, noise_type: str, level: float,
                    seed: np.ndarray) -> np.ndarray:
  """`noise.add_noise` on each image i of `clean` with seed fold_in(seed, i)."""
  noise_config = ml_collections.ConfigDict({"type": noise_type, "factor": float(level)})
  if not len(clean):
    return clean.copy()
  seed = tf.constant(seed, tf.int64)
  dataset = tf.data.Dataset.from_tensor_slices(
      (tf.range(len(clean), dtype=tf.int64), clean)).map(
          lambda index, image: noise.add_noise(
              image, noise_config, tf.random.experimental.stateless_fold_in(seed, index)),
          num_parallel_calls=tf.data.AUTOTUNE)
  return np.concatenate(list(dataset.batch(10_000).as_numpy_iterator()))


def psnr_db(mse) -> np.ndarray:
  """10 * log10(1 / mse) for images in [0, 1], with mse floored at MIN_MSE (<= MAX_PSNR_DB)."""
  mse = np.maximum(np.asarray(mse, np.float64), MIN_MSE)
  return np.minimum(10.0 * np.log10(1.0 / mse), MAX_PSNR_DB)


def per_example_metrics(clean: np.ndarray, denoised: np.ndarray,
                        batch_size: int = 1000) -> dict[str, np.ndarray]:
  """{"bce", "mse", "psnr_db", "ssim"}: one float64 value per image, for any method's output."""
  denoised = np.asarray(denoised, np.float32)
  if denoised.shape != clean.shape:
    raise ValueError(f"denoised images have shape {denoised.shape}, expected {clean.shape}")
  difference = clean.astype(np.float64) - denoised.astype(np.float64)
  mse = np.mean(np.square(difference), axis=(1, 2, 3))
  bce, ssim = [], []
  for start in range(0, len(clean), batch_size):
    clean_batch = tf.constant(clean[start:start + batch_size])
    denoised_batch = tf.constant(denoised[start:start + batch_size])
    bce.append(metrics.per_example_loss(clean_batch, denoised_batch, "bce").numpy())
    ssim.append(metrics.per_example_ssim(clean_batch, denoised_batch).numpy())
  return {"bce": np.concatenate(bce).astype(np.float64), "mse": mse, "psnr_db": psnr_db(mse),
          "ssim": np.concatenate(ssim).astype(np.float64)}


def summarize(per_example: dict[str, np.ndarray], num_examples: int | None = None) -> dict:
  """The METRICS of the first `num_examples` images (all if None) of `per_example_metrics`."""
  part = {name: values[:num_examples] for name, values in per_example.items()}
  mean_mse = float(np.mean(part["mse"]))
  return {
      "psnr_mean_db": float(np.mean(part["psnr_db"])),
      "psnr_pooled_db": float(psnr_db(mean_mse)),
      "ssim": float(np.mean(part["ssim"])),
      "bce": float(np.mean(part["bce"])),
      "mse": mean_mse,
      "num_examples": int(len(part["mse"])),
  }


def margin_over_best_baseline(level_result: dict, model: str) -> dict | None:
  """The model's psnr_mean_db minus the best baseline's, each baseline compared on its images.

  A slow baseline scored on a subset is compared with the model on that subset.
  None when no baseline was scored.
  """
  full, subset = level_result["metrics"], level_result.get("subset", {}).get("metrics", {})
  margins = {}
  for name in level_result["baselines"]:
    scores = subset if full[name]["num_examples"] < full[model]["num_examples"] else full
    margins[name] = (scores[model]["psnr_mean_db"] - scores[name]["psnr_mean_db"],
                     scores[name]["num_examples"])
  if not margins:
    return None
  best = min(margins, key=lambda name: margins[name][0])
  return {"margin_db": margins[best][0], "best_baseline": best,
          "num_examples": margins[best][1]}


def _to_builtin(value):
  """`value` with numpy scalars and arrays turned into Python numbers and lists (for JSON)."""
  if isinstance(value, dict):
    return {str(key): _to_builtin(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [_to_builtin(item) for item in value]
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, np.generic):
    return value.item()
  return value


def level_key(level: float) -> str:
  """The JSON key and label of a level: its shortest exact repr, 0.4 -> "0.4"."""
  return repr(float(level))


# ---------------------------------------------------------------------------
# The evaluation.


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


def _evaluate_level(config, data: EvalData, models: list[Model], baseline_names,
                    noise_type: str, level: float, progress: _Progress, shown: int):
  """Scores every method at one (type, level); returns (result, noisy, outputs[:shown])."""
  stage = f"{noise_type}/{level_key(level)}"
  num_examples = len(data.test_images)
  subset_size = _subset_size(config, baseline_names, num_examples)
  with progress.stage(f"{stage}: noise"):
    noisy = add_fixed_noise(data.test_images, noise_type, level,
                            noise_seed(config.seed, noise_type, level, _TEST_STREAM))
    tune_noisy = add_fixed_noise(data.tune_images, noise_type, level,
                                 noise_seed(config.seed, noise_type, level, _TUNE_STREAM))
    fit_noisy = add_fixed_noise(data.fit_images, noise_type, level,
                                noise_seed(config.seed, noise_type, level, _FIT_STREAM))
  per_example, outputs, tuned_baselines = {}, {}, {}
  for model in models:
    with progress.stage(f"{stage}: model {model.name}"):
      denoised = model.denoise(noisy, config.batch_size)
      per_example[model.name] = _score(data.test_images, denoised, model.name, config)
      outputs[model.name] = denoised[:shown]
  for name in baseline_names:
    with progress.stage(f"{stage}: tune {name}"):
      tuned = baselines.tune_baseline(
          name, tune_noisy, data.tune_images,
          fit_noisy=fit_noisy if len(fit_noisy) else None,
          fit_clean=data.fit_images if len(fit_noisy) else None)
    images = noisy[:subset_size] if name in baselines.SLOW_BASELINES else noisy
    with progress.stage(f"{stage}: baseline {name} ({len(images)} images)"):
      denoised = tuned.denoise(images)
      per_example[name] = _score(data.test_images[:len(images)], denoised, name, config)
      outputs[name] = np.asarray(denoised[:shown], np.float32)
    tuned_baselines[name] = {"params": _to_builtin(dict(tuned.params)),
                             "tuning_psnr_db": float(tuned.tuning_psnr_db),
                             "num_examples": len(images)}
  result = {
      "level": level,
      "num_examples": num_examples,
      "metrics": {name: summarize(values) for name, values in per_example.items()},
      "baselines": tuned_baselines,
  }
  if subset_size < num_examples:
    result["subset"] = {
        "num_examples": subset_size,
        "metrics": {name: summarize(values, subset_size) for name, values in per_example.items()},
    }
  result["margin_over_best_baseline"] = {
      model.name: margin_over_best_baseline(result, model.name) for model in models}
  return result, noisy, outputs


def _score(clean, denoised, method: str, config) -> dict[str, np.ndarray]:
  try:
    return per_example_metrics(clean, denoised, config.batch_size)
  except ValueError as error:
    raise EvaluationError(f"Method {method!r} returned unusable images: {error}.") from error


def _flat(features) -> np.ndarray:
  """[N, ...] features (latents or images) as float32 [N, D]."""
  return np.asarray(features, np.float32).reshape(len(features), -1)


def _feature_scores(train_clean, train_noisy, test_clean, test_noisy, data: EvalData,
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


def _evaluate_representation(config, data: EvalData, models: list[Model],
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
  probe_noisy = add_fixed_noise(
      data.probe_images, reference_type, reference_level,
      noise_seed(config.seed, reference_type, reference_level, "representation_train"))
  images = (data.probe_images, probe_noisy, data.test_images, reference_noisy)
  with progress.stage(f"representation: {RAW_PIXELS}"):
    result["features"][RAW_PIXELS] = _feature_scores(*images, data, config.seed)
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
  validate_config(config)
  try:
    reports.check_workdir(output_dir, flag="--output_dir")
  except ValueError as error:
    raise EvaluationError(str(error)) from error
  for name in model_paths_by_name:
    check_model_name(name)
  baseline_names = selected_baselines(config)
  levels = noise_levels(config)
  with progress.stage("load models"):
    models = [load_model(name, path) for name, path in model_paths_by_name.items()]
  with progress.stage("load data"):
    data = load_data(config)
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
      results[noise_type][level_key(level)] = result
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
      "training_runs": {model.name: training_run(model.path) for model in models},
      "baselines": list(baseline_names),
      "slow_baselines": {name: min(config.slow_baseline_max_images, len(data.test_images))
                         for name in slow},
      "reference": {"type": config.reference.type, "level": float(config.reference.level)},
      "psnr_conventions": {**PSNR_CONVENTIONS, "max_psnr_db": MAX_PSNR_DB, "min_mse": MIN_MSE},
      "results": results,
      "representation": representation_result,
      "timings_seconds": dict(progress.timings),
  }
  with progress.stage("write report"):
    try:
      write_outputs(report, examples, output_dir)
    except (OSError, tf.errors.OpError) as error:
      raise EvaluationError(
          f"Cannot write the report to {output_dir} ({type(error).__name__}: "
          f"{' '.join(str(error).split())[:300]}); choose another --output_dir or fix its "
          "permissions.") from error
  logging.info("Wrote the evaluation report to %s in %.0f s.", output_dir,
               time.perf_counter() - progress.start)
  return report


# ---------------------------------------------------------------------------
# Outputs.


def _methods(report: dict) -> list[str]:
  return [*report["models"], *report["baselines"]]


def _method_label(report: dict, method: str) -> str:
  subset = report["slow_baselines"].get(method)
  if subset is not None and subset < report["dataset"]["num_examples"]:
    return f"{method} (first {subset} images)"
  return method


def _number(value, digits: int) -> str:
  return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _headline_table(report: dict) -> list[str]:
  reference = report["reference"]
  result = report["results"][reference["type"]][level_key(reference["level"])]
  lines = [
      f"## Headline: {reference['type']} noise {level_key(reference['level'])}, "
      f"{result['num_examples']} test images",
      "",
      "| method | kind | PSNR mean (dB) | PSNR pooled (dB) | SSIM | BCE | MSE | "
      "margin over the best baseline (dB) | parameters | epochs |",
      "|---|---|---|---|---|---|---|---|---|---|",
  ]
  runs = report.get("training_runs", {})
  for method in _methods(report):
    scores = result["metrics"][method]
    margin = result["margin_over_best_baseline"].get(method)
    margin_text = "" if method not in report["models"] else (
        "n/a (no baseline)" if margin is None else
        f"{margin['margin_db']:+.2f} vs {margin['best_baseline']}"
        + (f" (first {margin['num_examples']} images)"
           if margin["num_examples"] < result["num_examples"] else ""))
    kind = "model" if method in report["models"] else "baseline"
    lines.append(
        f"| {_method_label(report, method)} | {kind} | {_number(scores['psnr_mean_db'], 2)} | "
        f"{_number(scores['psnr_pooled_db'], 2)} | {_number(scores['ssim'], 3)} | "
        f"{_number(scores['bce'], 4)} | {_number(scores['mse'], 5)} | {margin_text} | "
        f"{_run_field(runs.get(method), 'num_parameters')} | "
        f"{_run_field(runs.get(method), 'epochs')} |")
  if "subset" in result:
    subset = result["subset"]
    side_by_side = ", ".join(
        f"{method} {subset['metrics'][method]['psnr_mean_db']:.2f}"
        for method in _methods(report))
    lines += ["", f"On the first {subset['num_examples']} images (where the slow baselines "
              f"ran), PSNR mean (dB): {side_by_side}."]
  return lines


def _run_field(run: dict | None, field: str) -> str:
  value = (run or {}).get(field)
  return "" if value is None else f"{value:,}" if isinstance(value, int) else f"{value:g}"


def _level_tables(report: dict) -> list[str]:
  lines = []
  for noise_type, by_level in report["results"].items():
    keys = list(by_level)
    lines += ["", f"## PSNR mean (dB) against the {noise_type} noise level", "",
              "| method | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for method in _methods(report):
      cells = [_number(by_level[key]["metrics"][method]["psnr_mean_db"], 2) for key in keys]
      lines.append(f"| {_method_label(report, method)} | " + " | ".join(cells) + " |")
  return lines


def _representation_table(report: dict) -> list[str]:
  result = report["representation"]
  if "skipped" in result:
    return ["", "## Representation", "", f"Skipped: {result['skipped']}."]
  lines = [
      "", "## Representation", "",
      f"{result['protocol']}; {result['num_train_examples']} training images "
      f"({result['train_split']}), {result['num_test_examples']} test images, noise "
      f"{result['noise']['type']} {level_key(result['noise']['level'])}.", "",
      "| features | dim | probe accuracy clean | probe accuracy noisy | k-means accuracy clean "
      "| k-means NMI clean | k-means accuracy noisy | k-means NMI noisy |",
      "|---|---|---|---|---|---|---|---|",
  ]
  for name, scores in result["features"].items():
    lines.append(f"| {name} | {scores['dim']} | " + " | ".join(
        _number(scores[field], 3) for field in (
            "probe_accuracy_clean", "probe_accuracy_noisy", "kmeans_accuracy_clean",
            "kmeans_nmi_clean", "kmeans_accuracy_noisy", "kmeans_nmi_noisy")) + " |")
  return lines


def format_markdown(report: dict) -> str:
  """report.md: the headline table, one PSNR table per noise type, the representation table."""
  splits = report["dataset"]["splits"]
  lines = [
      "# Denoising evaluation", "",
      f"Dataset {report['dataset']['name']}, test images: {splits['test']} "
      f"({report['dataset']['num_examples']} images). Models: "
      + ", ".join(f"{name} ({path})" for name, path in report["models"].items()) + ".", "",
      "Notes:",
      "- Every method is scored on the same noisy test images: one fixed, seeded draw per "
      "noise type and level.",
      f"- Baselines are tuned on {splits['tuning']} and the Wiener filter fitted on "
      f"{splits['wiener_fit']}, training images held out from the test set; their chosen "
      "parameters are in report.json.",
      f"- PSNR mean: {PSNR_CONVENTIONS['psnr_mean_db']}. PSNR pooled: "
      f"{PSNR_CONVENTIONS['psnr_pooled_db']}. The mean is never below the pooled value.",
      "- Margin over the best baseline: the model's PSNR mean minus that of the baseline "
      "closest to it, each baseline compared on the images it denoised.",
  ]
  for name, subset in report["slow_baselines"].items():
    if subset < report["dataset"]["num_examples"]:
      lines.append(f"- {name} is slow: it denoised only the first {subset} test images.")
  lines += ["", *_headline_table(report), *_level_tables(report), *_representation_table(report)]
  total = sum(seconds for seconds in report["timings_seconds"].values())
  lines += ["", f"Stages took {total:.0f} s in all (each in report.json's timings_seconds). "
            "TensorBoard: one run per method, tags `<type>/<metric>`, step = noise level x 1000.",
            ""]
  return "\n".join(lines)


def _tensorboard_step(level: float) -> int:
  return int(round(level * 1000))


def _write_tensorboard(report: dict, examples: dict, directory: str) -> None:
  """One run per method (tags <type>/<metric>, step = level x 1000); example grids at the root."""
  representation_features = report["representation"].get("features", {})
  writers = {method: tf.summary.create_file_writer(os.path.join(directory, method))
             for method in dict.fromkeys((*_methods(report), *representation_features))}
  root = tf.summary.create_file_writer(directory)
  for noise_type, by_level in report["results"].items():
    for result in by_level.values():
      step = _tensorboard_step(result["level"])
      for method, scores in result["metrics"].items():
        summaries.write_scalars(writers[method], {
            f"{noise_type}/{name}": scores[name] for name in METRICS}, step)
  for method, scores in representation_features.items():
    summaries.write_scalars(writers[method], {
        f"representation/{name}": value for name, value in scores.items() if name != "dim"}, 0)
  for noise_type, example in examples.items():
    summaries.write_images(
        root, f"examples/{noise_type}",
        reports.image_rows_grid([images for _, images in example["rows"]]),
        _tensorboard_step(example["level"]))
    with root.as_default():
      tf.summary.text(f"examples/{noise_type}/rows",
                      " / ".join(title for title, _ in example["rows"]),
                      step=_tensorboard_step(example["level"]))
  for writer in (*writers.values(), root):
    writer.close()


def write_outputs(report: dict, examples: dict, output_dir: str) -> None:
  """Writes the plots, TensorBoard events, report.json and report.md (last) to `output_dir`."""
  tf.io.gfile.makedirs(output_dir)
  written = set()
  for noise_type, by_level in report["results"].items():
    series = {_method_label(report, method): (
        [result["level"] for result in by_level.values()],
        [result["metrics"][method]["psnr_mean_db"] for result in by_level.values()])
              for method in _methods(report)}
    name = f"psnr_vs_level_{noise_type}.png"
    reports.plot_lines(
        series, f"{noise_type} noise level", "PSNR, mean over images (dB)",
        f"Denoising under {noise_type} noise ({report['dataset']['num_examples']} test images)",
        os.path.join(output_dir, name),
        dashed={_method_label(report, method) for method in report["baselines"]})
    written.add(name)
  for noise_type, example in examples.items():
    name = f"examples_{noise_type}.png"
    reports.plot_image_rows(example["rows"], os.path.join(output_dir, name),
                            title=f"{noise_type} noise {level_key(example['level'])}")
    written.add(name)
  # Plots of noise types this run did not evaluate would contradict report.json.
  for pattern in ("psnr_vs_level_*.png", "examples_*.png"):
    for path in tf.io.gfile.glob(os.path.join(output_dir, pattern)):
      if os.path.basename(path) not in written:
        tf.io.gfile.remove(path)
  # Events of an earlier evaluation would mix with these: the directory is replaced whole.
  tensorboard_dir = os.path.join(output_dir, TENSORBOARD_DIRNAME)
  temporary = f"{tensorboard_dir}.tmp-{os.getpid()}"
  if tf.io.gfile.exists(temporary):
    tf.io.gfile.rmtree(temporary)
  _write_tensorboard(report, examples, temporary)
  reports.replace_directory(temporary, tensorboard_dir)
  reports.write_json(os.path.join(output_dir, REPORT_JSON), report)
  reports.write_text(os.path.join(output_dir, REPORT_MD), format_markdown(report))
