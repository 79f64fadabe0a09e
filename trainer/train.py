"""The training job: `train_and_evaluate(config, workdir)`.

One custom training loop serves every tf.distribute strategy (Keras 3's
`model.fit` fails under MultiWorkerMirroredStrategy): a `tf.function` that
runs `train.steps_per_loop` steps, each `strategy.run(train_step)` with the
loss averaged over the global batch. Every epoch it evaluates on the noisy test
split, writes TensorBoard summaries and a checkpoint; at the end it writes
metrics.json, the plots and the SavedModel. Running it again on the same
workdir resumes after the last checkpointed epoch.
"""

import math
import os
import time

from absl import logging
import keras
import ml_collections
import tensorflow as tf

from input_pipeline import data_source
from input_pipeline import pipeline
from trainer import export
from trainer import metrics
from trainer import models
from trainer import reports
from trainer import strategy as strategy_lib
from trainer import summaries
from trainer import validation

CHECKPOINT_DIRNAME = "checkpoints"
SAVED_MODEL_DIRNAME = "saved_model"
# Eval metrics, summed per example in `eval_step` and averaged over the split.
EVAL_METRICS = ("loss", "mse", "psnr", "ssim", "noisy_psnr")


def create_optimizer(train_config: ml_collections.ConfigDict) -> keras.optimizers.Optimizer:
  return keras.optimizers.Adam(learning_rate=train_config.learning_rate)


def train_step(model: keras.Model, optimizer: keras.optimizers.Optimizer, batch,
               loss_name: str, global_batch_size: int) -> dict[str, tf.Tensor]:
  """One optimisation step on one replica's share of the global batch.

  Returns this replica's contribution to the global-batch means: summing the
  outputs over replicas gives the mean loss and PSNR of the global batch.
  """
  noisy, clean = batch
  with tf.GradientTape() as tape:
    denoised = model(noisy, training=True)
    per_example_loss = metrics.per_example_loss(clean, denoised, loss_name)
    # Divide by the global batch, not the replica's: gradients summed over
    # replicas are then the gradient of the global mean.
    loss = tf.nn.compute_average_loss(per_example_loss, global_batch_size=global_batch_size)
  gradients = tape.gradient(loss, model.trainable_variables)
  optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
  psnr = tf.nn.compute_average_loss(metrics.per_example_psnr(clean, denoised),
                                    global_batch_size=global_batch_size)
  return {"loss": loss, "psnr": psnr}


def eval_step(model: keras.Model, batch, loss_name: str) -> dict[str, tf.Tensor]:
  """Sums of per-example metrics over one replica's eval batch, and its size."""
  noisy, clean = batch
  denoised = model(noisy, training=False)
  per_example = {
      "loss": metrics.per_example_loss(clean, denoised, loss_name),
      "mse": metrics.per_example_mse(clean, denoised),
      "psnr": metrics.per_example_psnr(clean, denoised),
      "ssim": metrics.per_example_ssim(clean, denoised),
      "noisy_psnr": metrics.per_example_psnr(clean, noisy),
  }
  sums = {name: tf.reduce_sum(values) for name, values in per_example.items()}
  sums["count"] = tf.cast(tf.shape(noisy)[0], tf.float32)
  return sums


def make_train_function(strategy, model, optimizer, config):
  """Returns `train_steps(iterator, num_steps)` -> mean loss and PSNR over those steps."""

  @tf.function
  def train_steps(iterator, num_steps):
    totals = {"loss": tf.constant(0.0), "psnr": tf.constant(0.0)}
    for _ in tf.range(num_steps):
      outputs = strategy.run(
          train_step, args=(model, optimizer, next(iterator), config.train.loss,
                            config.train.batch_size))
      totals = {name: totals[name] + strategy.reduce(
          tf.distribute.ReduceOp.SUM, outputs[name], axis=None) for name in totals}
    return {name: total / tf.cast(num_steps, tf.float32) for name, total in totals.items()}

  return train_steps


def make_eval_function(strategy, model, config):
  """Returns `evaluate(distributed_dataset)` -> mean of each EVAL_METRICS over the split."""

  @tf.function
  def evaluate(dataset):
    sums = {name: tf.constant(0.0) for name in (*EVAL_METRICS, "count")}
    for batch in dataset:
      outputs = strategy.run(eval_step, args=(model, batch, config.train.loss))
      sums = {name: sums[name] + strategy.reduce(
          tf.distribute.ReduceOp.SUM, outputs[name], axis=None) for name in sums}
    return {name: sums[name] / sums["count"] for name in EVAL_METRICS}

  return evaluate


