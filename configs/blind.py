"""Blind denoiser: the dense model trained on Gaussian noise of any level in [0, 0.8].

Each training image draws its own noise level, so one model serves every level
instead of the one it was trained for; evaluation during training still uses
the reference level noise.factor = 0.4, so its numbers compare with the
default run's. For a mixture of noise types as well, add e.g.
--config.noise.mixture_types='("gaussian", "salt_and_pepper", "masking")'.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  """Returns the default config with blind (per-image level) training noise."""
  config = default.get_config()
  config.noise.factor_range = (0.0, 0.8)
  return config
