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


@pytest.mark.parametrize("shape", [(64, 28, 28, 1), (28, 28, 1), (3, 5), (1,), (0, 4)])
def test_standard_normal_is_tensorflows_normal(shape):
  """The vectorised Box-Muller gives TensorFlow's own normal draws, to float rounding."""
  expected = tf.random.stateless_normal(shape, seed=SEED).numpy()
  eager = noise.standard_normal(tf.constant(shape), SEED)
  in_tf_data = next(iter(tf.data.Dataset.from_tensors(SEED).map(
      lambda seed: noise.standard_normal(shape, seed))))
  for values in (eager, in_tf_data):
    assert values.dtype == tf.float32 and tuple(values.shape) == shape
    np.testing.assert_allclose(values.numpy(), expected, rtol=0, atol=1e-5)
  np.testing.assert_array_equal(eager.numpy(), in_tf_data.numpy())


def test_standard_normal_has_unit_normal_statistics():
  values = noise.standard_normal([256, 28, 28, 1], SEED).numpy().ravel()  # 200,704 draws.
  assert abs(values.mean()) < 0.01
  assert abs(values.std() - 1.0) < 0.01
  # Tails: P(|z| > 3) = 0.0027; both halves of each Box-Muller pair are used.
  assert abs((np.abs(values) > 3.0).mean() - 0.0027) < 0.0005
  assert abs((values[0::2] > 0).mean() - 0.5) < 0.01
  assert abs((values[1::2] > 0).mean() - 0.5) < 0.01


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


def _blind_config(noise_type="gaussian", factor=0.4, factor_range=(), mixture_types=()):
  return ml_collections.ConfigDict({"type": noise_type, "factor": factor,
                                    "factor_range": factor_range,
                                    "mixture_types": mixture_types})


def test_factor_range_draws_one_level_per_image():
  # Mid-gray images: std up to 0.1 stays 5 sigmas from the clip bounds.
  images = _gray(shape=(256, 28, 28, 1))
  noisy = noise.add_noise(images, _blind_config(factor_range=(0.02, 0.1)), SEED).numpy()
  per_image_std = (noisy - 0.5).std(axis=(1, 2, 3))
  assert per_image_std.min() > 0.02 * 0.9 and per_image_std.max() < 0.1 * 1.1
  # Levels spread over the range, roughly uniformly.
  assert per_image_std.std() > 0.015
  assert abs(np.median(per_image_std) - 0.06) < 0.01


def test_factor_range_on_one_image_and_inside_tf_data():
  config = _blind_config(noise_type="masking", factor_range=(0.1, 0.9))
  image = _gray(1.0, shape=(28, 28, 1))
  eager = noise.add_noise(image, config, SEED)
  assert eager.shape == (28, 28, 1)
  graph = next(iter(tf.data.Dataset.from_tensors(image).map(
      lambda one: noise.add_noise(one, config, SEED))))
  np.testing.assert_array_equal(eager.numpy(), graph.numpy())
  assert 0.1 * 0.8 < (eager.numpy() == 0.0).mean() < 0.9 * 1.1


def test_fixed_range_equals_the_fixed_level_noise():
  # A degenerate range draws the level of `factor`: the pixel noise is the same stream.
  images = _gray()
  fixed = noise.add_noise(images, _noise_config("gaussian", 0.3), SEED).numpy()
  ranged = noise.add_noise(images, _blind_config(factor_range=(0.3, 0.3)), SEED).numpy()
  np.testing.assert_allclose(ranged, fixed, atol=1e-6)


def test_mixture_gives_each_image_one_of_the_types():
  images = _gray(shape=(300, 28, 28, 1))
  config = _blind_config(factor=0.3, mixture_types=noise.NOISE_TYPES)
  noisy = noise.add_noise(images, config, SEED).numpy()
  kinds = []
  for image in noisy:
    values = set(np.unique(image))
    if values == {0.0, 0.5, 1.0}:
      kinds.append("salt_and_pepper")
    elif values == {0.0, 0.5}:
      kinds.append("masking")
    else:
      assert len(values) > 100  # Gaussian noise: continuous values.
      kinds.append("gaussian")
  counts = {kind: kinds.count(kind) for kind in noise.NOISE_TYPES}
  assert all(60 < count < 140 for count in counts.values()), counts


def test_reference_noise_drops_range_and_mixture():
  config = _blind_config("masking", 0.25, (0.1, 0.5), ("masking", "gaussian"))
  assert noise.is_blind(config)
  reference = noise.NoiseSpec.from_config(config)
  assert not noise.is_blind(reference)
  assert (reference.type, reference.factor) == ("masking", 0.25)
  assert not noise.is_blind(_noise_config("gaussian", 0.4))


