"""Blind U-Net for every noise type: configs/blind_unet.py trained on a mixture of types.

Each training image draws its own noise type (Gaussian, salt and pepper or
masking) and its own level in noise.factor_range = [0, 0.8] (the Gaussian std,
or the fraction of pixels flipped or zeroed), which covers every level the
evaluation scores. Evaluation during training uses the reference Gaussian 0.4.

Measured (2026-12-03, all 10,000 test images, docs/evaluation.md "The blind
U-Nets"): above the best tuned baseline at every evaluated level of all three
types, by 1.42 dB (Gaussian 0.1: 30.64 against the wavelet filter's 29.23) to
12.45 dB (salt and pepper 0.05), and outside the training range at Gaussian
0.9 and 1.0 and masking 0.9 (+2.56, +2.09, +2.61 dB). Against the Gaussian-only
configs/blind_unet.py it costs 0.25 to 0.34 dB on Gaussian noise (22.70 against
22.95 dB at 0.4), and gains 11 to 15 dB on masking 0.1 to 0.75. Eval PSNR at 0.4 during
training: 21.03 (epoch 1), 22.01 (5), 22.50 (10), 22.65 (15), 22.70 (20).

Wall time: 20 epochs in 33 minutes with
--config.runtime.dtype_policy=mixed_bfloat16 on 2 cores with bf16 units, for
its first 15 minutes sharing them with an evaluation (alone: about 85 s an
epoch).
"""

import ml_collections

from configs import blind_unet


def get_config() -> ml_collections.ConfigDict:
  """Returns the blind U-Net config trained on every noise type."""
  config = blind_unet.get_config()
  config.noise.mixture_types = ("gaussian", "salt_and_pepper", "masking")
  return config
