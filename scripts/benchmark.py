"""Benchmark: input-pipeline and training throughput for a config, printed as numbers.

  python scripts/benchmark.py --config=configs/default.py [--config.train.batch_size=256]
      [--num_epochs=3]

Measures, on the current machine and strategy:
- input pipeline alone: training batches per second and images per second, after
  the first epoch filled the cache;
- training: examples per second of the training loop (train_steps), excluding
  the first call, which traces the tf.function.
"""

import time

from absl import app
from absl import flags
from ml_collections import config_flags
import tensorflow as tf

from input_pipeline import data_source
from input_pipeline import pipeline
from trainer import models
from trainer import strategy as strategy_lib
from trainer import train
from trainer import validation

_NUM_EPOCHS = flags.DEFINE_integer("num_epochs", 3, "Epochs to time for each measurement.")
config_flags.DEFINE_config_file("config", "configs/default.py", "Configuration file.",
                                lock_config=True)


def benchmark_input_pipeline(data, config, num_epochs: int) -> None:
  config.train.num_epochs = num_epochs + 1
  dataset = pipeline.create_dataset(data, config, "train")
  steps = data.steps_per_epoch
  iterator = iter(dataset)
  start = time.perf_counter()
  for _ in range(steps):  # First epoch: reads, decodes and caches.
    next(iterator)
  first_epoch_seconds = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(steps * num_epochs):
    next(iterator)
  seconds = time.perf_counter() - start
  print(f"input pipeline: first epoch {first_epoch_seconds:.2f} s; then "
        f"{steps * num_epochs / seconds:.0f} batches/s, "
        f"{steps * num_epochs * config.train.batch_size / seconds:.0f} images/s, "
        f"{seconds / num_epochs:.2f} s/epoch")


def benchmark_training(strategy, data, config, num_epochs: int) -> None:
  config.train.num_epochs = num_epochs + 1
  with strategy.scope():
    model = models.create_model(config.model, data.image_shape, config.seed)
    optimizer = train.create_optimizer(config.train)
    optimizer.build(model.trainable_variables)
  dataset = strategy.distribute_datasets_from_function(
      lambda context: pipeline.create_dataset(data, config, "train", context))
  iterator = iter(dataset)
  train_steps = train.make_train_function(strategy, model, optimizer, config)
  steps = data.steps_per_epoch
  chunk = tf.constant(config.train.steps_per_loop)
  float(train_steps(iterator, chunk)["loss"])  # Trace and fill the cache.
  num_calls = steps * num_epochs // config.train.steps_per_loop
  start = time.perf_counter()
  for _ in range(num_calls):
    loss = train_steps(iterator, chunk)["loss"]
  float(loss)
  seconds = time.perf_counter() - start
  examples = num_calls * config.train.steps_per_loop * config.train.batch_size
  print(f"training ({config.model.type}, {config.runtime.strategy}, "
        f"{strategy.num_replicas_in_sync} replica(s), batch {config.train.batch_size}): "
        f"{examples / seconds:.0f} examples/s, {steps * config.train.batch_size / (examples / seconds):.2f} s/epoch")


def main(argv):
  del argv
  config = flags.FLAGS.config
  validation.validate_config(config)
  # The strategy first: splitting the CPU into logical devices must happen
  # before any other TensorFlow op runs.
  strategy = strategy_lib.get_strategy(config.runtime)
  validation.validate_batch_sizes(config, strategy.num_replicas_in_sync)
  data = data_source.create_data_source(config)
  benchmark_input_pipeline(data, config.copy_and_resolve_references(), _NUM_EPOCHS.value)
  benchmark_training(strategy, data, config.copy_and_resolve_references(), _NUM_EPOCHS.value)


if __name__ == "__main__":
  app.run(main)
