"""Noise models: statistics of each type, determinism, eager == tf.data, validation."""

import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from input_pipeline import noise
from input_pipeline import pipeline

SEED = tf.constant([7, 11], dtype=tf.int64)


def _noise_config(noise_type, factor):
  return ml_collections.ConfigDict({"type": noise_type, "factor": factor})


def _gray(value=0.5, shape=(64, 28, 28, 1)):
  return tf.fill(shape, value)


@pytest.mark.parametrize("factor", [0.05, 0.1])
def test_gaussian_residual_std_is_factor(factor):
  # On mid-gray images a std of 0.1 is 5 sigmas from either clip bound, so the
  # clipped residual is the unclipped Gaussian noise.
  images = _gray()
  noisy = noise.add_noise(images, _noise_config("gaussian", factor), SEED)
  residual = (noisy - images).numpy()
  assert abs(residual.std() - factor) < 0.03 * factor
  assert abs(residual.mean()) < 0.01 * factor


@pytest.mark.parametrize("factor", [0.2, 0.4, 1.0])
def test_gaussian_residual_std_before_clipping_is_factor(factor):
  images = tf.random.stateless_uniform((64, 28, 28, 1), seed=[5, 5])
  noisy = noise.add_unclipped_noise(images, _noise_config("gaussian", factor), SEED)
  residual = (noisy - images).numpy()
  assert abs(residual.std() - factor) < 0.02 * factor
  clipped = noise.add_noise(images, _noise_config("gaussian", factor), SEED).numpy()
  np.testing.assert_array_equal(clipped, np.clip(noisy.numpy(), 0.0, 1.0))


def test_gaussian_is_clipped_to_unit_interval():
  noisy = noise.add_noise(_gray(), _noise_config("gaussian", 2.0), SEED).numpy()
  assert noisy.min() == 0.0 and noisy.max() == 1.0


@pytest.mark.parametrize("factor", [0.1, 0.4])
def test_salt_and_pepper_flips_factor_of_pixels(factor):
  images = _gray()
  noisy = noise.add_noise(images, _noise_config("salt_and_pepper", factor), SEED).numpy()
  changed = noisy != 0.5
  assert abs(changed.mean() - factor) < 0.01
  # Corrupted pixels are salt or pepper, about half each.
  assert set(np.unique(noisy[changed])) == {0.0, 1.0}
  assert abs((noisy[changed] == 1.0).mean() - 0.5) < 0.03


@pytest.mark.parametrize("factor", [0.2, 0.5])
def test_masking_zeroes_factor_of_pixels(factor):
  noisy = noise.add_noise(_gray(1.0), _noise_config("masking", factor), SEED).numpy()
  assert set(np.unique(noisy)) == {0.0, 1.0}
  assert abs((noisy == 0.0).mean() - factor) < 0.01


@pytest.mark.parametrize("noise_type", noise.NOISE_TYPES)
def test_zero_factor_is_identity(noise_type):
  images = tf.random.stateless_uniform((4, 28, 28, 1), seed=[1, 2])
  noisy = noise.add_noise(images, _noise_config(noise_type, 0.0), SEED)
  np.testing.assert_array_equal(noisy.numpy(), images.numpy())


@pytest.mark.parametrize("noise_type", noise.NOISE_TYPES)
def test_same_seed_same_noise_other_seed_other_noise(noise_type):
  config = _noise_config(noise_type, 0.3)
  images = _gray()
  first = noise.add_noise(images, config, SEED).numpy()
  again = noise.add_noise(images, config, SEED).numpy()
  other = noise.add_noise(images, config, SEED + 1).numpy()
  np.testing.assert_array_equal(first, again)
  assert (first != other).mean() > 0.1


@pytest.mark.parametrize("noise_type", noise.NOISE_TYPES)
def test_preprocess_eager_equals_inside_tf_data(noise_type):
  config = _noise_config(noise_type, 0.4)
  images = tf.cast(tf.random.stateless_uniform((8, 28, 28, 1), seed=[3, 4], maxval=256,
                                               dtype=tf.int32), tf.uint8)
  eager_noisy, eager_clean = pipeline.preprocess(images, config, SEED)
  dataset = tf.data.Dataset.from_tensors(images).map(
      lambda batch: pipeline.preprocess(batch, config, SEED))
  graph_noisy, graph_clean = next(iter(dataset))
  np.testing.assert_array_equal(eager_noisy.numpy(), graph_noisy.numpy())
  np.testing.assert_array_equal(eager_clean.numpy(), graph_clean.numpy())
  assert eager_clean.dtype == tf.float32
  np.testing.assert_allclose(eager_clean.numpy(), images.numpy() / 255.0, rtol=1e-6)


@pytest.mark.parametrize("noise_type, factor, message", [
    ("gaussian", -0.1, "negative standard deviation"),
    ("salt_and_pepper", 1.5, "must be in [0, 1]"),
    ("masking", -0.2, "must be in [0, 1]"),
    ("speckle", 0.1, "valid types are gaussian, salt_and_pepper, masking"),
])
def test_invalid_noise_config_is_rejected(noise_type, factor, message):
  with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
    noise.validate_noise_config(_noise_config(noise_type, factor))


def test_add_noise_rejects_unknown_type():
  with pytest.raises(ValueError, match="'speckle'"):
    noise.add_noise(_gray(), _noise_config("speckle", 0.1), SEED)
