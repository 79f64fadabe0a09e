"""The training job: `train_and_evaluate(config, workdir)`.

One custom training loop serves every tf.distribute strategy (Keras 3's
`model.fit` fails under MultiWorkerMirroredStrategy): a `tf.function` that
runs `train.steps_per_loop` steps, each `strategy.run(train_step)` with the
loss averaged over the global batch (on one device with XLA, the whole chunk
of steps is one XLA computation instead). Every epoch it evaluates on the noisy test
split, writes TensorBoard summaries and a checkpoint; at the end it writes
metrics.json, the plots and the SavedModel. Running it again on the same
workdir resumes from the last checkpoint: the checkpointed global step is the
source of truth for where a run is, and the input pipeline can start at any
step (see `pipeline.create_dataset`).

Under several workers every task runs the same loop and restores from the
chief's checkpoints; only the chief keeps what it writes (see `Checkpointer`).
"""

import functools
import hashlib
import math
import os
import tempfile
import time

from absl import logging
import keras
import ml_collections
import numpy as np
import tensorflow as tf

from input_pipeline import data_source
from input_pipeline import pipeline
from trainer import export
from trainer import metrics
from trainer import models
from trainer import optimizers
from trainer import output_dirs
from trainer import preemption
from trainer import reports
from trainer import resources
from trainer import strategy as strategy_lib
from trainer import summaries
from trainer import validation

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


def _to_floats(tensors: dict[str, tf.Tensor]) -> dict[str, float]:
  return {name: float(value) for name, value in tensors.items()}


def _run_epoch(train_steps, iterator, epoch: int, first_step: int, num_steps: int,
               steps_per_loop: int, stop_signal=None) -> tuple[dict[str, float], int, bool]:
  """Runs global steps `first_step` .. `first_step + num_steps - 1` of `epoch` in chunks of
  `steps_per_loop`.

  Returns (mean metrics, steps done, stopped): a stop requested on any task
  (`stop_signal.requested`) ends the epoch after the current chunk.

  Raises:
    FloatingPointError: the loss stopped being finite, naming the step range.
  """
  totals = {"loss": 0.0, "psnr": 0.0}
  done = 0
  while done < num_steps:
    chunk_steps = min(steps_per_loop, num_steps - done)
    stop_requested = float(stop_signal is not None and stop_signal.requested)
    chunk = _to_floats(train_steps(iterator, tf.constant(chunk_steps),
                                   tf.constant(stop_requested)))
    if not math.isfinite(chunk["loss"]):
      raise FloatingPointError(
          f"Training loss became {chunk['loss']} between steps {first_step + done} and "
          f"{first_step + done + chunk_steps - 1} (epoch {epoch + 1}); lower "
          "train.learning_rate or check the input data.")
    for name in totals:
      totals[name] += chunk[name] * chunk_steps
    done += chunk_steps
    if chunk["stop"] > 0:
      break
  return {name: total / done for name, total in totals.items()}, done, chunk["stop"] > 0


def total_steps(config: ml_collections.ConfigDict, data: data_source.DataSource) -> int:
  """Global steps of the whole run: `num_epochs` epochs, or fewer if `train.max_steps` says so."""
  steps = config.train.num_epochs * data.steps_per_epoch
  return min(steps, config.train.max_steps) if config.train.max_steps > 0 else steps


