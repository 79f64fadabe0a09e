"""Denoising models: the tutorial's dense MLP, a convolutional autoencoder and a U-Net.

Each model is a `keras.Model` mapping images [batch, 28, 28, 1] in [0, 1] to
denoised images of the same shape. The autoencoders (dense, conv) are built
from two named sub-models, `encoder` (images -> latent [batch, latent_dim]) and
`decoder` (latent -> images), so the encoder can be used on its own for
downstream tasks. The U-Net has no bottleneck: its skip connections carry every
resolution to the decoder, which is what lets it denoise best; its
`get_encoder` view returns the deepest features, flattened.

Weights are initialised from an explicit seed (one Glorot-uniform initializer
per layer), never from Keras's global RNG state.
"""

import contextlib
import itertools
import math

import keras
import ml_collections

from trainer import errors

MODEL_TYPES = ("dense", "conv", "unet")
# How the conv autoencoder's encoder maps its last feature map to the code:
# dense (flatten, then a Dense layer of latent_dim units) or spatial (a 3x3
# convolution to latent_dim / side**2 channels, keeping the map's layout).
CONV_BOTTLENECKS = ("dense", "spatial")
# The largest code size accepted: 2^16 values, 84x the 784 pixels of an MNIST image.
MAX_LATENT_DIM = 65_536
# Dtype policies a model can be built with: float32, or mixed precision
# (float32 variables, bfloat16 or float16 computation).
DTYPE_POLICIES = ("float32", "mixed_bfloat16", "mixed_float16")
# The output layer computes in float32 under any policy: the sigmoid's
# probabilities, the loss and the metrics stay float32.
_OUTPUT_DTYPE = "float32"
# Side of the pixel blocks a space-to-depth U-Net works on (model.unet_space_to_depth).
_BLOCK = 2
# Layer of a U-Net whose output `get_encoder` returns (flattened).
_UNET_DEEPEST_LAYER = "deepest_features"


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
                         kernel_initializer=next(initializers), dtype=_OUTPUT_DTYPE)(x)
  images = keras.layers.Reshape(image_shape, dtype=_OUTPUT_DTYPE)(x)
  return keras.Model(latent, images, name="decoder")


def _conv(filters, initializers, strides=1, activation="relu", kernel_size=3, name=None,
          dtype=None, use_bias=True):
  return keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same",
                             activation=activation, kernel_initializer=next(initializers),
                             name=name, dtype=dtype, use_bias=use_bias)


def _conv_side(model_config, image_side: int) -> int:
  """Side of the conv autoencoder's deepest feature map (28 -> 14 -> 7)."""
  return image_side // 2**len(model_config.conv_filters)


