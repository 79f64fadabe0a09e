"""The compiled step functions of the training job, and the loop over one epoch's chunks.

`make_train_function` returns `train_steps(iterator, num_steps, stop_requested)`:
`num_steps` global steps in one `tf.function` call, each `strategy.run(train_step)`
with the loss averaged over the global batch (on one device with XLA the whole
chunk of steps is one XLA computation instead). `make_eval_function` returns
the evaluation pass over the noisy eval split. `run_chunk` calls `train_steps`
for one chunk from Python and stops on a non-finite loss. `trainer.train` builds
them once and hands them the model.
"""

import functools
import math

import keras
import tensorflow as tf

from trainer import errors
from trainer import metrics
from trainer import strategy as strategy_lib

# Eval metrics, summed per example in `eval_step` and averaged over the split.
EVAL_METRICS = ("loss", "mse", "psnr", "ssim", "noisy_psnr")


def compute_gradients(model: keras.Model, optimizer: keras.optimizers.Optimizer, batch,
                      loss_name: str,
                      global_batch_size: int) -> tuple[list[tf.Tensor], dict[str, tf.Tensor]]:
  """Forward and backward pass on one replica's share of the global batch.

  Returns the gradients (of the loss as `optimizer.scale_loss` scales it: by
  the loss scale under mixed_float16, which `apply_gradients` divides out
  again; unchanged otherwise) and this replica's contribution to the
  global-batch means: summing the outputs over replicas gives the mean loss
  and PSNR.
  """
  noisy, clean = batch
  with tf.GradientTape() as tape:
    denoised = model(noisy, training=True)
    per_example_loss = metrics.per_example_loss(clean, denoised, loss_name)
    # Divide by the global batch, not the replica's: gradients summed over
    # replicas are then the gradient of the global mean.
    loss = tf.nn.compute_average_loss(per_example_loss, global_batch_size=global_batch_size)
    scaled_loss = optimizer.scale_loss(loss)
  gradients = tape.gradient(scaled_loss, model.trainable_variables)
  psnr = tf.nn.compute_average_loss(metrics.per_example_psnr(clean, denoised),
                                    global_batch_size=global_batch_size)
  return gradients, {"loss": loss, "psnr": psnr}


def eval_step(model: keras.Model, batch, loss_name: str) -> dict[str, tf.Tensor]:
  """Sums of per-example metrics over one replica's eval batch, and its number of real examples.

  `batch` is (noisy, clean, weight); padding examples (weight 0) count for
  nothing. They are masked with `tf.where`, not multiplied by 0: a blank
  padding image has an infinite PSNR, and inf * 0 is NaN.
  """
  noisy, clean, weight = batch
  denoised = model(noisy, training=False)
  per_example = {
      "loss": metrics.per_example_loss(clean, denoised, loss_name),
      "mse": metrics.per_example_mse(clean, denoised),
      "psnr": metrics.per_example_psnr(clean, denoised),
      "ssim": metrics.per_example_ssim(clean, denoised),
      "noisy_psnr": metrics.per_example_psnr(clean, noisy),
  }
  real = weight > 0.0
  sums = {name: tf.reduce_sum(tf.where(real, values, tf.zeros_like(values)))
          for name, values in per_example.items()}
  sums["count"] = tf.reduce_sum(weight)
  return sums


def make_train_function(strategy, model, optimizer, config):
  """Returns `train_steps(iterator, num_steps, stop_requested)`.

  It runs `num_steps` steps and returns their mean loss and PSNR, and `stop`:
  `stop_requested` (a float, 1 to stop) summed over every replica of every
  task, positive if any asked, so all tasks stop after the same chunk.
  """
  forward_backward = functools.partial(
      compute_gradients, model, optimizer, loss_name=config.train.loss,
      global_batch_size=config.train.batch_size)
  whole_chunk_in_xla = config.runtime.jit_compile and strategy_lib.is_default(strategy)
  if config.runtime.jit_compile and not whole_chunk_in_xla:
    # Under a distribution strategy the optimizer all-reduces the gradients
    # across replicas through a merge_call, which cannot sit inside a
    # jit-compiled function: XLA compiles the forward and backward pass only.
    forward_backward = tf.function(forward_backward, jit_compile=True)

  def train_step(batch):
    gradients, outputs = forward_backward(batch)
    optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
    return outputs

  if whole_chunk_in_xla:
    return _make_compiled_train_loop(train_step)

  @tf.function
  def train_steps(iterator, num_steps, stop_requested):
    totals = {"loss": tf.constant(0.0), "psnr": tf.constant(0.0)}
    for _ in tf.range(num_steps):
      outputs = strategy.run(train_step, args=(next(iterator),))
      totals = {name: totals[name] + strategy.reduce(
          tf.distribute.ReduceOp.SUM, outputs[name], axis=None) for name in totals}
    means = {name: total / tf.cast(num_steps, tf.float32) for name, total in totals.items()}
    means["stop"] = strategy.reduce(
        tf.distribute.ReduceOp.SUM, strategy.run(tf.identity, args=(stop_requested,)),
        axis=None)
    return means

  return train_steps