def _format_duration(seconds: float) -> str:
  minutes, seconds = divmod(int(round(seconds)), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def weights_fingerprint(model: keras.Model) -> str:
  """A short hash of every weight's bytes: equal on all tasks iff their weights are identical."""
  digest = hashlib.sha256()
  for weight in model.get_weights():
    digest.update(np.ascontiguousarray(weight).tobytes())
  return digest.hexdigest()[:16]


class Checkpointer:
  """Saves and restores the train state; under multi-worker only the chief's copy is kept.

  Every task restores from the chief's directory, so all tasks start at the
  same epoch whatever happened to their own disks. Every task must also take
  part in each save (the variables' saving may need collectives), so non-chief
  tasks save into a private temporary directory that is removed right after
  (the pattern of tf.distribute's custom-loop tutorial and Model Garden's
  `train_lib`).
  """

  def __init__(self, checkpoint: tf.train.Checkpoint, directory: str, is_chief: bool,
               max_to_keep: int, task_name: str):
    self._checkpoint = checkpoint
    self.directory = directory
    self._is_chief = is_chief
    if is_chief:
      self._write_dir = directory
    else:
      self._write_dir = os.path.join(
          tempfile.gettempdir(), f"dae-trainer-{task_name.replace(' ', '-')}-{os.getpid()}")
      max_to_keep = 1
    self._manager = tf.train.CheckpointManager(checkpoint, self._write_dir,
                                               max_to_keep=max_to_keep)

  def restore_latest(self) -> str | None:
    """Restores the chief's newest intact checkpoint, if any; returns its path.

    A checkpoint that cannot be read (a truncated or garbled file, say after a
    disk filled up) is skipped with one warning naming it, for the one before.

    Raises:
      validation.ConfigError: a checkpoint was written by another model, or
        none of the checkpoints can be read.
    """
    state = tf.train.get_checkpoint_state(self.directory)
    paths = list(state.all_model_checkpoint_paths) if state else []
    if state and state.model_checkpoint_path not in paths:
      paths.append(state.model_checkpoint_path)
    unreadable = []
    for path in reversed(paths):
      try:
        self._checkpoint.restore(path).assert_existing_objects_matched()
      except (AssertionError, ValueError) as error:
        raise validation.ConfigError(
            f"checkpoint {path} was written by another model ({type(error).__name__}: "
            f"{str(error).splitlines()[0][:200]}); use a new --workdir, or the config that "
            "wrote it.") from error
      except (tf.errors.OpError, IndexError, EOFError) as error:
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        logging.warning("Checkpoint %s is unreadable (%s: %s); trying the one before.",
                        path, type(error).__name__, reason)
        unreadable.append(path)
        continue
      return path
    if unreadable:
      raise validation.ConfigError(
          f"no readable checkpoint in {self.directory} (tried {', '.join(unreadable)}); "
          "delete that directory to train from scratch, or use a new --workdir.")
    return None

  def remove_stale_temporaries(self) -> None:
    """Removes what a save killed midway leaves behind (TensorFlow's `*_temp` folders)."""
    if not self._is_chief or not tf.io.gfile.isdir(self.directory):
      return
    for name in tf.io.gfile.listdir(self.directory):
      if name.rstrip("/").endswith("_temp"):
        logging.info("Removing %s, left by an interrupted checkpoint save.", name)
        tf.io.gfile.rmtree(os.path.join(self.directory, name))

  def save(self, number: int) -> None:
    self._manager.save(checkpoint_number=number)
    if not self._is_chief:
      tf.io.gfile.rmtree(self._write_dir)


def _setup(config: ml_collections.ConfigDict, workdir: str, allow_config_change: bool):
  """Checks everything that can be checked, then builds the strategy and the data once.

  Returns (strategy, data source, the config changes since the workdir's last run).
  """
  try:
    validation.validate_config(config)
    reports.check_workdir(workdir)
    # The strategy comes first: splitting the CPU into logical devices only
    # works before TensorFlow initialises them.
    strategy = strategy_lib.get_strategy(config.runtime)
    validation.validate_batch_sizes(config, strategy.num_replicas_in_sync)
    data = data_source.create_data_source(config)
    changes = validation.check_resumable(config, reports.read_config(workdir),
                                         allow_config_change)
  except validation.ConfigError:
    raise
  except ValueError as error:  # Including reports.CorruptFileError.
    raise validation.ConfigError(str(error)) from error
  return strategy, data, changes


def _create_train_state(config, data, dirs, strategy):
  """Model, optimizer and checkpointer, restored from the chief's latest checkpoint if any.

  Returns (model, optimizer, checkpoint, checkpointer); `checkpoint.step` is
  the number of global steps already trained.
  """
  with strategy.scope():
    model = models.create_model(config.model, data.image_shape, config.seed,
                                config.runtime.dtype_policy)
    optimizer = optimizers.create_optimizer(config.train, total_steps(config, data),
                                            config.runtime.dtype_policy)
    # Create the slot variables now, so a checkpoint restores them immediately.
    optimizer.build(model.trainable_variables)
  checkpoint = tf.train.Checkpoint(
      model=model, optimizer=optimizer,
      step=tf.Variable(0, dtype=tf.int64, trainable=False, name="step"))
  checkpointer = Checkpointer(
      checkpoint, dirs.checkpoints,
      is_chief=strategy_lib.is_chief(strategy),
      max_to_keep=config.train.checkpoints_to_keep,
      task_name=strategy_lib.task_name(strategy))
  checkpointer.remove_stale_temporaries()
  restored = checkpointer.restore_latest()
  if restored:
    logging.info("%s resumed from %s.", strategy_lib.task_name(strategy), restored)
  # The config, not the checkpoint, decides the learning rate: a rerun with a
  # new train.learning_rate (accepted by `validation.check_resumable`) uses it.
  # (A schedule is built from the config, and stays.)
  if config.train.learning_rate_schedule == "constant":
    optimizer.learning_rate = config.train.learning_rate
  return model, optimizer, checkpoint, checkpointer


def _write_evaluation(writers, step, eval_metrics, image_grid) -> None:
  summaries.write_scalars(writers.eval, eval_metrics, step)
  summaries.write_images(writers.eval, "denoising/original_noisy_denoised", image_grid, step)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       dirs: output_dirs.OutputDirs | None = None,
                       allow_config_change: bool = False) -> keras.Model:
  """Trains the denoising autoencoder described by `config`, writing everything to `workdir`.

  Args:
    config: the training config.
    workdir: directory (local or gs://) for everything the run writes.
    dirs: where the checkpoints, TensorBoard events and SavedModel go;
      default: `output_dirs.resolve(workdir)` (the workdir, or Vertex AI's
      AIP_* directories where set).
    allow_config_change: resume a workdir trained with other settings that
      change the result (see `validation.check_resumable`).

  Returns the trained model.

  Raises:
    validation.ConfigError: a bad config, found before anything is written.
    strategy_lib.PeerLostError: another task of a multi-worker job was lost.
    FloatingPointError: the training loss stopped being finite.
    preemption.Preempted: stopped on SIGTERM after saving a checkpoint.
  """
  dirs = dirs or output_dirs.resolve(workdir)
  strategy, data, changes = _setup(config, workdir, allow_config_change)
  is_chief = strategy_lib.is_chief(strategy)
  task_name = strategy_lib.task_name(strategy)
  model, optimizer, checkpoint, checkpointer = _create_train_state(
      config, data, dirs, strategy)
  start_step = int(checkpoint.step.numpy())
  last_step = total_steps(config, data)
  if start_step > last_step:
    raise validation.ConfigError(
        f"train.num_epochs={config.train.num_epochs} (train.max_steps="
        f"{config.train.max_steps}) ends at step {last_step}, but {dirs.checkpoints} is "
        f"already trained to step {start_step}; raise it, or use a new --workdir.")
  history = reports.load_history(workdir, up_to_step=start_step) if is_chief else []
  if is_chief:
    # Only now, with the checkpoint restored and the config accepted.
    reports.remove_stale_temporaries(workdir)
    reports.write_config(config, workdir, from_step=start_step, changes=changes)

  train_iterator = iter(strategy.distribute_datasets_from_function(
      lambda context: pipeline.create_dataset(data, config, "train", context, start_step)))
  eval_dataset = strategy.distribute_datasets_from_function(
      lambda context: pipeline.create_dataset(data, config, "eval", context))
  train_steps = make_train_function(strategy, model, optimizer, config)
  evaluate = make_eval_function(strategy, model, config)
  run_evaluation = lambda: _to_floats(evaluate(iter(eval_dataset),
                                               tf.constant(data.num_eval_steps)))
  sample_noisy, sample_clean = (
      images.numpy() for images in pipeline.first_eval_examples(
          data, config, config.train.num_images_to_show))

  writers = summaries.Writers(dirs.tensorboard, enabled=is_chief)
  summaries.write_run_description(writers, config, trial_id=os.path.basename(
      os.path.normpath(workdir)))
  num_epochs = math.ceil(last_step / data.steps_per_epoch)
  logging.info("%s: training %s for epochs %d..%d (steps %d..%d), %d steps of %d examples "
               "per epoch, %d parameters.", task_name, model.name,
               start_step // data.steps_per_epoch + 1, num_epochs, start_step + 1, last_step,
               data.steps_per_epoch, config.train.batch_size, model.count_params())

  eval_metrics = None
  run_start = time.time()
  # Wall time spent training before this process, so history's elapsed_seconds
  # keeps counting across resumed runs.
  earlier_seconds = history[-1].get("elapsed_seconds", 0.0) if history else 0.0
  step = start_step
  with strategy_lib.watch_peers(strategy), preemption.StopSignal() as stop_signal:
    while step < last_step:
      # One epoch, or what is left of it when resuming mid-epoch or stopping at max_steps.
      epoch, step_in_epoch = divmod(step, data.steps_per_epoch)
      num_steps = min(data.steps_per_epoch - step_in_epoch, last_step - step)
      epoch_start = time.time()
      train_metrics, num_steps, stopped = _run_epoch(
          train_steps, train_iterator, epoch, step, num_steps, config.train.steps_per_loop,
          stop_signal)
      examples_per_second = (num_steps * config.train.batch_size
                             / (time.time() - epoch_start))
      step += num_steps
      if stopped:
        # Preempted: save where we are, now; evaluation would eat the grace period.
        checkpoint.step.assign(step)
        checkpointer.save(step)
        raise preemption.Preempted(
            f"{task_name} stopped on {stop_signal.received or 'another task'}'s request at "
            f"step {step} (epoch {epoch + 1}) and saved a checkpoint there; rerun the same "
            "command to continue from that step.")
      # Evaluate every train.eval_every_epochs full epochs, and at the end.
      evaluated = step == last_step or (step % data.steps_per_epoch == 0 and (
          epoch + 1) % config.train.eval_every_epochs == 0)
      eval_metrics = run_evaluation() if evaluated else None
      if is_chief:
        summaries.write_scalars(writers.train, {
            **train_metrics, "learning_rate": optimizers.current_learning_rate(optimizer),
            "examples_per_second": examples_per_second}, step)
        if evaluated:
          _write_evaluation(writers, step, eval_metrics, reports.image_grid(
              sample_clean, sample_noisy, model(sample_noisy, training=False).numpy()))
          # History first, then the checkpoint: a kill between the two leaves a
          # history entry past the checkpoint, which the rerun drops and redoes
          # (`load_history(up_to_step=...)`); the other order would lose it.
          history.append({
              "epoch": epoch + 1, "step": step,
              "train_loss": train_metrics["loss"], "train_psnr": train_metrics["psnr"],
              "elapsed_seconds": earlier_seconds + time.time() - run_start,
              "rss_mb": resources.rss_mb(),
              **{f"eval_{name}": value for name, value in eval_metrics.items()}})
          reports.write_history(workdir, history)
        writers.flush()
      checkpoint.step.assign(step)
      checkpointer.save(step)

      seconds_left = (time.time() - run_start) / (step - start_step) * (last_step - step)
      evaluation = ("eval loss {loss:.4f} PSNR {psnr:.2f} dB SSIM {ssim:.3f}".format(
          **eval_metrics) if evaluated else "not evaluated")
      logging.info(
          "epoch %d/%d: train loss %.4f PSNR %.2f dB | %s | %.0f examples/s, %.1f s, "
          "%s left, %.0f MiB", epoch + 1, num_epochs, train_metrics["loss"],
          train_metrics["psnr"], evaluation, examples_per_second, time.time() - epoch_start,
          _format_duration(seconds_left), resources.rss_mb())

    if eval_metrics is None:  # Already trained: report on the restored model.
      eval_metrics = run_evaluation()
  logging.info("%s finished at step %d; weights fingerprint %s.", task_name,
               int(checkpoint.step.numpy()), weights_fingerprint(model))
  if is_chief:
    _write_final_reports(config, data, dirs, model, step, history, eval_metrics,
                         sample_clean, sample_noisy)
  return model


