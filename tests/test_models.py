"""Models: the tutorial's exact dense architecture, the conv variant at several latent sizes, the U-Net."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from configs import blind_unet as blind_unet_config
from configs import conv as conv_config
from configs import default as default_config
from configs import unet as unet_config
from trainer import models

IMAGE_SHAPE = (28, 28, 1)


def _tutorial_parameter_count():
  """784-256-128-64-128-256-784, every Dense layer with a bias."""
  sizes = [784, 256, 128, 64, 128, 256, 784]
  return sum(fan_in * fan_out + fan_out for fan_in, fan_out in zip(sizes, sizes[1:], strict=False))


def test_dense_model_has_the_tutorials_parameter_count():
  model = models.create_model(default_config.get_config().model, IMAGE_SHAPE)
  assert _tutorial_parameter_count() == 484_944
  assert model.count_params() == 484_944


def test_dense_model_has_the_tutorials_layers():
  model = models.create_model(default_config.get_config().model, IMAGE_SHAPE)
  dense_layers = [layer for sub_model in ("encoder", "decoder")
                  for layer in model.get_layer(sub_model).layers
                  if layer.__class__.__name__ == "Dense"]
  assert [layer.units for layer in dense_layers] == [256, 128, 64, 128, 256, 784]
  assert [layer.activation.__name__ for layer in dense_layers] == ["relu"] * 5 + ["sigmoid"]


@pytest.mark.parametrize("model_type", ("dense", "conv"))
def test_encoder_and_decoder_are_usable_alone(model_type):
  config = default_config.get_config().model
  config.type = model_type
  model = models.create_model(config, IMAGE_SHAPE)
  images = tf.random.stateless_uniform((3, 28, 28, 1), seed=[0, 1])
  latent = models.get_encoder(model)(images)
  assert latent.shape == (3, 64)
  np.testing.assert_allclose(model.get_layer("decoder")(latent).numpy(),
                             model(images).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("bottleneck, filters, latent_dim", [
    ("dense", (32, 16), 2), ("dense", (32, 16), 16), ("dense", (32, 16), 64),
    ("dense", (32, 16), 128), ("spatial", (8, 16), 49), ("spatial", (8, 16), 392),
    ("spatial", (8, 16), 784), ("spatial", (8,), 196)])
def test_conv_model_runs_at_every_latent_dim(bottleneck, filters, latent_dim):
  config = conv_config.get_config().model
  config.conv_bottleneck = bottleneck
  config.conv_filters = filters
  config.latent_dim = latent_dim
  model = models.create_model(config, IMAGE_SHAPE)
  images = tf.random.stateless_uniform((5, 28, 28, 1), seed=[0, 2])
  denoised = model(images)
  assert denoised.shape == (5, 28, 28, 1)
  assert 0.0 <= float(tf.reduce_min(denoised)) and float(tf.reduce_max(denoised)) <= 1.0
  assert models.get_encoder(model)(images).shape == (5, latent_dim)
  assert any(layer.__class__.__name__ == "Conv2DTranspose"
             for layer in model.get_layer("decoder").layers)


def test_improved_conv_has_fewer_parameters_than_the_dense_model():
  model = models.create_model(conv_config.get_config().model, IMAGE_SHAPE)
  assert model.count_params() == 268_489 < 484_944
  # Three convolutions per level and the code's convolution in the encoder.
  assert sum(layer.__class__.__name__ == "Conv2D"
             for layer in model.get_layer("encoder").layers) == 7
  assert models.get_encoder(model).output_shape == (None, 7 * 7 * 8)


@pytest.mark.parametrize("filters, side", [((8, 16), 7), ((8,), 14)])
def test_spatial_code_is_a_map_the_decoder_reads_back(filters, side):
  config = conv_config.get_config().model
  config.conv_bottleneck = "spatial"
  config.conv_filters = filters
  config.latent_dim = side * side * 3
  model = models.create_model(config, IMAGE_SHAPE)
  encoder, decoder = model.get_layer("encoder"), model.get_layer("decoder")
  # No Dense layer anywhere: a 3x3 convolution to 3 channels makes the code.
  assert not any(layer.__class__.__name__ == "Dense"
                 for part in (encoder, decoder) for layer in part.layers)
  assert encoder.layers[-2].output.shape == (None, side, side, 3)
  images = tf.random.stateless_uniform((4, 28, 28, 1), seed=[0, 5])
  latent = models.get_encoder(model)(images)
  assert latent.shape == (4, side * side * 3)
  assert float(tf.reduce_min(latent)) >= 0.0  # ReLU code, like the dense bottleneck's
  np.testing.assert_allclose(decoder(latent).numpy(), model(images).numpy(), rtol=1e-5, atol=1e-6)


def test_unet_shapes_parameters_and_deepest_features():
  config = unet_config.get_config().model
  model = models.create_model(config, IMAGE_SHAPE)
  # 48-96-192 filters, two 3x3 convolutions per level, 2x2 transposed convolutions up.
  assert model.count_params() == 1_047_601
  images = tf.random.stateless_uniform((3, 28, 28, 1), seed=[0, 3])
  denoised = model(images)
  assert denoised.shape == (3, 28, 28, 1)
  assert 0.0 <= float(tf.reduce_min(denoised)) and float(tf.reduce_max(denoised)) <= 1.0
  encoder = models.get_encoder(model)
  features = encoder(images)
  assert features.shape == (3, 7 * 7 * 192)
  # The encoder shares the U-Net's weights: a change to them shows in its features.
  deepest = model.get_layer("deepest_features")
  kernel, bias = deepest.get_weights()
  deepest.set_weights([kernel, bias + 1.0])
  assert float(tf.reduce_min(encoder(images) - features)) >= 0.0
  assert float(tf.reduce_max(encoder(images) - features)) > 0.5


def _logits(probabilities):
  probabilities = np.asarray(probabilities, np.float64)
  return np.log(probabilities) - np.log1p(-probabilities)


def test_bias_free_unet_has_no_bias_and_its_logits_scale_with_the_input():
  config = blind_unet_config.get_config().model
  config.unet_use_bias = False
  model = models.create_model(config, IMAGE_SHAPE)
  assert not [weight.path for weight in model.weights if "bias" in weight.path]
  with_bias = models.create_model(blind_unet_config.get_config().model, IMAGE_SHAPE)
  bias_count = sum(int(np.prod(weight.shape)) for weight in with_bias.weights
                   if "bias" in weight.path)
  # 48 and 96 filters: 4 convolutions and 1 transposed one each; 192: 2; the output: 1.
  assert bias_count == 5 * 48 + 5 * 96 + 2 * 192 + 1 == 1_105
  assert model.count_params() == 1_047_601 - bias_count
  images = tf.random.stateless_uniform((3, 28, 28, 1), seed=[0, 4])
  denoised = model(images)
  assert denoised.shape == (3, 28, 28, 1)
  # Positive homogeneity: the logits of twice the input are twice the logits.
  np.testing.assert_allclose(_logits(model(2.0 * images)), 2.0 * _logits(denoised),
                             rtol=1e-3, atol=1e-3)
  # The check tells a model with biases apart once they are not zero (they start at zero).
  with_bias.get_layer("deepest_features").bias.assign(tf.ones(192))
  biased = _logits(with_bias(2.0 * images)) - 2.0 * _logits(with_bias(images))
  assert np.max(np.abs(biased)) > 1e-2
  assert models.get_encoder(model)(images).shape == (3, 7 * 7 * 192)


@pytest.mark.parametrize("filters, features", [((8,), 28 * 28 * 8), ((8, 16), 14 * 14 * 16)])
def test_unet_with_fewer_levels(filters, features):
  config = unet_config.get_config().model
  config.unet_filters = filters
  config.unet_convs_per_level = 1
  model = models.create_model(config, IMAGE_SHAPE)
  images = tf.zeros((2, 28, 28, 1))
  assert model(images).shape == (2, 28, 28, 1)
  assert models.get_encoder(model)(images).shape == (2, features)


def test_space_to_depth_unet_runs_on_pixel_blocks():
  config = unet_config.get_config().model
  config.unet_space_to_depth, config.unet_filters = True, (64, 128)
  model = models.create_model(config, IMAGE_SHAPE)
  # Levels 14x14 (4 -> 64 -> 64 channels) and 7x7 (64 -> 128 -> 128), a 2x2 transposed
  # convolution up, 128 -> 64 -> 64 after the skip, and a 1x1 convolution to 4 logits.
  conv = lambda size, fan_in, fan_out: size * size * fan_in * fan_out + fan_out  # noqa: E731
  assert model.count_params() == (
      conv(3, 4, 64) + conv(3, 64, 64) + conv(3, 64, 128) + conv(3, 128, 128)
      + conv(2, 128, 64) + conv(3, 128, 64) + conv(3, 64, 64) + conv(1, 64, 4)) == 404_548
  images = tf.random.stateless_uniform((3, 28, 28, 1), seed=[0, 5])
  denoised = model(images)
  assert denoised.shape == (3, 28, 28, 1)
  assert 0.0 <= float(tf.reduce_min(denoised)) and float(tf.reduce_max(denoised)) <= 1.0
  # Its first convolution sees TensorFlow's own space-to-depth of the images.
  first_conv = next(layer for layer in model.layers if layer.name.startswith("conv2d"))
  np.testing.assert_array_equal(
      keras.Model(model.inputs, first_conv.input)(images), tf.nn.space_to_depth(images, 2))
  # The blocks go back where they came from: a pixel's logit moves only that pixel.
  output_conv = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)][-1]
  assert output_conv.kernel_size == (1, 1)
  kernel, bias = output_conv.get_weights()
  output_conv.set_weights([kernel * 0.0, bias * 0.0 + np.array([5.0, 0.0, 0.0, 0.0])])
  corners = model(images).numpy()[0, :, :, 0]
  np.testing.assert_allclose(corners[0::2, 0::2], 1 / (1 + np.exp(-5.0)), rtol=1e-5)
  np.testing.assert_allclose(corners[1::2, :], 0.5)
  np.testing.assert_allclose(corners[:, 1::2], 0.5)
  assert models.get_encoder(model)(images).shape == (3, 7 * 7 * 128)


def test_same_seed_same_weights_other_seed_other_weights():
  config = default_config.get_config().model
  first = models.create_model(config, IMAGE_SHAPE, seed=3).get_weights()
  again = models.create_model(config, IMAGE_SHAPE, seed=3).get_weights()
  other = models.create_model(config, IMAGE_SHAPE, seed=4).get_weights()
  for a, b in zip(first, again, strict=True):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(first[0], other[0])


@pytest.mark.parametrize("field, value, message", [
    ("type", "vae", "valid types are dense, conv, unet"),
    ("conv_blocks_per_level", -1, "conv_blocks_per_level=-1 must be >= 0"),
    ("latent_dim", 0, r"latent_dim=0 must be in 1\.\.65,536"),
    ("latent_dim", 10**9, r"latent_dim=1000000000 must be in 1\.\.65,536 .*only learns the identity"),
    ("conv_filters", (8, 16, 32), "must be 1 to 2 positive filter counts"),
    ("conv_bottleneck", "global", "valid bottlenecks are dense, spatial"),
])
def test_invalid_model_config_is_rejected(field, value, message):
  config = conv_config.get_config().model
  config[field] = value
  with pytest.raises(ValueError, match=message):
    models.create_model(config, IMAGE_SHAPE)


@pytest.mark.parametrize("filters, latent_dim, message", [
    ((32, 64), 100, r"latent_dim=100 must be a multiple of 49 .* 7x7 map.*latent_dim=392"),
    ((32,), 300, r"latent_dim=300 must be a multiple of 196 .* 14x14 map.*latent_dim=1568"),
])
def test_spatial_code_must_fill_whole_channels(filters, latent_dim, message):
  config = conv_config.get_config().model
  config.conv_bottleneck = "spatial"
  config.conv_filters = filters
  config.latent_dim = latent_dim
  with pytest.raises(ValueError, match=message):
    models.create_model(config, IMAGE_SHAPE)


@pytest.mark.parametrize("field, value, message", [
    ("unet_filters", (8, 16, 32, 64), "must be 1 to 3 positive filter counts"),
    ("unet_filters", (8, 0), "must be 1 to 3 positive filter counts"),
    ("unet_convs_per_level", 0, "unet_convs_per_level=0 must be > 0"),
    ("unet_space_to_depth", True, r"must be 1 to 2 positive filter counts, one per level \(14, "
                                  r"7\) with model.unet_space_to_depth"),
])
def test_invalid_unet_config_is_rejected(field, value, message):
  config = unet_config.get_config().model  # Three levels of filters.
  config[field] = value
  with pytest.raises(ValueError, match=message):
    models.create_model(config, IMAGE_SHAPE)