def _make_compiled_train_loop(train_step):
  """`train_steps` for one device with XLA: the whole chunk of steps is one XLA computation.

  One device has nothing to all-reduce, so the optimizer update compiles
  together with the forward and backward pass, and the loop over the chunk's
  steps too: XLA reads and writes the variables once per chunk, not once per
  step. The iterator cannot be inside XLA, so the chunk's batches are taken
  first and stacked ([num_steps, batch, ...]; 50 steps of 128 MNIST pairs are
  40 MB). On a 2-core CPU this trained the dense model 1.2-1.4x faster than
  one XLA call per step.
  """

  @tf.function(jit_compile=True)
  def train_chunk(noisy, clean):
    totals = {"loss": tf.constant(0.0), "psnr": tf.constant(0.0)}
    for index in tf.range(tf.shape(noisy)[0]):
      outputs = train_step((noisy[index], clean[index]))
      totals = {name: totals[name] + outputs[name] for name in totals}
    return totals

  @tf.function
  def train_steps(iterator, num_steps, stop_requested):
    spec = iterator.element_spec
    stacks = [tf.TensorArray(part.dtype, size=num_steps, element_shape=part.shape)
              for part in spec]
    for index in tf.range(num_steps):
      batch = next(iterator)
      stacks = [stack.write(index, part) for stack, part in zip(stacks, batch, strict=True)]
    totals = train_chunk(*(stack.stack() for stack in stacks))
    means = {name: total / tf.cast(num_steps, tf.float32) for name, total in totals.items()}
    means["stop"] = stop_requested
    return means

  return train_steps


def make_eval_function(strategy, model, config):
  """Returns `evaluate(iterator, num_steps)` -> mean of each EVAL_METRICS over the real examples.

  Sums are reduced over every replica of every worker before dividing, so the
  result is the mean over the whole eval split, however it was sharded.

  Not compiled with XLA, whatever `runtime.jit_compile` says (a TPU compiles
  it regardless): XLA's CPU convolutions, SSIM's Gaussian filter among them,
  made one pass over the 10,000 test images 3-4x slower on a 2-core CPU
  (0.97 against 0.22-0.31 s for the dense model), and with batches of 1,000
  there is little per-op overhead for XLA to save.
  """
  step = functools.partial(eval_step, model, loss_name=config.train.loss)

  @tf.function
  def evaluate(iterator, num_steps):
    sums = {name: tf.constant(0.0) for name in (*EVAL_METRICS, "count")}
    for _ in tf.range(num_steps):
      outputs = strategy.run(step, args=(next(iterator),))
      sums = {name: sums[name] + strategy.reduce(
          tf.distribute.ReduceOp.SUM, outputs[name], axis=None) for name in sums}
    return {name: sums[name] / sums["count"] for name in EVAL_METRICS}

  return evaluate


def to_floats(tensors: dict[str, tf.Tensor]) -> dict[str, float]:
  return {name: float(value) for name, value in tensors.items()}


def run_chunk(train_steps, iterator, first_step: int, num_steps: int, epoch: int,
              stop_requested: bool) -> dict[str, float]:
  """Runs global steps `first_step` .. `first_step + num_steps - 1` (of `epoch`) in one call.

  Returns their mean loss and PSNR, and `stop`: positive if any task asked to
  stop (`stop_requested` is all-reduced inside the call, so every task of a
  multi-worker job sees the same answer after the same chunk).

  Raises:
    errors.NonFiniteLossError: the loss stopped being finite, naming the step range.
  """
  chunk = to_floats(train_steps(iterator, tf.constant(num_steps),
                                tf.constant(float(stop_requested))))
  if not math.isfinite(chunk["loss"]):
    raise errors.NonFiniteLossError(
        f"Training loss became {chunk['loss']} between steps {first_step} and "
        f"{first_step + num_steps - 1} (epoch {epoch + 1}); lower "
        "train.learning_rate or check the input data.")
  return chunk


class RunningMeans:
  """The mean loss and PSNR of an epoch's chunks so far, each weighted by its steps."""

  def __init__(self):
    self._totals, self._steps = {"loss": 0.0, "psnr": 0.0}, 0

  def add(self, chunk: dict[str, float], num_steps: int) -> None:
    for name in self._totals:
      self._totals[name] += chunk[name] * num_steps
    self._steps += num_steps

  @property
  def steps(self) -> int:
    return self._steps

  def result(self) -> dict[str, float]:
    return {name: total / self._steps for name, total in self._totals.items()}
