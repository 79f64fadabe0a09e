"""This trainer's side of scripts/benchmark.py: (b), and what bounds it.

- this trainer's training loop (`TrainingLoop`, a few epochs at a time, so it
  can alternate with `tutorial.TutorialFit` in one process), its evaluation
  pass and its input pipeline alone;
- a large float32 matmul, this machine's practical FLOP/s ceiling, and the
  model's FLOPs per training example, to say how close training comes to it;
- a description of the machine.

Every timing excludes the first epoch or call, which traces functions and
fills caches.
"""

import os
import platform
import time

import keras
import tensorflow as tf

from input_pipeline import noise
from input_pipeline import pipeline
from trainer import models
from trainer import steps
from trainer import train
from trainer import train_state


class TrainingLoop:
  """(b): the trainer's model, optimizer, input pipeline and `train_steps`, built once.

  `examples_per_second` times whole `train.steps_per_loop` chunks, as the
  trainer runs them; the first chunk (tracing, XLA compilation, the input
  cache) runs at construction.
  """

  def __init__(self, strategy, data, config, max_epochs: int):
    config = config.copy_and_resolve_references()
    config.train.num_epochs = max_epochs + 1
    self._config, self._data = config, data
    # The trainer's own train state, without a checkpoint directory.
    state = train_state.create_train_state(config, data, None, strategy,
                                           train.total_steps(config, data))
    self._iterator = iter(strategy.distribute_datasets_from_function(
        lambda context: pipeline.create_dataset(data, config, "train", context)))
    self._optimizer = state.optimizer
    self._train_steps = steps.make_train_function(strategy, state.model, state.optimizer, config)
    self._step = 0
    self._run_chunks(1)  # Trace, compile, fill the cache.

  def _run_chunks(self, num_chunks: int) -> None:
    """`num_chunks` chunks through `steps.run_chunk`, as the trainer runs them."""
    num_steps = self._config.train.steps_per_loop
    for _ in range(num_chunks):
      steps.run_chunk(self._train_steps, self._iterator, self._step, num_steps,
                      epoch=self._step // self._data.steps_per_epoch, stop_requested=False)
      self._step += num_steps

  @property
  def steps_trained(self) -> int:
    return int(self._optimizer.iterations)

  def examples_per_second(self, num_epochs: int) -> float:
    """Examples per second over about `num_epochs` epochs (whole chunks, at least one)."""
    steps_per_loop = self._config.train.steps_per_loop
    num_chunks = max(1, self._data.steps_per_epoch * num_epochs // steps_per_loop)
    start = time.perf_counter()
    self._run_chunks(num_chunks)
    seconds = time.perf_counter() - start
    return num_chunks * steps_per_loop * self._config.train.batch_size / seconds


def time_evaluation(strategy, data, config, num_passes: int = 2) -> float:
  """Seconds of one evaluation pass over the eval split (loss, PSNR, SSIM), after a warm-up pass."""
  with strategy.scope():
    model = models.create_model(config.model, data.image_shape, config.seed,
                                config.runtime.dtype_policy)
  dataset = strategy.distribute_datasets_from_function(
      lambda context: pipeline.create_dataset(data, config, "eval", context))
  evaluate = steps.make_eval_function(strategy, model, config)
  num_steps = tf.constant(data.num_eval_steps)
  float(evaluate(iter(dataset), num_steps)["loss"])  # Trace, fill the cache.
  start = time.perf_counter()
  for _ in range(num_passes):
    float(evaluate(iter(dataset), num_steps)["loss"])
  return (time.perf_counter() - start) / num_passes


def time_input_pipeline(data, config, num_epochs: int) -> tuple[float, float]:
  """The training input pipeline alone, after its first epoch: (examples/s, core us/example).

  The second number is the CPU time of this whole process (`time.process_time`,
  every thread: tf.data's workers included) per example, in microseconds: the
  pipeline's cost in cores, which on a small machine training shares with it.
  Nothing else runs in the process meanwhile, so it is the pipeline's alone.
  """
  config = config.copy_and_resolve_references()
  config.train.num_epochs = num_epochs + 1
  iterator = iter(pipeline.create_dataset(data, config, "train"))
  for _ in range(data.steps_per_epoch):  # First epoch: reads, decodes and caches.
    next(iterator)
  start, start_cpu = time.perf_counter(), time.process_time()
  for _ in range(data.steps_per_epoch * num_epochs):
    next(iterator)
  seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
  num_examples = data.steps_per_epoch * num_epochs * config.train.batch_size
  return num_examples / seconds, cpu_seconds / num_examples * 1e6


def time_input_pipeline_by_generator(data, config, num_epochs: int) -> dict[str, tuple[float, float]]:
  """`time_input_pipeline` with each noise generator the config's noise can use.

  The config's own generator first; the others with only `noise.generator`
  changed, where the noise config accepts them (the table generator needs
  Gaussian noise).
  """
  own = noise.generator(config.noise)
  results = {own: time_input_pipeline(data, config, num_epochs)}
  for generator in noise.GENERATORS:
    other = config.copy_and_resolve_references()
    other.noise.generator = generator
    try:
      noise.validate_noise_config(other.noise)
    except ValueError:
      continue
    if generator not in results:
      results[generator] = time_input_pipeline(data, other, num_epochs)
  return results


def time_data_service_pipeline(data, config, num_epochs: int,
                               num_workers: int = 2) -> tuple[float, float]:
  """`time_input_pipeline` through a tf.data service on localhost, started here.

  A dispatcher and `num_workers` workers run in this process, so the CPU time
  per example counts the workers' pipelines and the transfer to the client.
  """
  service = tf.data.experimental.service
  dispatcher = service.DispatchServer(service.DispatcherConfig(port=0))
  workers = [service.WorkerServer(service.WorkerConfig(
      dispatcher_address=dispatcher.target.split("://")[1])) for _ in range(num_workers)]
  config = config.copy_and_resolve_references()
  config.input.data_service_address = dispatcher.target
  try:
    return time_input_pipeline(data, config, num_epochs)
  finally:
    for server in (*workers, dispatcher):
      server.stop()


def matmul_flops_per_second(size: int = 2048, repeats: int = 20) -> float:
  """float32 FLOP/s of a [size, size] matmul, the machine's practical ceiling."""
  a = tf.random.stateless_uniform([size, size], seed=[1, 2])
  b = tf.random.stateless_uniform([size, size], seed=[3, 4])
  matmul = tf.function(lambda x, y: tf.linalg.matmul(x, y))
  matmul(a, b).numpy()  # Trace and warm up.
  start = time.perf_counter()
  for _ in range(repeats):
    result = matmul(a, b)
  result.numpy()
  return 2.0 * size**3 * repeats / (time.perf_counter() - start)


def forward_flops_per_example(model: keras.Model) -> int:
  """Multiply-add FLOPs (2 per multiply-add) of one example through the model's layers.

  Counts Dense, Conv2D and Conv2DTranspose layers, which hold nearly all the
  arithmetic; activations, biases and reshapes are left out.
  """
  return sum(_layer_flops(layer) for layer in _leaf_layers(model))


def _layer_flops(layer) -> int:
  if isinstance(layer, keras.layers.Dense):
    return 2 * layer.kernel.shape[0] * layer.kernel.shape[1]
  if isinstance(layer, keras.layers.Conv2DTranspose):
    # Every input pixel scatters a kh x kw x out_channels patch.
    kernel_h, kernel_w, out_channels, in_channels = layer.kernel.shape
    _, height, width, _ = layer.input.shape
    return 2 * kernel_h * kernel_w * in_channels * out_channels * height * width
  if isinstance(layer, keras.layers.Conv2D):
    kernel_h, kernel_w, in_channels, out_channels = layer.kernel.shape
    _, height, width, _ = layer.output.shape
    return 2 * kernel_h * kernel_w * in_channels * out_channels * height * width
  return 0


def training_flops_per_example(model: keras.Model) -> int:
  """Forward plus backward FLOPs of one training example.

  The backward pass of each layer costs its forward FLOPs twice, once for the
  weights' gradient and once for its input's, except the first layer: its
  input is the image, whose gradient nobody asks for, so it is never computed.
  """
  layer_flops = [flops for flops in map(_layer_flops, _leaf_layers(model)) if flops]
  return 3 * sum(layer_flops) - layer_flops[0]


def _leaf_layers(model: keras.Model):
  for layer in model.layers:
    if isinstance(layer, keras.Model):
      yield from _leaf_layers(layer)
    else:
      yield layer


def machine_description() -> dict:
  """CPU model, cores, TensorFlow version and devices."""
  cpu_model = platform.processor() or platform.machine()
  if os.path.exists("/proc/cpuinfo"):
    with open("/proc/cpuinfo") as cpuinfo:
      names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    cpu_model = names[0] if names else cpu_model
  return {
      "cpu": cpu_model,
      "cores": os.cpu_count(),
      "tensorflow": tf.__version__,
      "devices": [device.name for device in tf.config.list_logical_devices()],
  }
