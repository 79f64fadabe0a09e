"""Convolutional variant: Conv2D / Conv2DTranspose encoder-decoder, same latent size."""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  """Returns the default config with the convolutional model."""
  config = default.get_config()
  config.model.type = "conv"
  return config
