"""Tiny, fast configuration for tests: a slice of MNIST, one short epoch."""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  """Returns a config that trains in seconds on a CPU."""
  config = default.get_config()
  config.train_split = "train[:2048]"
  config.eval_split = "test[:256]"
  config.train.num_epochs = 1
  config.train.batch_size = 64
  config.train.eval_batch_size = 128
  config.train.shuffle_buffer_size = 2048
  config.train.steps_per_loop = 8
  # XLA compiles each function for seconds, more than these runs train: tests
  # of the XLA paths turn it on themselves.
  config.runtime.jit_compile = False
  return config
