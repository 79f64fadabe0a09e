"""Per-example reconstruction losses and image-quality metrics (MSE, PSNR, SSIM).

Everything is per example ([batch] tensors) so the trainer can sum over
replicas and batches of any size and divide once by the number of examples.
"""

import tensorflow as tf

from trainer import errors

LOSSES = ("bce", "mse", "psnr")
# Keras's clipping for probabilities in binary cross-entropy.
_EPSILON = 1e-7
# Added to the MSE under the psnr loss: a perfect image scores 100 dB, not infinity.
_PSNR_LOSS_MSE_FLOOR = 1e-10


def check_loss_name(loss_name: str) -> None:
  if loss_name not in LOSSES:
    raise errors.ConfigError(
        f"Unknown train.loss {loss_name!r}; valid losses are {', '.join(LOSSES)} "
        "(set --config.train.loss=...).")


def per_example_loss(clean: tf.Tensor, denoised: tf.Tensor, loss_name: str) -> tf.Tensor:
  """Mean over pixels of the reconstruction loss, one value per example.

  bce matches `keras.losses.binary_crossentropy` on probabilities (the
  tutorial's loss); mse is the mean squared error; psnr is minus the image's
  PSNR in dB, so that the batch mean is minus the metric reported (the mean
  of per-image PSNRs): it weighs each image's error relative to its own MSE,
  where mse weighs the already-clean images least.
  """
  check_loss_name(loss_name)
  if loss_name == "psnr":
    return 10.0 * tf.math.log(per_example_mse(clean, denoised)
                              + _PSNR_LOSS_MSE_FLOOR) / tf.math.log(10.0)
  if loss_name == "bce":
    probabilities = tf.clip_by_value(denoised, _EPSILON, 1.0 - _EPSILON)
    per_pixel = -(clean * tf.math.log(probabilities)
                  + (1.0 - clean) * tf.math.log(1.0 - probabilities))
  else:
    per_pixel = tf.math.squared_difference(clean, denoised)
  return tf.reduce_mean(per_pixel, axis=[1, 2, 3])


def per_example_mse(clean: tf.Tensor, denoised: tf.Tensor) -> tf.Tensor:
  return tf.reduce_mean(tf.math.squared_difference(clean, denoised), axis=[1, 2, 3])


def per_example_psnr(clean: tf.Tensor, denoised: tf.Tensor) -> tf.Tensor:
  """10 * log10(1 / MSE) per image, for images in [0, 1] (the tutorial's PSNR)."""
  return tf.image.psnr(clean, denoised, max_val=1.0)


def per_example_ssim(clean: tf.Tensor, denoised: tf.Tensor) -> tf.Tensor:
  return tf.image.ssim(clean, denoised, max_val=1.0)