@pytest.mark.parametrize("config, message", [
    (_blind_config(factor_range=(0.8, 0.1)), r"factor_range=\(0.8, 0.1\) must be two levels"),
    (_blind_config(factor_range=(0.1, 0.2, 0.3)), "must be two levels"),
    (_blind_config(factor_range=(-0.1, 0.5)), "noise.factor_range=-0.1 is a negative"),
    (_blind_config(factor_range=(0.1, 1.5), mixture_types=("gaussian", "masking")),
     r"noise.factor_range=1.5 is not a fraction of pixels; for masking"),
    (_blind_config(mixture_types=("gaussian", "speckle")),
     "Unknown noise.mixture_types entry 'speckle'"),
])
def test_invalid_blind_noise_is_rejected(config, message):
  with pytest.raises(ValueError, match=message):
    noise.validate_noise_config(config)


def _table_config(**fields):
  return ml_collections.ConfigDict({"type": "gaussian", "factor": 0.4, "generator": "table",
                                    "table_num_values": 65_536, **fields})


def test_the_table_is_whole_rows_of_exact_normals():
  table = noise.gaussian_table(_table_config(), SEED, 784)
  assert table.shape == (65_536 // 784, 784)
  np.testing.assert_array_equal(
      table.numpy().ravel(), noise.standard_normal(tf.constant([83 * 784]), SEED).numpy())
  assert noise.gaussian_table(_noise_config("gaussian", 0.4), SEED, 784) is None  # philox


def test_table_normal_sums_two_different_rows_per_image():
  # Rows of constant powers of four: whatever the rotation, an image is one
  # number, +-4^a +-4^b over sqrt(2), which names its two rows and their signs
  # (4^a - 4^b is never a power of two, so a == b could not pass for a pair).
  table = tf.constant(np.repeat(4.0 ** np.arange(10, dtype=np.float32)[:, None], 784, axis=1))
  values = noise.table_normal(tf.constant([500, 28, 28, 1]), SEED, table).numpy()
  sums = np.rint(values.reshape(500, 784) * np.sqrt(2.0)).astype(np.int64)
  assert (sums == sums[:, :1]).all()
  signed = [sign * 4**row for row in range(10) for sign in (-1, 1)]
  pairs = {first + second for first in signed for second in signed if abs(first) != abs(second)}
  same_row = {first + second for first in signed for second in signed if abs(first) == abs(second)}
  assert set(sums[:, 0]) <= pairs and not set(sums[:, 0]) & same_row
  assert len(set(sums[:, 0])) > 150  # Of the 180 signed pairs.


def test_table_normal_is_standard_normal_and_differs_between_images():
  table = noise.gaussian_table(_table_config(), SEED, 784)
  values = noise.table_normal(tf.constant([500, 28, 28, 1]), SEED, table).numpy()
  assert abs(values.std() - 1.0) < 0.01 and abs(values.mean()) < 0.01
  # 83 rows make 6,806 ordered pairs: 500 images repeat about 18 of them.
  assert len({image.tobytes() for image in values.reshape(500, 784)}) > 460
  # The rows are rotated differently from one call (seed) to the next.
  other = noise.table_normal(tf.constant([500, 28, 28, 1]), SEED + 1, table).numpy()
  assert not {image.tobytes() for image in values.reshape(500, 784)} & {
      image.tobytes() for image in other.reshape(500, 784)}


def test_table_noise_is_deterministic_per_seed_eagerly_and_inside_tf_data():
  config = _table_config()
  table = noise.gaussian_table(config, SEED, 784)
  images = _gray(shape=(8, 28, 28, 1))
  eager = noise.add_noise(images, config, SEED, table).numpy()
  graph = next(iter(tf.data.Dataset.from_tensors(images).map(
      lambda batch: noise.add_noise(batch, config, SEED, table))))
  np.testing.assert_array_equal(eager, graph.numpy())
  np.testing.assert_array_equal(eager, noise.add_noise(images, config, SEED, table).numpy())
  assert (eager != noise.add_noise(images, config, SEED + 1, table).numpy()).mean() > 0.5
  residual = noise.add_unclipped_noise(images, config, SEED, table) - images
  assert abs(float(tf.math.reduce_std(residual)) - 0.4) < 0.02


@pytest.mark.parametrize("fields, message", [
    ({"generator": "fast"}, "Unknown noise.generator 'fast'; valid generators are philox, table"),
    ({"type": "masking", "factor": 0.2}, "noise.type='masking' draws none"),
    ({"table_num_values": 1000}, r"noise.table_num_values=1000 must be an integer in \[65,536"),
    ({"table_num_values": 2.5e6}, "noise.table_num_values=2500000.0 must be an integer"),
])
def test_invalid_generator_settings_are_rejected(fields, message):
  with pytest.raises(ValueError, match=message):
    noise.validate_noise_config(_table_config(**fields))
