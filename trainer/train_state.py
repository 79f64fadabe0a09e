"""The train state of one run: model, optimizer, checkpoint and checkpointer, built once.

`create_train_state` builds them under the strategy and restores the chief's
newest checkpoint; `TrainState.save(step)` records the step and saves, in one
call. The checkpointed step is the only record of where a run is. The trainer
(`trainer.train`) and the benchmark harness (`trainer.benchmarking.harness`)
build their state here, so the benchmark times the trainer's own set-up.
"""

import dataclasses

from absl import logging
import keras
import ml_collections
import tensorflow as tf

from input_pipeline import data_source
from trainer import checkpoints
from trainer import models
from trainer import optimizers
from trainer import strategy as strategy_lib


@dataclasses.dataclass(frozen=True)
class TrainState:
  """What training updates and what a checkpoint holds."""
  model: keras.Model
  optimizer: keras.optimizers.Optimizer
  checkpoint: tf.train.Checkpoint
  checkpointer: checkpoints.Checkpointer

  @property
  def step(self) -> int:
    """Global steps trained so far (restored from the checkpoint on a rerun)."""
    return int(self.checkpoint.step.numpy())

  def save(self, step: int) -> None:
    """Records `step` as the steps trained and saves a checkpoint numbered by it."""
    self.checkpoint.step.assign(step)
    self.checkpointer.save(step)


def create_train_state(config: ml_collections.ConfigDict, data: data_source.DataSource,
                       checkpoint_dir: str | None, strategy, last_step: int) -> TrainState:
  """Model, optimizer and checkpointer, restored from the chief's latest checkpoint if any.

  Args:
    config: the run's config.
    data: its data source (the image shape).
    checkpoint_dir: the chief's checkpoint directory; None for a state that
      is never saved nor restored (the benchmark's).
    strategy: the run's distribution strategy; variables are made in its scope.
    last_step: the run's last global step, for learning-rate schedules.
  """
  with strategy.scope():
    model = models.create_model(config.model, data.image_shape, config.seed,
                                config.runtime.dtype_policy)
    optimizer = optimizers.create_optimizer(config.train, last_step,
                                            config.runtime.dtype_policy)
    # Create the slot variables now, so a checkpoint restores them immediately.
    optimizer.build(model.trainable_variables)
  checkpoint = tf.train.Checkpoint(
      model=model, optimizer=optimizer,
      step=tf.Variable(0, dtype=tf.int64, trainable=False, name="step"))
  checkpointer = None
  if checkpoint_dir is not None:
    checkpointer = checkpoints.Checkpointer(
        checkpoint, checkpoint_dir, is_chief=strategy_lib.is_chief(strategy),
        max_to_keep=config.train.checkpoints_to_keep, task_name=strategy_lib.task_name(strategy))
    checkpointer.remove_stale_temporaries()
    restored = checkpointer.restore_latest()
    if restored:
      logging.info("%s resumed from %s.", strategy_lib.task_name(strategy), restored)
  # The config, not the checkpoint, decides the learning rate: a rerun with a
  # new train.learning_rate (accepted by `validation.check_resumable`) uses it.
  # (A schedule is built from the config, and stays.)
  if config.train.learning_rate_schedule == "constant":
    optimizer.learning_rate = config.train.learning_rate
  return TrainState(model, optimizer, checkpoint, checkpointer)
