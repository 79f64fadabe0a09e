"""The training job: `train_and_evaluate(config, workdir)`.

The orchestrator resolves everything once (the config's checks, the strategy,
the data source, the step counts, the restored train state) and hands it down:
`train_epoch` runs one epoch's steps (`steps.run_epoch_steps`), evaluates on
the noisy test split, writes TensorBoard summaries, history.json and a
checkpoint, and logs one line; at the end `_write_final_reports` writes
metrics.json, the plots and the SavedModel. Running it again on the same
workdir resumes from the last checkpoint: the checkpointed global step is the
source of truth for where a run is, and the input pipeline can start at any
step (see `pipeline.create_dataset`).

Under several workers every task runs the same loop and restores from the
chief's checkpoints; only the chief keeps what it writes (see
`checkpoints.Checkpointer`).
"""

import dataclasses
import functools
import math
import os
import time

from absl import logging
import keras
import ml_collections
import numpy as np
import tensorflow as tf

from input_pipeline import data_service
from input_pipeline import data_source
from input_pipeline import pipeline
from trainer import checkpoints
from trainer.cloud import output_dirs
from trainer import errors
from trainer import export
from trainer import logs
from trainer import models
from trainer import optimizers
from trainer import preemption
from trainer import profiling
from trainer import reports
from trainer import resources
from trainer import steps as steps_lib
from trainer import strategy as strategy_lib
from trainer import summaries
from trainer import validation
from trainer import workdir_lock


def total_steps(config: ml_collections.ConfigDict, data: data_source.DataSource) -> int:
  """Global steps of the whole run: `num_epochs` epochs, or fewer if `train.max_steps` says so."""
  steps = config.train.num_epochs * data.steps_per_epoch
  return min(steps, config.train.max_steps) if config.train.max_steps > 0 else steps


def _check_output_paths(workdir: str, dirs: output_dirs.OutputDirs) -> None:
  """Refuses a file where the run writes a directory, or the reverse, before any work.

  Each would otherwise show only when the run first writes there, for some
  after the training: the first checkpoint after an epoch, saved_model/,
  plots/ and metrics.json at the end.
  """
  reports.check_path_kinds(
      directories=[dirs.checkpoints, dirs.saved_model, dirs.tensorboard,
                   *(os.path.join(dirs.tensorboard, name) for name in summaries.SUBDIRECTORIES),
                   os.path.join(workdir, reports.PLOTS_DIRNAME)],
      files=[*reports.report_paths(workdir), *checkpoints.file_paths(dirs.checkpoints),
             os.path.join(workdir, workdir_lock.LOCK_FILENAME)])


