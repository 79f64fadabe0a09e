"""Cloud TPU with TPUStrategy: a v5litepod-8 or v4-8 (8 TPU cores on one host), or
Vertex AI's ct5lp-hightpu-4t with topology 2x2 (4 chips, 256 examples each).

The tutorial's model and noise, with what a TPU needs to be busy: a global
batch of 1024 (128 per core on 8 cores, the tutorial's batch on every core), the
learning rate scaled with the square root of the batch growth (8x the batch,
~2.8x the rate) so Adam stays stable, and many steps per host round trip.
Shapes are static everywhere (drop_remainder for training, padded evaluation).
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  """Returns the default config adapted to an 8-core Cloud TPU."""
  config = default.get_config()
  config.train.batch_size = 1024
  config.train.eval_batch_size = 1024
  config.train.learning_rate = 2.8e-3
  # 58 steps make an epoch at batch 1024: one host round trip per epoch.
  config.train.steps_per_loop = 58
  config.runtime.strategy = "tpu"
  config.runtime.jit_compile = True
  # TPUs' matrix units compute in bfloat16; the weights stay float32.
  config.runtime.dtype_policy = "mixed_bfloat16"
  return config
