"""U-Net: skip connections and no bottleneck, for the best denoising.

A 1.05M-parameter U-Net (48-96-192 filters, two 3x3 convolutions per level)
trained at batch 64 with a cosine-decayed learning rate over 20 epochs. Why
wider and why batch 64: the 32-64-128 U-Net (466k parameters, batch 128)
levelled off at 22.83 dB here with its training and test PSNR equal to the
end, so it was short of capacity and of updates, not overfitting; at batch 64
an epoch makes twice the updates for about the same compute (its first epoch
scored what batch 128 scored after two).
It costs about 350x the dense model's FLOPs per example (1,021 against 2.9
MFLOP per training example): on a laptop CPU an epoch takes minutes, not
seconds. On 2 cores of a CPU with bf16 instructions an epoch took about 100 s
with `--config.runtime.dtype_policy=mixed_bfloat16` and would take about 3
minutes in float32 (640 against 356 examples/s); XLA makes it slower on CPU.
`encode` returns its deepest (7x7x192) features.
"""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  """Returns the default config with the U-Net model."""
  config = default.get_config()
  config.model.type = "unet"
  config.model.unet_filters = (48, 96, 192)
  config.train.batch_size = 64
  config.train.num_epochs = 20
  config.train.learning_rate_schedule = "cosine"
  # A SIGTERM (preemption) is acted on between chunks of steps: 50 of this
  # model's steps took up to 30 s on a loaded 2-core CPU, 10 keep the wait short.
  config.train.steps_per_loop = 10
  # TensorFlow's own (oneDNN) convolutions beat XLA's on a CPU: 356 against 302
  # examples/s on 2 cores (README, "Measured here"). Set it to true on a GPU.
  config.runtime.jit_compile = False
  return config
