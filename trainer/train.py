"""The training job: `train_and_evaluate(config, workdir)`.

`train_and_evaluate` sets up once (the config's checks, the strategy, the data
source, the step counts, the workdir's lock, the restored train state, the
step functions) and then runs one loop whose body is the cadence: a chunk of
steps, the hooks between chunks (progress lines, the profiler window), and at
an epoch's end evaluate, report, save. Running it again on the same workdir
resumes from the last checkpoint: the checkpointed global step is the source
of truth for where a run is, and the input pipeline can start at any step (see
`pipeline.create_dataset`).

Under several workers every task runs the same loop and restores from the
chief's checkpoints; only the chief keeps what it writes (see
`checkpoints.Checkpointer` and `reporter.Reporter`).
"""

import contextlib
import dataclasses
import time

from absl import logging
import keras
import ml_collections
import tensorflow as tf

from input_pipeline import data_service
from input_pipeline import data_source
from input_pipeline import pipeline
from trainer import checkpoints
from trainer import errors
from trainer import logs
from trainer import preemption
from trainer import profiling
from trainer import reporter as reporter_lib
from trainer import resources
from trainer import run_files
from trainer import steps as steps_lib
from trainer import strategy as strategy_lib
from trainer import train_state as train_state_lib
from trainer import validation
from trainer import workdir as workdir_lib
from trainer import workdir_lock


def total_steps(config: ml_collections.ConfigDict, data: data_source.DataSource) -> int:
  """Global steps of the whole run: `num_epochs` epochs, or fewer if `train.max_steps` says so."""
  steps = config.train.num_epochs * data.steps_per_epoch
  return min(steps, config.train.max_steps) if config.train.max_steps > 0 else steps


def create_strategy_and_data(config: ml_collections.ConfigDict):
  """The strategy and the data source of a validated config, checked against each other.

  Returns (strategy, data source). The strategy comes first: splitting the
  CPU into logical devices only works before TensorFlow initialises them.
  The trainer and scripts/benchmark.py both start here.
  """
  strategy = strategy_lib.get_strategy(config.runtime)
  validation.validate_batch_sizes(config, strategy.num_replicas_in_sync)
  data = data_source.create_data_source(config)
  return strategy, data


@dataclasses.dataclass(frozen=True)
class Setup:
  """What a run resolves once, before its train state: checked, and the workdir locked."""
  strategy: tf.distribute.Strategy
  data: data_source.DataSource
  dirs: workdir_lib.OutputDirs
  last_step: int
  # The profiler's (first, last) global steps, or None.
  profile_window: tuple[int, int] | None
  # The config changes since the workdir's last run ("name=old -> new").
  changes: tuple[str, ...]
  # The chief's lock on the workdir (an empty one elsewhere), held until the run ends.
  lock: workdir_lock.WorkdirLock
  task_name: str

  def chunk_size(self, step: int, steps_per_loop: int) -> int:
    """Steps of the chunk from `step`: at most `steps_per_loop`, never past an epoch's end."""
    to_epoch_end = self.data.steps_per_epoch - step % self.data.steps_per_epoch
    return min(steps_per_loop, to_epoch_end, self.last_step - step)

  def evaluates_after(self, step: int, eval_every_epochs: int) -> bool:
    """Evaluate after every `eval_every_epochs` full epochs, and at the end."""
    epochs, remainder = divmod(step, self.data.steps_per_epoch)
    return step == self.last_step or (remainder == 0 and epochs % eval_every_epochs == 0)


def setup(config: ml_collections.ConfigDict, dirs: workdir_lib.OutputDirs,
          allow_config_change: bool) -> Setup:
  """Checks everything that can be checked, then builds the strategy and the data once.

  Raises:
    errors.UserError: a bad config, workdir or dataset, or a config the
      workdir's checkpoints cannot follow; nothing is written.
  """
  validation.validate_config(config)
  workdir_lib.check_workdir(dirs.workdir)
  workdir_lib.check_output_paths(dirs)
  strategy, data = create_strategy_and_data(config)
  # Checked before the lock, like every setting: a bad window writes nothing.
  profile_window = profiling.resolve_window(config.runtime.profile_steps,
                                            total_steps(config, data))
  if config.input.data_service_address:
    data_service.check_serving(config.input.data_service_address,
                               config.input.data_service_timeout_seconds)
  # The chief locks the workdir before reading anything in it: a second
  # trainer on it would interleave checkpoints and reports.
  lock = (workdir_lock.acquire(dirs.workdir, config.runtime.ignore_run_marker)
          if strategy_lib.is_chief(strategy) else workdir_lock.WorkdirLock())
  try:
    changes = _check_resumable(config, dirs, allow_config_change)
  except BaseException:
    lock.release()
    raise
  return Setup(strategy=strategy, data=data, dirs=dirs, last_step=total_steps(config, data),
               profile_window=profile_window,
               changes=tuple(changes), lock=lock, task_name=strategy_lib.task_name(strategy))


