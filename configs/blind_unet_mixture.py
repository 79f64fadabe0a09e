"""Blind U-Net for every noise type: configs/blind_unet.py trained on a mixture of types.

Each training image draws its own noise type (Gaussian, salt and pepper or
masking) and its own level in noise.factor_range = [0, 0.8] (the Gaussian std,
or the fraction of pixels flipped or zeroed), which covers every level the
evaluation scores. Evaluation during training uses the reference Gaussian 0.4.
"""

import ml_collections

from configs import blind_unet


def get_config() -> ml_collections.ConfigDict:
  """Returns the blind U-Net config trained on every noise type."""
  config = blind_unet.get_config()
  config.noise.mixture_types = ("gaussian", "salt_and_pepper", "masking")
  return config
