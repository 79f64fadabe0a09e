"""Numbers in numpy, shared by every method: fixed noise per (type, level) and per-image metrics.

Image i of a (type, level) gets the noise seed fold_in(plan.noise_seed(...), i),
so every method sees the very same noisy images and a rerun reproduces them.
`per_example_metrics` scores every method alike.
"""

import numpy as np
import tensorflow as tf

from input_pipeline import noise
from trainer import metrics


# Cap on each image's PSNR: an exact reproduction (MSE 0) scores this, not infinity.
MAX_PSNR_DB = 100.0


# The MSE floor that gives MAX_PSNR_DB: 10 * log10(1 / MIN_MSE) = MAX_PSNR_DB.
MIN_MSE = 10.0 ** (-MAX_PSNR_DB / 10.0)


# Scalars reported per (method, noise type, level).
METRICS = ("psnr_mean_db", "psnr_pooled_db", "ssim", "bce", "mse")


# The representation row of the flattened pixels, the comparison for the encoders.
RAW_PIXELS = "raw_pixels"


PSNR_CONVENTIONS = {
    "psnr_mean_db": "mean over images of each image's 10*log10(1/MSE) (trainer/train.py's "
                    f"psnr), each capped at {MAX_PSNR_DB:g} dB",
    "psnr_pooled_db": "10*log10(1/MSE) of the MSE pooled over all images",
}


def add_fixed_noise(clean: np.ndarray, spec: noise.NoiseSpec, seed: np.ndarray) -> np.ndarray:
  """`noise.add_noise` of `spec` on each image i of `clean` with seed fold_in(seed, i)."""
  if not len(clean):
    return clean.copy()
  seed = tf.constant(seed, tf.int64)
  dataset = tf.data.Dataset.from_tensor_slices(
      (tf.range(len(clean), dtype=tf.int64), clean)).map(
          lambda index, image: noise.add_noise(
              image, spec, tf.random.experimental.stateless_fold_in(seed, index)),
          num_parallel_calls=tf.data.AUTOTUNE)
  return np.concatenate(list(dataset.batch(10_000).as_numpy_iterator()))


def psnr_db(mse) -> np.ndarray:
  """10 * log10(1 / mse) for images in [0, 1], with mse floored at MIN_MSE (<= MAX_PSNR_DB)."""
  mse = np.maximum(np.asarray(mse, np.float64), MIN_MSE)
  return np.minimum(10.0 * np.log10(1.0 / mse), MAX_PSNR_DB)


@tf.function(reduce_retracing=True)
def _bce_and_ssim(clean: tf.Tensor, denoised: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  # One graph rather than eager ops: SSIM's dozens of small ops cost half as much (its
  # values move by a float32 rounding, ~3e-7).
  return (metrics.per_example_loss(clean, denoised, "bce"),
          metrics.per_example_ssim(clean, denoised))


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
    batch_bce, batch_ssim = _bce_and_ssim(tf.constant(clean[start:start + batch_size]),
                                          tf.constant(denoised[start:start + batch_size]))
    bce.append(batch_bce.numpy())
    ssim.append(batch_ssim.numpy())
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


def to_builtin(value):
  """`value` with numpy scalars and arrays turned into Python numbers and lists (for JSON)."""
  if isinstance(value, dict):
    return {str(key): to_builtin(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [to_builtin(item) for item in value]
  if isinstance(value, np.ndarray):
    return value.tolist()
  if isinstance(value, np.generic):
    return value.item()
  return value
