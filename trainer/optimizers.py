"""The optimizer and its learning-rate schedule, built from `config.train`."""

import keras
import ml_collections
import tensorflow as tf

from trainer import errors

LEARNING_RATE_SCHEDULES = ("constant", "cosine")


def check_learning_rate_schedule(name: str) -> None:
  if name not in LEARNING_RATE_SCHEDULES:
    raise errors.ConfigError(
        f"Unknown train.learning_rate_schedule {name!r}; valid schedules are "
        f"{', '.join(LEARNING_RATE_SCHEDULES)} (set --config.train.learning_rate_schedule=...).")


def create_optimizer(train_config: ml_collections.ConfigDict, num_train_steps: int,
                     dtype_policy: str = "float32") -> keras.optimizers.Optimizer:
  """Adam at `train.learning_rate`, constant or cosine-decayed to 0 over `num_train_steps`.

  The schedule is a function of the optimizer's own step counter, which the
  checkpoint holds, so a resumed run continues on the same curve. Under the
  mixed_float16 policy Adam is wrapped in a dynamic loss-scale optimizer:
  float16 gradients of an unscaled loss underflow to 0. (bfloat16 has
  float32's exponent range and needs no scaling.)
  """
  check_learning_rate_schedule(train_config.learning_rate_schedule)
  learning_rate = train_config.learning_rate
  if train_config.learning_rate_schedule == "cosine":
    learning_rate = keras.optimizers.schedules.CosineDecay(
        learning_rate, decay_steps=max(1, num_train_steps))
  optimizer = keras.optimizers.Adam(learning_rate=learning_rate)
  if dtype_policy == "mixed_float16":
    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
  return optimizer


def current_learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
  """The learning rate of the optimizer's next step (schedules included)."""
  return float(tf.convert_to_tensor(optimizer.learning_rate))