def _setup(config: ml_collections.ConfigDict, workdir: str, dirs: output_dirs.OutputDirs,
           allow_config_change: bool):
  """Checks everything that can be checked, then builds the strategy and the data once.

  Returns (strategy, data source, the config changes since the workdir's last run,
  the chief's `workdir_lock.WorkdirLock`, held until the caller releases it).
  """
  checkpoint_dir = dirs.checkpoints
  validation.validate_config(config)
  reports.check_workdir(workdir)
  _check_output_paths(workdir, dirs)
  # The strategy comes first: splitting the CPU into logical devices only
  # works before TensorFlow initialises them.
  strategy = strategy_lib.get_strategy(config.runtime)
  validation.validate_batch_sizes(config, strategy.num_replicas_in_sync)
  data = data_source.create_data_source(config)
  profiling.check_window_in_run(config.runtime.profile_steps, total_steps(config, data))
  if config.input.data_service_address:
    data_service.check_serving(config.input.data_service_address,
                               config.input.data_service_timeout_seconds)
  # The chief locks the workdir before reading anything in it: a second
  # trainer on it would interleave checkpoints and reports.
  lock = (workdir_lock.acquire(workdir, config.runtime.ignore_run_marker)
          if strategy_lib.is_chief(strategy) else workdir_lock.WorkdirLock())
  try:
    previous = reports.read_config(workdir)
    if previous is None and checkpoints.find_checkpoints(checkpoint_dir):
      # Without the earlier config the changed-settings guard has nothing to
      # compare with: resuming silently could mix two settings into one run.
      if not allow_config_change:
        raise errors.ConfigError(
            f"{checkpoint_dir} holds checkpoints but "
            f"{os.path.join(workdir, reports.CONFIG_FILENAME)} is missing, empty or not a "
            "JSON object (and config_history.json cannot stand in), so this run's settings "
            "cannot be checked against theirs; restore that file, pass "
            "--allow_config_change to resume with these settings, or use a new --workdir.")
      logging.warning("No earlier config in %s; resuming its checkpoints with this config "
                      "(--allow_config_change).", workdir)
    changes = validation.check_resumable(config, previous, allow_config_change)
  except BaseException:
    lock.release()
    raise
  return strategy, data, changes, lock


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
  checkpointer = checkpoints.Checkpointer(
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


@dataclasses.dataclass
class _Run:
  """What every epoch of one run needs, built once by `train_and_evaluate`."""
  config: ml_collections.ConfigDict
  data: data_source.DataSource
  workdir: str
  task_name: str
  is_chief: bool
  model: keras.Model
  optimizer: keras.optimizers.Optimizer
  checkpoint: tf.train.Checkpoint
  checkpointer: checkpoints.Checkpointer
  train_steps: object
  train_iterator: object
  evaluate: object
  writers: summaries.Writers
  profiler: profiling.ProfilerWindow
  history: list
  sample_clean: np.ndarray
  sample_noisy: np.ndarray
  start_step: int
  last_step: int
  run_start: float
  # Wall time spent training before this process, so history's elapsed_seconds
  # keeps counting across resumed runs.
  earlier_seconds: float

  @property
  def num_epochs(self) -> int:
    return math.ceil(self.last_step / self.data.steps_per_epoch)


def train_epoch(run: _Run, step: int, stop_signal) -> tuple[int, dict[str, float] | None]:
  """Trains one epoch from global `step` (or what is left of it), then evaluates and saves.

  Returns (the step reached, the eval metrics or None if this epoch was not
  evaluated).

  Raises:
    errors.Preempted: a stop was requested; a checkpoint at the step reached is saved.
  """
  config, data = run.config, run.data
  # One epoch, or what is left of it when resuming mid-epoch or stopping at max_steps.
  epoch, step_in_epoch = divmod(step, data.steps_per_epoch)
  num_steps = min(data.steps_per_epoch - step_in_epoch, run.last_step - step)
  epoch_start = time.time()
  progress = logs.Progress(
      epoch, run.num_epochs, step, num_steps, config.train.batch_size,
      config.train.log_every_steps, write_scalars=functools.partial(
          summaries.write_scalars, run.writers.train) if run.is_chief else None)
  epoch_end = step + num_steps

  def on_chunk(done, running_means):
    progress.update(done, running_means)
    # The profiler starts and stops between chunks: a chunk is one tf.function call.
    run.profiler.after_chunk(step + done)
    run.profiler.before_chunk(step + done, min(config.train.steps_per_loop,
                                               epoch_end - step - done))

  run.profiler.before_chunk(step, min(config.train.steps_per_loop, num_steps))
  train_metrics, num_steps, stopped = steps_lib.run_epoch_steps(
      run.train_steps, run.train_iterator, epoch, step, num_steps,
      config.train.steps_per_loop, stop_signal, on_chunk=on_chunk)
  examples_per_second = num_steps * config.train.batch_size / (time.time() - epoch_start)
  step += num_steps
  if stopped:
    # Preempted: save where we are, now; evaluation would eat the grace period.
    run.checkpoint.step.assign(step)
    run.checkpointer.save(step)
    raise errors.Preempted(
        f"{run.task_name} stopped on {stop_signal.received or 'another task'}'s request at "
        f"step {step} (epoch {epoch + 1}) and saved a checkpoint there; rerun the same "
        "command to continue from that step.")
  # Evaluate every train.eval_every_epochs full epochs, and at the end.
  evaluated = step == run.last_step or (step % data.steps_per_epoch == 0 and (
      epoch + 1) % config.train.eval_every_epochs == 0)
  eval_metrics = run.evaluate() if evaluated else None
  if run.is_chief:
    _write_epoch_summaries(run, step, epoch, train_metrics, examples_per_second, eval_metrics)
  run.checkpoint.step.assign(step)
  run.checkpointer.save(step)
  seconds_left = (time.time() - run.run_start) / (step - run.start_step) * (run.last_step - step)
  logs.log_epoch(epoch, run.num_epochs, train_metrics, eval_metrics, examples_per_second,
                 time.time() - epoch_start, seconds_left, resources.rss_mb())
  return step, eval_metrics


def _write_epoch_summaries(run: _Run, step: int, epoch: int, train_metrics, examples_per_second,
                           eval_metrics) -> None:
  """The chief's TensorBoard scalars and images, and its history entry, for one epoch."""
  summaries.write_scalars(run.writers.train, {
      **train_metrics, "learning_rate": optimizers.current_learning_rate(run.optimizer),
      "examples_per_second": examples_per_second}, step)
  if eval_metrics is not None:
    summaries.write_scalars(run.writers.eval, eval_metrics, step)
    summaries.write_images(run.writers.eval, "denoising/original_noisy_denoised",
                           reports.image_grid(run.sample_clean, run.sample_noisy, run.model(
                               run.sample_noisy, training=False).numpy()), step)
    # History first, then the checkpoint: a kill between the two leaves a
    # history entry past the checkpoint, which the rerun drops and redoes
    # (`load_history(up_to_step=...)`); the other order would lose it.
    run.history.append({
        "epoch": epoch + 1, "step": step,
        "train_loss": train_metrics["loss"], "train_psnr": train_metrics["psnr"],
        "elapsed_seconds": run.earlier_seconds + time.time() - run.run_start,
        "rss_mb": resources.rss_mb(),
        **{f"eval_{name}": value for name, value in eval_metrics.items()}})
    reports.write_history(run.workdir, run.history)
  run.writers.flush()


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
    errors.ConfigError: a bad config, found before anything is written.
    errors.PeerLostError: another task of a multi-worker job was lost.
    FloatingPointError: the training loss stopped being finite.
    errors.Preempted: stopped on SIGTERM after saving a checkpoint.
  """
  dirs = dirs or output_dirs.resolve(workdir)
  strategy, data, changes, lock = _setup(config, workdir, dirs, allow_config_change)
  try:
    return _train_locked(config, workdir, dirs, strategy, data, changes)
  finally:
    lock.release()


def _train_locked(config, workdir, dirs, strategy, data, changes) -> keras.Model:
  """`train_and_evaluate` once the workdir is locked and its config accepted."""
  is_chief = strategy_lib.is_chief(strategy)
  model, optimizer, checkpoint, checkpointer = _create_train_state(
      config, data, dirs, strategy)
  start_step = int(checkpoint.step.numpy())
  last_step = total_steps(config, data)
  if start_step > last_step:
    raise errors.ConfigError(
        f"train.num_epochs={config.train.num_epochs} (train.max_steps="
        f"{config.train.max_steps}) ends at step {last_step}, but {dirs.checkpoints} is "
        f"already trained to step {start_step}; raise it, or use a new --workdir.")
  history = reports.load_history(workdir, up_to_step=start_step) if is_chief else []
  if is_chief:
    # Only now, with the checkpoint restored and the config accepted.
    reports.remove_stale_temporaries(workdir)
    reports.write_config(config, workdir, from_step=start_step, changes=changes)

  eval_dataset = strategy.distribute_datasets_from_function(
      lambda context: pipeline.create_dataset(data, config, "eval", context))
  evaluate = steps_lib.make_eval_function(strategy, model, config)
  sample_noisy, sample_clean = (
      images.numpy() for images in pipeline.first_eval_examples(
          data, config, config.train.num_images_to_show))
  writers = summaries.Writers(dirs.tensorboard, enabled=is_chief)
  summaries.write_run_description(writers, config, trial_id=os.path.basename(
      os.path.normpath(workdir)))
  run = _Run(
      config=config, data=data, workdir=workdir, task_name=strategy_lib.task_name(strategy),
      is_chief=is_chief, model=model, optimizer=optimizer, checkpoint=checkpoint,
      checkpointer=checkpointer,
      train_steps=steps_lib.make_train_function(strategy, model, optimizer, config),
      train_iterator=iter(strategy.distribute_datasets_from_function(
          lambda context: pipeline.create_dataset(data, config, "train", context, start_step))),
      evaluate=lambda: steps_lib.to_floats(evaluate(iter(eval_dataset),
                                                    tf.constant(data.num_eval_steps))),
      writers=writers,
      profiler=profiling.ProfilerWindow(config.runtime.profile_steps,
                                        os.path.join(dirs.tensorboard, "train"), is_chief),
      history=history, sample_clean=sample_clean, sample_noisy=sample_noisy,
      start_step=start_step, last_step=last_step, run_start=time.time(),
      earlier_seconds=history[-1].get("elapsed_seconds", 0.0) if history else 0.0)
  logs.log_run_header(run.task_name, model, data, start_step, last_step,
                      config.train.batch_size, dirs.workdir)

  eval_metrics = None
  step = start_step
  with strategy_lib.watch_peers(strategy), preemption.StopSignal() as stop_signal:
    try:
      while step < last_step:
        step, eval_metrics = train_epoch(run, step, stop_signal)
    finally:
      # A run that stops early (preempted, a NaN) still writes the steps it traced.
      run.profiler.stop()
    if eval_metrics is None:  # Already trained: report on the restored model.
      eval_metrics = run.evaluate()
  fingerprint = checkpoints.weights_fingerprint(model)
  if is_chief:
    _write_final_reports(config, data, dirs, model, step, history, eval_metrics,
                         sample_clean, sample_noisy)
  logs.log_final(run.task_name, step, eval_metrics, fingerprint,
                 dirs.saved_model if is_chief else None)
  return model


def _write_final_reports(config, data, dirs, model, step, history, eval_metrics,
                         sample_clean, sample_noisy) -> None:
  """The SavedModel, plots/ and metrics.json, in that order.

  metrics.json comes last: it marks a finished run, so a failure in the export
  or the plots must not leave it newer than saved_model/.
  """
  workdir = dirs.workdir
  # Export a copy built outside the strategy: plain variables, no replicas, and
  # float32 computation whatever the training's dtype policy (same weights).
  serving_model = models.create_model(config.model, data.image_shape, config.seed)
  serving_model.set_weights(model.get_weights())
  run_summary = {
      "step": step,
      "epochs": round(step / data.steps_per_epoch, 4),
      "num_parameters": model.count_params(),
  }
  # The export records what it holds: the evaluation may read it while a
  # later run of this workdir rewrites config.json and metrics.json.
  export.export_saved_model(serving_model, dirs.saved_model, training_run={
      **run_summary, "model_type": config.model.type, "noise": config.noise.to_dict()})
  plots_dir = os.path.join(workdir, reports.PLOTS_DIRNAME)
  reports.plot_loss(history, config.train.loss,
                    os.path.join(plots_dir, reports.LOSS_PLOT_FILENAME))
  reports.plot_denoised(sample_clean, sample_noisy,
                        model(sample_noisy, training=False).numpy(),
                        os.path.join(plots_dir, reports.DENOISED_PLOT_FILENAME))
  reports.write_json(os.path.join(workdir, reports.METRICS_FILENAME), {
      "split": config.eval_split,
      "noise": config.noise.to_dict(),
      **run_summary,
      **eval_metrics,
  })
