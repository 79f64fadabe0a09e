"""Blind U-Net: the configs/unet.py model trained on Gaussian noise of any level in [0, 0.8].

Each training image draws its own Gaussian level from noise.factor_range, so one
model serves every level the evaluation scores (0.1 to 0.8) without being told
the level; evaluation during training still uses the reference level
noise.factor = 0.4, so its numbers compare with the single-level U-Net's.
"""

import ml_collections

from configs import unet


def get_config() -> ml_collections.ConfigDict:
  """Returns the U-Net config with blind (per-image level) Gaussian training noise."""
  config = unet.get_config()
  config.noise.factor_range = (0.0, 0.8)
  return config
