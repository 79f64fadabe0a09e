"""Noise models that corrupt clean images in [0, 1].

Every function is a pure function of (images, noise config, seed): stateless
random ops only, so the same seed always gives the same noise, eagerly or
inside a tf.data graph, and no global RNG state is touched. They work on a
single image [28, 28, 1] or on a batch [batch, 28, 28, 1] alike.
"""

import math

import ml_collections
import tensorflow as tf

NOISE_TYPES = ("gaussian", "salt_and_pepper", "masking")
# Noise types whose factor is a fraction of pixels, hence limited to [0, 1].
FRACTION_NOISE_TYPES = ("salt_and_pepper", "masking")


def validate_noise_config(noise_config: ml_collections.ConfigDict) -> None:
  """Raises ValueError with the bad value and the fix if the noise config is invalid."""
  if noise_config.type not in NOISE_TYPES:
    raise ValueError(
        f"Unknown noise.type {noise_config.type!r}; valid types are "
        f"{', '.join(NOISE_TYPES)} (set --config.noise.type=...).")
  factor = noise_config.factor
  if not math.isfinite(factor):
    raise ValueError(
        f"noise.factor={factor} is not a finite number; set --config.noise.factor to e.g. "
        "0.4 (gaussian std) or 0.2 (fraction of pixels).")
  if noise_config.type in FRACTION_NOISE_TYPES and not 0.0 <= factor <= 1.0:
    raise ValueError(
        f"noise.factor={factor} is not a fraction of pixels; for "
        f"{noise_config.type} noise it must be in [0, 1] "
        "(e.g. --config.noise.factor=0.2).")
  if noise_config.type == "gaussian" and not factor >= 0.0:
    raise ValueError(
        f"noise.factor={factor} is a negative standard deviation; for gaussian "
        "noise it must be >= 0 (e.g. --config.noise.factor=0.4).")


def add_noise(images: tf.Tensor, noise_config: ml_collections.ConfigDict,
              seed: tf.Tensor) -> tf.Tensor:
  """Returns `images` (float in [0, 1]) corrupted by the configured noise, clipped to [0, 1].

  Args:
    images: float32 tensor of any shape, values in [0, 1].
    noise_config: `config.noise`: `type` in NOISE_TYPES and `factor`.
    seed: shape [2] integer tensor for the stateless random ops.
  """
  return tf.clip_by_value(add_unclipped_noise(images, noise_config, seed), 0.0, 1.0)


def add_unclipped_noise(images: tf.Tensor, noise_config: ml_collections.ConfigDict,
                        seed: tf.Tensor) -> tf.Tensor:
  """`add_noise` before clipping: Gaussian noise may leave [0, 1], the other types never do."""
  shape = tf.shape(images)
  factor = tf.cast(noise_config.factor, images.dtype)
  if noise_config.type == "gaussian":
    noise = tf.random.stateless_normal(shape, seed=seed, dtype=images.dtype)
    noisy = images + factor * noise
  elif noise_config.type == "salt_and_pepper":
    # One draw picks the corrupted pixels, an independent one picks salt or pepper.
    select_seed, value_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=2))
    corrupted = tf.random.stateless_uniform(shape, seed=select_seed) < factor
    salt = tf.random.stateless_uniform(shape, seed=value_seed) < 0.5
    noisy = tf.where(corrupted, tf.cast(salt, images.dtype), images)
  elif noise_config.type == "masking":
    dropped = tf.random.stateless_uniform(shape, seed=seed) < factor
    noisy = tf.where(dropped, tf.zeros_like(images), images)
  else:
    validate_noise_config(noise_config)  # Raises for an unknown type.
  return noisy