def _check_resumable(config, dirs: workdir_lib.OutputDirs, allow_config_change: bool) -> list[str]:
  """The config's changes since the workdir's last run, if the run may go on with them."""
  previous = run_files.read_config(dirs.workdir)
  if previous is None and checkpoints.find_checkpoints(dirs.checkpoints):
    # Without the earlier config the changed-settings guard has nothing to
    # compare with: resuming silently could mix two settings into one run.
    if not allow_config_change:
      raise errors.ConfigError(
          f"{dirs.checkpoints} holds checkpoints but "
          f"{dirs.file(workdir_lib.CONFIG_FILENAME)} is missing, empty or not a "
          "JSON object (and config_history.json cannot stand in), so this run's settings "
          "cannot be checked against theirs; restore that file, pass "
          "--allow_config_change to resume with these settings, or use a new --workdir.")
    logging.warning("No earlier config in %s; resuming its checkpoints with this config "
                    "(--allow_config_change).", dirs.workdir)
  return validation.check_resumable(config, previous, allow_config_change)


def _restore_train_state(config, run: Setup) -> train_state_lib.TrainState:
  """The train state at the workdir's last checkpoint, if the run is not already past its end."""
  state = train_state_lib.create_train_state(config, run.data, run.dirs.checkpoints,
                                             run.strategy, run.last_step)
  if state.step > run.last_step:
    raise errors.ConfigError(
        f"train.num_epochs={config.train.num_epochs} (train.max_steps="
        f"{config.train.max_steps}) ends at step {run.last_step}, but {run.dirs.checkpoints} "
        f"is already trained to step {state.step}; raise it, or use a new --workdir.")
  return state


def _make_evaluate(config, run: Setup, model: keras.Model):
  """`evaluate()` -> the eval metrics over the whole noisy eval split, as floats."""
  eval_dataset = run.strategy.distribute_datasets_from_function(
      lambda context: pipeline.create_dataset(run.data, config, "eval", context))
  evaluate = steps_lib.make_eval_function(run.strategy, model, config)
  num_steps = tf.constant(run.data.num_eval_steps)
  return lambda: steps_lib.to_floats(evaluate(iter(eval_dataset), num_steps))


def _is_done(run: Setup, step: int, eval_metrics: dict | None, target_psnr: float) -> bool:
  """At the run's last step, or (`train.stop_at_eval_psnr` > 0) its target PSNR reached."""
  if step == run.last_step:
    return True
  if not (target_psnr and eval_metrics and eval_metrics["psnr"] >= target_psnr):
    return False
  logging.info("%s: eval PSNR %.2f dB at step %d reached train.stop_at_eval_psnr=%.2f; the run "
               "ends here.", run.task_name, eval_metrics["psnr"], step, target_psnr)
  return True


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       dirs: workdir_lib.OutputDirs | None = None,
                       allow_config_change: bool = False) -> keras.Model:
  """Trains the denoising autoencoder described by `config`, writing everything to `workdir`.

  Args:
    config: the training config.
    workdir: directory (local or gs://) for everything the run writes.
    dirs: where the checkpoints, TensorBoard events and SavedModel go;
      default: `workdir_lib.resolve(workdir)` (the workdir, or Vertex AI's
      AIP_* directories where set).
    allow_config_change: resume a workdir trained with other settings that
      change the result (see `validation.check_resumable`).

  Returns the trained model.

  Raises:
    errors.ConfigError: a bad config, found before anything is written.
    errors.PeerLostError: another task of a multi-worker job was lost.
    errors.Preempted: stopped on a signal after saving a checkpoint.
    errors.NonFiniteLossError: the training loss stopped being finite.
  """
  run = setup(config, dirs or workdir_lib.resolve(workdir), allow_config_change)
  with run.lock:
    return _train(config, run)