def _conv_encoder(model_config, image_shape, initializers):
  """Per level a stride-2 3x3 convolution (28 -> 14 -> 7) and `conv_blocks_per_level`
  stride-1 ones, then the ReLU bottleneck of `latent_dim` values: a Dense layer,
  or (spatial) a 3x3 convolution to latent_dim / side**2 channels, flattened."""
  images = keras.Input(shape=image_shape, name="images")
  x = images
  for filters in model_config.conv_filters:
    x = _conv(filters, initializers, strides=2)(x)
    for _ in range(model_config.conv_blocks_per_level):
      x = _conv(filters, initializers)(x)
  if model_config.conv_bottleneck == "spatial":
    side = _conv_side(model_config, image_shape[0])
    x = _conv(model_config.latent_dim // side**2, initializers)(x)
    latent = keras.layers.Flatten(name="encoder_output")(x)
  else:
    x = keras.layers.Flatten()(x)
    latent = keras.layers.Dense(model_config.latent_dim, activation="relu",
                                kernel_initializer=next(initializers),
                                name="encoder_output")(x)
  return keras.Model(images, latent, name="encoder")


def _conv_decoder(model_config, image_shape, initializers):
  """Back to the encoder's last feature map (a Dense layer, or for a spatial code
  a 3x3 convolution), then per level a stride-2 transposed convolution and
  `conv_blocks_per_level` stride-1 convolutions."""
  side = _conv_side(model_config, image_shape[0])
  latent = keras.Input(shape=(model_config.latent_dim,), name="latent")
  last_filters = model_config.conv_filters[-1]
  if model_config.conv_bottleneck == "spatial":
    x = keras.layers.Reshape((side, side, model_config.latent_dim // side**2))(latent)
    x = _conv(last_filters, initializers)(x)
  else:
    x = keras.layers.Dense(side * side * last_filters, activation="relu",
                           kernel_initializer=next(initializers))(latent)
    x = keras.layers.Reshape((side, side, last_filters))(x)
  for filters in reversed(model_config.conv_filters):
    x = keras.layers.Conv2DTranspose(filters, 3, strides=2, padding="same",
                                     activation="relu",
                                     kernel_initializer=next(initializers))(x)
    for _ in range(model_config.conv_blocks_per_level):
      x = _conv(filters, initializers)(x)
  images = _conv(image_shape[-1], initializers, activation="sigmoid", dtype=_OUTPUT_DTYPE)(x)
  return keras.Model(latent, images, name="decoder")


def _unet(model_config, image_shape, initializers):
  """U-Net: per level `unet_convs_per_level` 3x3 convolutions, 2x2 max-pooling
  down, 2x2 transposed convolutions up, and the features of each level
  concatenated into the decoder at the same resolution (no bottleneck).

  With `unet_space_to_depth=True` the same U-Net runs on the image's 2x2 pixel
  blocks (14x14x4, FFDNet's trick) and a 1x1 convolution gives the logits of
  each block's 4 pixels, put back in place: no convolution at 28x28.

  With `unet_use_bias=False` no layer adds a constant (bias-free, as in Mohan
  et al., ICLR 2020): ReLU, max-pooling and concatenation are positively
  homogeneous, so the output's logits scale with the input, logits(a * x) =
  a * logits(x) for a > 0, and the network cannot fit its biases to the noise
  levels it was trained on.
  """
  use_bias = model_config.unet_use_bias
  images = keras.Input(shape=image_shape, name="images")
  x = _space_to_depth(images) if model_config.unet_space_to_depth else images
  skips = []
  *upper_filters, deepest_filters = model_config.unet_filters
  for filters in upper_filters:
    for _ in range(model_config.unet_convs_per_level):
      x = _conv(filters, initializers, use_bias=use_bias)(x)
    skips.append(x)
    x = keras.layers.MaxPooling2D(2)(x)
  for index in range(model_config.unet_convs_per_level):
    last = index == model_config.unet_convs_per_level - 1
    x = _conv(deepest_filters, initializers, name=_UNET_DEEPEST_LAYER if last else None,
              use_bias=use_bias)(x)
  for filters, skip in zip(reversed(upper_filters), reversed(skips)):
    x = keras.layers.Conv2DTranspose(filters, 2, strides=2, padding="same", activation="relu",
                                     kernel_initializer=next(initializers),
                                     use_bias=use_bias)(x)
    x = keras.layers.Concatenate()([x, skip])
    for _ in range(model_config.unet_convs_per_level):
      x = _conv(filters, initializers, use_bias=use_bias)(x)
  if not model_config.unet_space_to_depth:
    denoised = _conv(image_shape[-1], initializers, activation="sigmoid", kernel_size=1,
                     dtype=_OUTPUT_DTYPE, use_bias=use_bias)(x)
    return keras.Model(images, denoised, name="unet_denoiser")
  # One logit per pixel of each 2x2 block, back to the image's layout, then the sigmoid.
  x = _conv(_BLOCK**2 * image_shape[-1], initializers, activation=None, kernel_size=1,
            dtype=_OUTPUT_DTYPE, use_bias=use_bias)(x)
  denoised = keras.layers.Activation("sigmoid", dtype=_OUTPUT_DTYPE)(
      _depth_to_space(x, image_shape))
  return keras.Model(images, denoised, name="unet_denoiser")


def _space_to_depth(images):
  """[28, 28, C] -> [14, 14, 4C]: each 2x2 block of pixels becomes one position's channels.

  Built from Reshape and Permute layers (not tf.nn.space_to_depth in a Lambda
  layer) so that the SavedModel, ONNX and LiteRT exports need nothing custom.
  """
  height, width, channels = images.shape[1:]
  x = keras.layers.Reshape((height // _BLOCK, _BLOCK, width // _BLOCK, _BLOCK * channels))(images)
  x = keras.layers.Permute((1, 3, 2, 4))(x)
  return keras.layers.Reshape((height // _BLOCK, width // _BLOCK, _BLOCK**2 * channels))(x)


def _depth_to_space(x, image_shape):
  """The inverse of `_space_to_depth`: [14, 14, 4C] -> [28, 28, C]."""
  height, width, channels = image_shape
  x = keras.layers.Reshape((height // _BLOCK, width // _BLOCK, _BLOCK, _BLOCK * channels),
                           dtype=_OUTPUT_DTYPE)(x)
  x = keras.layers.Permute((1, 3, 2, 4), dtype=_OUTPUT_DTYPE)(x)
  return keras.layers.Reshape(image_shape, dtype=_OUTPUT_DTYPE)(x)


def check_model_config(model_config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the bad field and the fix if `create_model` cannot build it."""
  if model_config.type not in MODEL_TYPES:
    raise errors.ConfigError(
        f"Unknown model.type {model_config.type!r}; valid types are "
        f"{', '.join(MODEL_TYPES)} (set --config.model.type=...).")
  if not 0 < model_config.latent_dim <= MAX_LATENT_DIM:
    raise errors.ConfigError(
        f"model.latent_dim={model_config.latent_dim} must be in 1..{MAX_LATENT_DIM:,} (a code "
        "far larger than the 784-pixel image only learns the identity), e.g. "
        "--config.model.latent_dim=64.")
  if model_config.type == "dense" and not all(
      units > 0 for units in model_config.dense_hidden_units):
    raise errors.ConfigError(
        f"model.dense_hidden_units={tuple(model_config.dense_hidden_units)} must all be > 0.")
  if model_config.type == "conv":
    # Each stride-2 convolution halves the side; 28 halves at most twice evenly.
    _check_filters("conv_filters", model_config.conv_filters, 2, "(28 -> 14 -> 7)", "(32,64)")
    if model_config.conv_blocks_per_level < 0:
      raise errors.ConfigError(f"model.conv_blocks_per_level={model_config.conv_blocks_per_level} "
                               "must be >= 0.")
    _check_conv_bottleneck(model_config)
  if model_config.type == "unet":
    # Levels: 28, 14, 7 (each pooling halves the side; 28 halves at most twice evenly);
    # 14 and 7 on the space-to-depth blocks.
    if model_config.unet_space_to_depth:
      _check_filters("unet_filters", model_config.unet_filters, 2,
                     "one per level (14, 7) with model.unet_space_to_depth", "(64,128)")
    else:
      _check_filters("unet_filters", model_config.unet_filters, 3,
                     "one per level (28, 14, 7)", "(32,64,128)")
    if not model_config.unet_convs_per_level > 0:
      raise errors.ConfigError(f"model.unet_convs_per_level={model_config.unet_convs_per_level} "
                               "must be > 0.")


def _check_conv_bottleneck(model_config) -> None:
  if model_config.conv_bottleneck not in CONV_BOTTLENECKS:
    raise errors.ConfigError(
        f"Unknown model.conv_bottleneck {model_config.conv_bottleneck!r}; valid bottlenecks are "
        f"{', '.join(CONV_BOTTLENECKS)} (set --config.model.conv_bottleneck=...).")
  # A spatial code is a side x side map: latent_dim must fill whole channels of it.
  side = _conv_side(model_config, 28)
  if model_config.conv_bottleneck == "spatial" and model_config.latent_dim % side**2:
    raise errors.ConfigError(
        f"model.latent_dim={model_config.latent_dim} must be a multiple of {side**2} with "
        f"conv_bottleneck=spatial and {len(model_config.conv_filters)} conv level(s) (a "
        f"{side}x{side} map), e.g. --config.model.latent_dim={side**2 * 8}.")


def _check_filters(field: str, filters, max_levels: int, levels: str, example: str) -> None:
  if not (1 <= len(filters) <= max_levels and all(count > 0 for count in filters)):
    raise errors.ConfigError(
        f"model.{field}={tuple(filters)} must be 1 to {max_levels} positive filter counts, "
        f"{levels}, e.g. --config.model.{field}={example}.")


def check_dtype_policy(name: str) -> None:
  if name not in DTYPE_POLICIES:
    raise errors.ConfigError(
        f"Unknown runtime.dtype_policy {name!r}; valid policies are {', '.join(DTYPE_POLICIES)} "
        "(set --config.runtime.dtype_policy=...).")


@contextlib.contextmanager
def _layers_dtype_policy(name: str):
  """Layers created inside take policy `name`; Keras's global default is restored after.

  Keras layers read the default policy when they are constructed, so setting
  it around model construction gives every layer the policy without threading
  a dtype through each constructor.
  """
  check_dtype_policy(name)
  previous = keras.config.dtype_policy()
  keras.config.set_dtype_policy(name)
  try:
    yield
  finally:
    keras.config.set_dtype_policy(previous)


def create_model(model_config: ml_collections.ConfigDict, image_shape: tuple[int, int, int],
                 seed: int = 0, dtype_policy: str = "float32") -> keras.Model:
  """Returns the model described by `config.model` (see the module docstring).

  Args:
    model_config: `config.model`.
    image_shape: shape of one image, e.g. `DataSource.image_shape`.
    seed: the same seed gives the same initial weights.
    dtype_policy: one of DTYPE_POLICIES (`config.runtime.dtype_policy`). The
      weights are float32 under every policy, so weights move freely between
      models built with different policies.
  """
  check_model_config(model_config)
  with _layers_dtype_policy(dtype_policy):
    return _create_model(model_config, tuple(image_shape), seed)


def _create_model(model_config, image_shape, seed):
  initializers = _kernel_initializers(seed)
  if model_config.type == "unet":
    return _unet(model_config, image_shape, initializers)
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
  """Images -> representation [batch, features], sharing `model`'s weights.

  The autoencoders' `encoder` sub-model (the latent), or for a U-Net its
  deepest features, flattened (7 * 7 * unet_filters[-1] values with 3 levels).
  """
  if any(layer.name == "encoder" for layer in model.layers):
    return model.get_layer("encoder")
  deepest = model.get_layer(_UNET_DEEPEST_LAYER).output
  return keras.Model(model.inputs, keras.layers.Flatten()(deepest), name="encoder")
