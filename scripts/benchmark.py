"""Benchmark: input-pipeline and training throughput for a config, printed as numbers.

  python scripts/benchmark.py --config=configs/default.py [--config.train.batch_size=256]
      [--num_epochs=3] [--num_workers=2]

Measures, on the current machine and strategy:
- input pipeline alone: training batches per second and images per second, after
  the first epoch filled the cache;
- training: examples per second of the training loop (train_steps), excluding
  the first call, which traces the tf.function;
- with --num_workers=N > 1, training again as a multi-worker job of N local
  worker processes (multi_worker_mirrored, TF_CONFIG on localhost ports), same
  global batch: the chief's examples per second.
"""

import json
import os
import subprocess
import sys
import time

from absl import app
from absl import flags
from ml_collections import config_flags
import tensorflow as tf

from input_pipeline import data_source
from input_pipeline import pipeline
from trainer import local_cluster
from trainer import models
from trainer import strategy as strategy_lib
from trainer import train
from trainer import validation

_NUM_EPOCHS = flags.DEFINE_integer("num_epochs", 3, "Epochs to time for each measurement.")
_NUM_WORKERS = flags.DEFINE_integer(
    "num_workers", 1, "If > 1, also time training as a job of this many local worker processes.")
_TRAINING_ONLY = flags.DEFINE_bool(
    "training_only", False, "Time training only and print it as JSON (the worker processes' mode).")
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


def benchmark_training(strategy, data, config, num_epochs: int) -> float:
  """Prints and returns the training loop's examples per second."""
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
  keep_going = tf.constant(0.0)  # No stop request.
  float(train_steps(iterator, chunk, keep_going)["loss"])  # Trace and fill the cache.
  num_calls = steps * num_epochs // config.train.steps_per_loop
  start = time.perf_counter()
  for _ in range(num_calls):
    loss = train_steps(iterator, chunk, keep_going)["loss"]
  float(loss)
  seconds = time.perf_counter() - start
  examples_per_second = num_calls * config.train.steps_per_loop * config.train.batch_size / seconds
  print(f"training ({config.model.type}, {config.runtime.strategy}, "
        f"{strategy_lib.task_name(strategy)}, {strategy.num_replicas_in_sync} replica(s), "
        f"batch {config.train.batch_size}): {examples_per_second:.0f} examples/s, "
        f"{steps * config.train.batch_size / examples_per_second:.2f} s/epoch")
  return examples_per_second


def benchmark_local_workers(num_workers: int) -> float:
  """Times training in `num_workers` worker processes of this script; returns the chief's examples/s."""
  flags_through = [arg for arg in sys.argv[1:] if not arg.startswith(("--num_workers",
                                                                       "--training_only"))]
  command = [sys.executable, os.path.abspath(__file__), *flags_through, "--training_only",
             "--config.runtime.strategy=multi_worker_mirrored"]
  processes = [subprocess.Popen(command, env=dict(os.environ, TF_CONFIG=tf_config),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for tf_config in local_cluster.tf_configs(num_workers)]
  outputs = [process.communicate() for process in processes]
  for index, (process, (_, stderr)) in enumerate(zip(processes, outputs, strict=True)):
    if process.returncode:
      raise RuntimeError(f"benchmark worker {index} failed: {stderr.strip()[-2000:]}")
  chief = json.loads(outputs[0][0].strip().splitlines()[-1])
  print(f"training ({num_workers} local worker processes, multi_worker_mirrored, "
        f"{chief['replicas']} replica(s), batch {chief['batch_size']}): "
        f"{chief['examples_per_second']:.0f} examples/s")
  return chief["examples_per_second"]


def main(argv):
  del argv
  config = flags.FLAGS.config
  validation.validate_config(config)
  # The strategy first: splitting the CPU into logical devices must happen
  # before any other TensorFlow op runs.
  strategy = strategy_lib.get_strategy(config.runtime)
  validation.validate_batch_sizes(config, strategy.num_replicas_in_sync)
  data = data_source.create_data_source(config)
  if _TRAINING_ONLY.value:
    examples_per_second = benchmark_training(
        strategy, data, config.copy_and_resolve_references(), _NUM_EPOCHS.value)
    print(json.dumps({"examples_per_second": examples_per_second,
                      "replicas": strategy.num_replicas_in_sync,
                      "batch_size": config.train.batch_size}))
    return
  benchmark_input_pipeline(data, config.copy_and_resolve_references(), _NUM_EPOCHS.value)
  single = benchmark_training(strategy, data, config.copy_and_resolve_references(),
                              _NUM_EPOCHS.value)
  if _NUM_WORKERS.value > 1:
    multi = benchmark_local_workers(_NUM_WORKERS.value)
    print(f"{_NUM_WORKERS.value} local workers / 1 process: {multi / single:.2f}x")


if __name__ == "__main__":
  app.run(main)
