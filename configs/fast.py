"""Fastest to the tutorial's quality on a CPU: a 14k-parameter U-Net.

One convolution per level, 8-16-32 filters: it passes the tutorial's 50-epoch
test PSNR (19.8 dB) within its first epoch, and the dense model's 50-epoch
result (20.2 dB) within two or so, at a fraction of the tutorial's wall time
(`scripts/benchmark.py --config=configs/fast.py --time_to_quality`). Without
XLA: on CPU, TensorFlow's own convolution kernels trained it at 7,677
examples/s against 4,886 with `runtime.jit_compile` (2-core EPYC, float32).
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  """Returns the small, fast U-Net config."""
  config = default.get_config()
  config.model.type = "unet"
  config.model.unet_filters = (8, 16, 32)
  config.model.unet_convs_per_level = 1
  config.train.num_epochs = 5
  config.runtime.jit_compile = False  # Slower for convolutions on a CPU (see above).
  return config