def _to_floats(tensors: dict[str, tf.Tensor]) -> dict[str, float]:
  return {name: float(value) for name, value in tensors.items()}


def _run_epoch(train_steps, iterator, epoch: int, steps_per_epoch: int,
               steps_per_loop: int) -> dict[str, float]:
  """Runs one epoch in chunks of `steps_per_loop`; raises if the loss stops being finite."""
  totals = {"loss": 0.0, "psnr": 0.0}
  first_step = epoch * steps_per_epoch
  done = 0
  while done < steps_per_epoch:
    num_steps = min(steps_per_loop, steps_per_epoch - done)
    chunk = _to_floats(train_steps(iterator, tf.constant(num_steps)))
    if not math.isfinite(chunk["loss"]):
      raise FloatingPointError(
          f"Training loss became {chunk['loss']} between steps {first_step + done} and "
          f"{first_step + done + num_steps - 1} (epoch {epoch + 1}); lower "
          "train.learning_rate or check the input data.")
    for name in totals:
      totals[name] += chunk[name] * num_steps
    done += num_steps
  return {name: total / steps_per_epoch for name, total in totals.items()}


def _format_duration(seconds: float) -> str:
  minutes, seconds = divmod(int(round(seconds)), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def _write_dir(workdir: str, strategy) -> str:
  """Where this task writes: the workdir on the chief, a scratch folder elsewhere.

  Under multi-worker every task must take part in saving checkpoints, but only
  the chief's copy is kept.
  """
  if strategy_lib.is_chief(strategy):
    return workdir
  resolver = strategy.cluster_resolver
  return os.path.join(workdir, "workers", f"{resolver.task_type}_{resolver.task_id}")


def _setup(config: ml_collections.ConfigDict, workdir: str):
  """Checks everything that can be checked before training; returns (strategy, steps_per_epoch)."""
  validation.validate_config(config)
  try:
    strategy = strategy_lib.get_strategy(config.runtime)
  except ValueError as error:
    raise validation.ConfigError(str(error)) from error
  validation.validate_batch_sizes(config, strategy.num_replicas_in_sync)
  builder = data_source.get_builder(config.dataset, config.data_dir)
  data_source.ensure_prepared(builder)
  validation.check_resumable(config, reports.read_config(workdir))

  num_train_examples = builder.info.splits[config.train_split].num_examples
  steps_per_epoch = pipeline.steps_per_epoch(
      num_train_examples, config.train.batch_size,
      strategy_lib.num_input_pipelines(strategy))
  if steps_per_epoch < 1:
    raise validation.ConfigError(
        f"train_split {config.train_split!r} has {num_train_examples} examples, fewer "
        f"than one batch of train.batch_size={config.train.batch_size}; lower the batch size.")
  return strategy, steps_per_epoch


def _create_train_state(config, workdir, strategy):
  """Model, optimizer and a checkpoint manager, restored from the latest checkpoint if any.

  Returns (model, optimizer, checkpoint, manager); `checkpoint.epoch` is the
  number of epochs already trained.
  """
  with strategy.scope():
    model = models.create_model(config.model, config.seed)
    optimizer = create_optimizer(config.train)
    # Create the slot variables now, so a checkpoint restores them immediately.
    optimizer.build(model.trainable_variables)
  checkpoint = tf.train.Checkpoint(
      model=model, optimizer=optimizer,
      epoch=tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch"))
  manager = tf.train.CheckpointManager(
      checkpoint, os.path.join(_write_dir(workdir, strategy), CHECKPOINT_DIRNAME),
      max_to_keep=config.train.checkpoints_to_keep)
  if manager.latest_checkpoint:
    checkpoint.restore(manager.latest_checkpoint).assert_existing_objects_matched()
    logging.info("Resumed from %s.", manager.latest_checkpoint)
  return model, optimizer, checkpoint, manager


def _write_epoch_summaries(writers, step, train_metrics, eval_metrics, learning_rate,
                           examples_per_second, image_grid) -> None:
  summaries.write_scalars(writers.train, {
      **train_metrics,
      "learning_rate": learning_rate,
      "examples_per_second": examples_per_second,
  }, step)
  summaries.write_scalars(writers.eval, eval_metrics, step)
  summaries.write_images(writers.eval, "denoising/original_noisy_denoised", image_grid, step)
  writers.flush()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> keras.Model:
  """Trains the denoising autoencoder described by `config`, writing everything to `workdir`.

  Returns the trained model.
  """
  strategy, steps_per_epoch = _setup(config, workdir)
  is_chief = strategy_lib.is_chief(strategy)
  if is_chief:
    reports.write_config(config, workdir)
  model, optimizer, checkpoint, manager = _create_train_state(config, workdir, strategy)
  start_epoch = int(checkpoint.epoch.numpy())
  history = reports.load_history(workdir, start_epoch)

  train_iterator = iter(strategy.distribute_datasets_from_function(
      lambda context: pipeline.create_dataset(config, "train", context, start_epoch)))
  eval_dataset = strategy.distribute_datasets_from_function(
      lambda context: pipeline.create_dataset(config, "eval", context))
  train_steps = make_train_function(strategy, model, optimizer, config)
  evaluate = make_eval_function(strategy, model, config)
  sample_noisy, sample_clean = (
      images.numpy() for images in pipeline.first_eval_examples(
          config, config.train.num_images_to_show))

  writers = summaries.Writers(workdir, enabled=is_chief)
  summaries.write_run_description(writers, config, trial_id=os.path.basename(
      os.path.normpath(workdir)))
  logging.info("Training %s for epochs %d..%d, %d steps of %d examples per epoch, "
               "%d parameters.", model.name, start_epoch + 1, config.train.num_epochs,
               steps_per_epoch, config.train.batch_size, model.count_params())

  eval_metrics = None
  run_start = time.time()
  for epoch in range(start_epoch, config.train.num_epochs):
    epoch_start = time.time()
    train_metrics = _run_epoch(train_steps, train_iterator, epoch, steps_per_epoch,
                               config.train.steps_per_loop)
    examples_per_second = (steps_per_epoch * config.train.batch_size
                           / (time.time() - epoch_start))
    eval_metrics = _to_floats(evaluate(eval_dataset))
    step = (epoch + 1) * steps_per_epoch
    sample_denoised = model(sample_noisy, training=False).numpy()
    _write_epoch_summaries(
        writers, step, train_metrics, eval_metrics,
        float(tf.convert_to_tensor(optimizer.learning_rate.value)), examples_per_second,
        reports.image_grid(sample_clean, sample_noisy, sample_denoised))

    checkpoint.epoch.assign(epoch + 1)
    manager.save(checkpoint_number=epoch + 1)
    history.append({"epoch": epoch + 1, "step": step,
                    "train_loss": train_metrics["loss"], "train_psnr": train_metrics["psnr"],
                    **{f"eval_{name}": value for name, value in eval_metrics.items()}})
    if is_chief:
      reports.write_history(workdir, history)

    seconds_left = (time.time() - run_start) / (epoch + 1 - start_epoch) * (
        config.train.num_epochs - epoch - 1)
    logging.info(
        "epoch %d/%d: train loss %.4f PSNR %.2f dB | eval loss %.4f PSNR %.2f dB "
        "SSIM %.3f | %.0f examples/s, %.1f s, %s left",
        epoch + 1, config.train.num_epochs, train_metrics["loss"], train_metrics["psnr"],
        eval_metrics["loss"], eval_metrics["psnr"], eval_metrics["ssim"],
        examples_per_second, time.time() - epoch_start, _format_duration(seconds_left))

  if eval_metrics is None:  # Already trained: report on the restored model.
    eval_metrics = _to_floats(evaluate(eval_dataset))
  if is_chief:
    _write_final_reports(config, workdir, model, history, eval_metrics,
                         sample_clean, sample_noisy)
  return model


def _write_final_reports(config, workdir, model, history, eval_metrics,
                         sample_clean, sample_noisy) -> None:
  """metrics.json, plots/ and the SavedModel."""
  reports.write_json(os.path.join(workdir, reports.METRICS_FILENAME), {
      "split": config.eval_split,
      "noise": config.noise.to_dict(),
      "epochs": len(history),
      **eval_metrics,
  })
  plots_dir = os.path.join(workdir, reports.PLOTS_DIRNAME)
  reports.plot_loss(history, config.train.loss,
                    os.path.join(plots_dir, reports.LOSS_PLOT_FILENAME))
  reports.plot_denoised(sample_clean, sample_noisy,
                        model(sample_noisy, training=False).numpy(),
                        os.path.join(plots_dir, reports.DENOISED_PLOT_FILENAME))
  # Export a copy built outside the strategy: plain variables, no replicas.
  serving_model = models.create_model(config.model, config.seed)
  serving_model.set_weights(model.get_weights())
  export.export_saved_model(serving_model, os.path.join(workdir, SAVED_MODEL_DIRNAME))
  logging.info("Final evaluation on %s: %s. Wrote %s.", config.eval_split,
               ", ".join(f"{name} {value:.4f}" for name, value in eval_metrics.items()),
               workdir)
