"""Denoising autoencoder models: the tutorial's dense MLP and a convolutional variant.

Each model is a `keras.Model` mapping images [batch, 28, 28, 1] in [0, 1] to
denoised images of the same shape, built from two named sub-models, `encoder`
(images -> latent [batch, latent_dim]) and `decoder` (latent -> images), so the
encoder can be used on its own for downstream tasks.

Weights are initialised from an explicit seed (one Glorot-uniform initializer
per layer), never from Keras's global RNG state.
"""

import itertools
import math

import keras
import ml_collections

MODEL_TYPES = ("dense", "conv")


def _kernel_initializers(seed: int):
  """Endless, distinct, seeded Glorot-uniform initializers: one per layer."""
  for offset in itertools.count():
    yield keras.initializers.GlorotUniform(seed=seed * 10_000 + offset)


def _dense_encoder(model_config, image_shape, initializers):
  """Flatten, then the tutorial's 256-128 ReLU layers and a ReLU bottleneck."""
  images = keras.Input(shape=image_shape, name="images")
  x = keras.layers.Flatten()(images)
  for units in model_config.dense_hidden_units:
    x = keras.layers.Dense(units, activation="relu",
                           kernel_initializer=next(initializers))(x)
  latent = keras.layers.Dense(model_config.latent_dim, activation="relu",
                              kernel_initializer=next(initializers),
                              name="encoder_output")(x)
  return keras.Model(images, latent, name="encoder")


def _dense_decoder(model_config, image_shape, initializers):
  """Mirror of the encoder, with a sigmoid output reshaped to an image."""
  latent = keras.Input(shape=(model_config.latent_dim,), name="latent")
  x = latent
  for units in reversed(model_config.dense_hidden_units):
    x = keras.layers.Dense(units, activation="relu",
                           kernel_initializer=next(initializers))(x)
  x = keras.layers.Dense(math.prod(image_shape), activation="sigmoid",
                         kernel_initializer=next(initializers))(x)
  images = keras.layers.Reshape(image_shape)(x)
  return keras.Model(latent, images, name="decoder")


def _conv_encoder(model_config, image_shape, initializers):
  """Stride-2 3x3 convolutions (28 -> 14 -> 7), then a dense ReLU bottleneck."""
  images = keras.Input(shape=image_shape, name="images")
  x = images
  for filters in model_config.conv_filters:
    x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu",
                            kernel_initializer=next(initializers))(x)
  x = keras.layers.Flatten()(x)
  latent = keras.layers.Dense(model_config.latent_dim, activation="relu",
                              kernel_initializer=next(initializers),
                              name="encoder_output")(x)
  return keras.Model(images, latent, name="encoder")


def _conv_decoder(model_config, image_shape, initializers):
  """Dense back to the encoder's last feature map, then stride-2 transposed convolutions."""
  side = image_shape[0] // 2**len(model_config.conv_filters)
  latent = keras.Input(shape=(model_config.latent_dim,), name="latent")
  last_filters = model_config.conv_filters[-1]
  x = keras.layers.Dense(side * side * last_filters, activation="relu",
                         kernel_initializer=next(initializers))(latent)
  x = keras.layers.Reshape((side, side, last_filters))(x)
  for filters in reversed(model_config.conv_filters):
    x = keras.layers.Conv2DTranspose(filters, 3, strides=2, padding="same",
                                     activation="relu",
                                     kernel_initializer=next(initializers))(x)
  images = keras.layers.Conv2D(image_shape[-1], 3, padding="same", activation="sigmoid",
                               kernel_initializer=next(initializers))(x)
  return keras.Model(latent, images, name="decoder")


def check_model_config(model_config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the bad field and the fix if `create_model` cannot build it."""
  if model_config.type not in MODEL_TYPES:
    raise ValueError(
        f"Unknown model.type {model_config.type!r}; valid types are "
        f"{', '.join(MODEL_TYPES)} (set --config.model.type=...).")
  if not model_config.latent_dim > 0:
    raise ValueError(f"model.latent_dim={model_config.latent_dim} must be > 0.")
  if model_config.type == "dense" and not all(
      units > 0 for units in model_config.dense_hidden_units):
    raise ValueError(
        f"model.dense_hidden_units={tuple(model_config.dense_hidden_units)} must all be > 0.")
  if model_config.type == "conv":
    # Each stride-2 convolution halves the side; 28 halves at most twice evenly.
    if not (1 <= len(model_config.conv_filters) <= 2
            and all(filters > 0 for filters in model_config.conv_filters)):
      raise ValueError(
          f"model.conv_filters={tuple(model_config.conv_filters)} must be 1 or 2 "
          "positive filter counts (28 -> 14 -> 7), e.g. --config.model.conv_filters=(32,64).")


def create_model(model_config: ml_collections.ConfigDict, image_shape: tuple[int, int, int],
                 seed: int = 0) -> keras.Model:
  """Returns the autoencoder described by `config.model`, with `encoder` and `decoder` sub-models.

  Args:
    model_config: `config.model`.
    image_shape: shape of one image, e.g. `DataSource.image_shape`.
    seed: the same seed gives the same initial weights.
  """
  check_model_config(model_config)
  image_shape = tuple(image_shape)
  initializers = _kernel_initializers(seed)
  if model_config.type == "dense":
    encoder = _dense_encoder(model_config, image_shape, initializers)
    decoder = _dense_decoder(model_config, image_shape, initializers)
  else:
    encoder = _conv_encoder(model_config, image_shape, initializers)
    decoder = _conv_decoder(model_config, image_shape, initializers)
  images = keras.Input(shape=image_shape, name="images")
  model = keras.Model(images, decoder(encoder(images)),
                      name=f"{model_config.type}_denoising_autoencoder")
  return model


def get_encoder(model: keras.Model) -> keras.Model:
  """The encoder sub-model of a model built by `create_model`."""
  return model.get_layer("encoder")
