"""A U-Net on 2x2 blocks of pixels: most of the U-Net's quality in a fraction of its time.

The image goes through space-to-depth (28x28x1 -> 14x14x4, as FFDNet does) and
back at the output, so the U-Net has no 28x28 convolutions, where
configs/unet.py spends most of its FLOPs: two levels of 48 and 96 filters,
228,148 parameters, 739 training examples/s on this project's 2-core AVX2 CPU
(2026-12-06, float32) against 111 for configs/unet.py. Eight epochs at a
cosine-decayed learning rate from 2e-3.

What was tried, chosen on a validation slice held out of the training split
(train[:54000] for training, train[54000:] for validation; mean PSNR on the
held-out 6,000 images; docs/performance.md#time-to-23-db has the table):
- Space-to-depth against a 28x28 U-Net of similar cost: 16-48-128 filters train
  at 336 examples/s, 32-64-128 at 200; space-to-depth 64-128 at 351, 48-96 at 739.
- 48-96 for 8 epochs reached 22.28 dB (21.48 after one, 22.12 after four, 500 s
  in); 64-128 for 4 epochs, in about the time of those four, reached 22.08.
- Float32 without XLA, as configs/unet.py: mixed_bfloat16 is far slower on a CPU
  without bf16 instructions (configs/unet.py at under 30 examples/s here), and
  XLA's convolutions were slower on the earlier machine (configs/unet.py).
- A loss on each image's PSNR, or mse, instead of bce: both collapsed to an
  all-black output (9.80 dB) within the first epoch of configs/fast.py.

On the test set (2026-12-06, scripts/benchmark.py --time_to_quality): 22.31 dB
after its 8 epochs, 701 s in, 3.3x the tutorial's 50 epochs (213 s; a second,
slower round: 889 s against 242, 3.7x); 22.29 dB within 3x and 21.85 within 1x. That is 0.69 dB short of 23.0 and 0.76 short of
configs/unet.py's 23.07 (docs/performance.md#time-to-23-db has the frontier).
"""

import ml_collections

from configs import unet


def get_config() -> ml_collections.ConfigDict:
  """Returns the U-Net config on space-to-depth blocks, trained for 8 epochs."""
  config = unet.get_config()
  config.model.unet_space_to_depth = True
  config.model.unet_filters = (48, 96)
  config.train.num_epochs = 8
  config.train.learning_rate = 2e-3
  return config
