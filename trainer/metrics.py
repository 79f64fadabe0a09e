"""Per-example reconstruction losses and image-quality metrics (MSE, PSNR, SSIM).

Everything is per example ([batch] tensors) so the trainer can sum over
replicas and batches of any size and divide once by the number of examples.
"""

import tensorflow as tf

from trainer import errors

LOSSES = ("bce", "mse")
# Keras's clipping for probabilities in binary cross-entropy.
_EPSILON = 1e-7


def check_loss_name(loss_name: str) -> None:
  if loss_name not in LOSSES:
    raise errors.ConfigError(
        f"Unknown train.loss {loss_name!r}; valid losses are {', '.join(LOSSES)} "
        "(set --config.train.loss=...).")


def per_example_loss(clean: tf.Tensor, denoised: tf.Tensor, loss_name: str) -> tf.Tensor:
  """Mean over pixels of the reconstruction loss, one value per example.

  bce matches `keras.losses.binary_crossentropy` on probabilities (the
  tutorial's loss); mse is the mean squared error.
  """
  check_loss_name(loss_name)
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
