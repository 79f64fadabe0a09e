"""The optimizer's learning-rate schedules, and that a restored optimizer continues on its curve."""

import numpy as np
import pytest
import tensorflow as tf

from configs import test as test_config
from trainer import models
from trainer import optimizers


def _optimizer(schedule, num_train_steps=100, learning_rate=1e-3):
  config = test_config.get_config().train
  config.learning_rate = learning_rate
  config.learning_rate_schedule = schedule
  return optimizers.create_optimizer(config, num_train_steps)


def test_constant_schedule():
  optimizer = _optimizer("constant")
  optimizer.iterations.assign(70)
  assert optimizers.current_learning_rate(optimizer) == pytest.approx(1e-3)


@pytest.mark.parametrize("step, expected", [(0, 1e-3), (50, 0.5e-3), (100, 0.0), (150, 0.0)])
def test_cosine_schedule_decays_to_zero_over_the_run(step, expected):
  optimizer = _optimizer("cosine")
  optimizer.iterations.assign(step)
  assert optimizers.current_learning_rate(optimizer) == pytest.approx(expected, abs=1e-9)


def test_restored_optimizer_continues_the_schedule(tmp_path):
  model = models.create_model(test_config.get_config().model, (28, 28, 1))
  optimizer = _optimizer("cosine")
  optimizer.build(model.trainable_variables)
  images = tf.random.stateless_uniform((4, 28, 28, 1), seed=[1, 2])
  for _ in range(30):
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(tf.square(model(images) - images))
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                  model.trainable_variables))
  path = tf.train.Checkpoint(model=model, optimizer=optimizer).save(str(tmp_path / "ckpt"))

  restored_model = models.create_model(test_config.get_config().model, (28, 28, 1))
  restored = _optimizer("cosine")
  restored.build(restored_model.trainable_variables)
  tf.train.Checkpoint(model=restored_model, optimizer=restored).restore(path)
  assert int(restored.iterations.numpy()) == 30
  np.testing.assert_allclose(optimizers.current_learning_rate(restored),
                             optimizers.current_learning_rate(optimizer), rtol=1e-6)
  assert optimizers.current_learning_rate(restored) < 1e-3 * 0.85


def test_unknown_schedule_is_rejected():
  with pytest.raises(ValueError, match="'linear'; valid schedules are constant, cosine"):
    _optimizer("linear")