def _write_final_reports(config, data, dirs, model, step, history, eval_metrics,
                         sample_clean, sample_noisy) -> None:
  """metrics.json, plots/ and the SavedModel."""
  workdir = dirs.workdir
  reports.write_json(os.path.join(workdir, reports.METRICS_FILENAME), {
      "split": config.eval_split,
      "noise": config.noise.to_dict(),
      "step": step,
      "epochs": round(step / data.steps_per_epoch, 4),
      "num_parameters": model.count_params(),
      **eval_metrics,
  })
  plots_dir = os.path.join(workdir, reports.PLOTS_DIRNAME)
  reports.plot_loss(history, config.train.loss,
                    os.path.join(plots_dir, reports.LOSS_PLOT_FILENAME))
  reports.plot_denoised(sample_clean, sample_noisy,
                        model(sample_noisy, training=False).numpy(),
                        os.path.join(plots_dir, reports.DENOISED_PLOT_FILENAME))
  # Export a copy built outside the strategy: plain variables, no replicas, and
  # float32 computation whatever the training's dtype policy (same weights).
  serving_model = models.create_model(config.model, data.image_shape, config.seed)
  serving_model.set_weights(model.get_weights())
  export.export_saved_model(serving_model, dirs.saved_model)
  logging.info("Final evaluation on %s: %s. Wrote %s (SavedModel in %s).", config.eval_split,
               ", ".join(f"{name} {value:.4f}" for name, value in eval_metrics.items()),
               workdir, dirs.saved_model)