def _train(config: ml_collections.ConfigDict, run: Setup) -> keras.Model:
  """`train_and_evaluate` once the workdir is locked: set up the state, then the loop."""
  state = _restore_train_state(config, run)
  start_step, steps_per_loop = state.step, config.train.steps_per_loop
  # Only the chief reports (and profiles); decided here, once.
  reporter = reporter_lib.Reporter(config, run.dirs, run.data,
                                   enabled=strategy_lib.is_chief(run.strategy))
  reporter.start(from_step=start_step, changes=list(run.changes))
  profiler = profiling.ProfilerWindow(
      run.profile_window,
      run.dirs.tensorboard_subdirectory(workdir_lib.TRAIN_SUBDIRECTORY), reporter.enabled)
  # Each chunk is one step of TensorBoard's Profile tab while the profiler traces.
  train_steps = profiler.with_step_markers(
      steps_lib.make_train_function(run.strategy, state.model, state.optimizer, config))
  train_iterator = iter(run.strategy.distribute_datasets_from_function(
      lambda context: pipeline.create_dataset(run.data, config, "train", context, start_step)))
  evaluate = _make_evaluate(config, run, state.model)
  hooks = [logs.Progress(run.data.steps_per_epoch, run.last_step, config.train.batch_size,
                         config.train.log_every_steps, reporter.write_step_scalars), profiler]
  logs.log_run_header(run.task_name, state.model, run.data, start_step, run.last_step,
                      config.train.batch_size, run.dirs.workdir)

  step, run_start, target_psnr = start_step, time.time(), config.train.stop_at_eval_psnr
  with contextlib.ExitStack() as stack:
    stack.enter_context(strategy_lib.watch_peers(run.strategy))
    stop_signal = stack.enter_context(preemption.StopSignal())
    for hook in hooks:  # A run that stops early (preempted, a NaN) still writes its trace.
      stack.callback(hook.close)
    # Evaluated first only if the restored model may need no training: trained to
    # its end, or (a rerun) to its target quality at an epoch's end.
    eval_metrics = (evaluate() if step == run.last_step or (
        target_psnr and step and run.evaluates_after(step, config.train.eval_every_epochs))
                    else None)
    done = _is_done(run, step, eval_metrics, target_psnr)
    if done:
      reporter.report_evaluation(step, eval_metrics)
    epoch_means, epoch_start = steps_lib.RunningMeans(), time.time()
    while not done:
      epoch, num_steps = step // run.data.steps_per_epoch, run.chunk_size(step, steps_per_loop)
      for hook in hooks:
        hook.before_chunk(step, num_steps)
      chunk = steps_lib.run_chunk(train_steps, train_iterator, step, num_steps, epoch,
                                  stop_signal.requested)
      step += num_steps
      epoch_means.add(chunk, num_steps)
      for hook in hooks:
        hook.after_chunk(step, epoch_means.result())
      if chunk["stop"] > 0:
        # Preempted: save where we are, now; evaluation would eat the grace period.
        state.save(step)
        raise errors.Preempted(
            f"{run.task_name} stopped on {stop_signal.received or 'another task'}'s request at "
            f"step {step} (epoch {epoch + 1}) and saved a checkpoint there; rerun the same "
            "command to continue from that step.")
      if step % run.data.steps_per_epoch and step < run.last_step:
        continue  # Mid-epoch: the next chunk.
      # The epoch's end (or the run's): evaluate, report, save, log.
      examples_per_second = (epoch_means.steps * config.train.batch_size
                             / (time.time() - epoch_start))
      eval_metrics = (evaluate() if run.evaluates_after(step, config.train.eval_every_epochs)
                      else None)
      reporter.write_epoch(step, epoch, epoch_means.result(), examples_per_second,
                           eval_metrics, state.model, state.optimizer)
      state.save(step)
      seconds_left = (time.time() - run_start) / (step - start_step) * (run.last_step - step)
      logs.log_epoch(epoch, -(-run.last_step // run.data.steps_per_epoch), epoch_means.result(),
                     eval_metrics, examples_per_second, time.time() - epoch_start, seconds_left,
                     resources.rss_mb())
      epoch_means, epoch_start = steps_lib.RunningMeans(), time.time()
      done = _is_done(run, step, eval_metrics, target_psnr)
  reporter.write_final(state.model, step, eval_metrics)
  logs.log_final(run.task_name, step, eval_metrics, checkpoints.weights_fingerprint(state.model),
                 run.dirs.saved_model if reporter.enabled else None)
  return state.model
