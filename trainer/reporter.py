"""What a run reports: TensorBoard summaries, history.json, and at the end the SavedModel,
the plots and metrics.json.

`Reporter` owns the summary writers, the history and the workdir's run files.
Only the chief reports: on every other task it is built disabled (no-op
writers, nothing written), so the training loop calls it the same way on
every task, as Flax's `create_default_writer(just_logging=...)` is used.
"""

import os
import time

import keras
import ml_collections

from input_pipeline import data_source
from input_pipeline import pipeline
from trainer import export
from trainer import fileio
from trainer import models
from trainer import optimizers
from trainer import plots
from trainer import portable_export
from trainer import resources
from trainer import run_files
from trainer import summaries
from trainer import workdir as workdir_lib
from trainer.cloud import hypertune


class Reporter:
  """The chief's TensorBoard writers, history and workdir files; a no-op elsewhere."""

  def __init__(self, config: ml_collections.ConfigDict, dirs: workdir_lib.OutputDirs,
               data: data_source.DataSource, enabled: bool):
    self._config, self._dirs, self._data = config, dirs, data
    self.enabled = enabled
    # Created by `start`, once the workdir's files passed their checks.
    self.writers = summaries.Writers(dirs.tensorboard, enabled=False)
    self.history = []
    self._run_start = time.time()
    # Wall time spent training before this process, so history's elapsed_seconds
    # keeps counting across resumed runs.
    self._earlier_seconds = 0.0
    self._sample_noisy = self._sample_clean = None
    # Inside a Vertex AI tuning trial: the study's metric after each evaluation.
    self._metric_reporter = hypertune.MetricReporter(config.runtime.hypertune_metric,
                                                     enabled=enabled)

  def start(self, from_step: int, changes: list[str]) -> None:
    """Records the run's config and hparams; keeps the history the checkpoint covers.

    Called with the checkpoint restored and the config accepted: only then
    may the run's files change.
    """
    if not self.enabled:
      return
    workdir = self._dirs.workdir
    self.history = run_files.load_history(workdir, up_to_step=from_step)
    if self.history:
      self._earlier_seconds = self.history[-1].get("elapsed_seconds", 0.0)
    fileio.remove_stale_temporaries([workdir, self._dirs.plots])
    run_files.write_config(self._config, workdir, from_step=from_step, changes=changes)
    self.writers = summaries.Writers(self._dirs.tensorboard, enabled=True)
    self._sample_noisy, self._sample_clean = (
        images.numpy() for images in pipeline.first_eval_examples(
            self._data, self._config, self._config.train.num_images_to_show))
    summaries.write_run_description(self.writers, self._config,
                                    trial_id=os.path.basename(os.path.normpath(workdir)))

  def write_step_scalars(self, scalars: dict[str, float], step: int) -> None:
    """Step-level training scalars (the running loss, PSNR and examples/s within an epoch)."""
    summaries.write_scalars(self.writers.train, scalars, step)

  def write_epoch(self, step: int, epoch: int, train_metrics: dict[str, float],
                  examples_per_second: float, eval_metrics: dict[str, float] | None,
                  model: keras.Model, optimizer: keras.optimizers.Optimizer) -> None:
    """An epoch's TensorBoard scalars and images, and its history entry."""
    if not self.enabled:
      return
    summaries.write_scalars(self.writers.train, {
        **train_metrics, "learning_rate": optimizers.current_learning_rate(optimizer),
        "examples_per_second": examples_per_second}, step)
    if eval_metrics is not None:
      self.report_evaluation(step, eval_metrics)
      summaries.write_scalars(self.writers.eval, eval_metrics, step)
      summaries.write_images(self.writers.eval, "denoising/original_noisy_denoised",
                             plots.image_grid(self._sample_clean, self._sample_noisy,
                                              self._denoise_samples(model)), step)
      # History first, then the checkpoint (the caller's next step): a kill
      # between the two leaves a history entry past the checkpoint, which the
      # rerun drops and redoes (`load_history(up_to_step=...)`); the other
      # order would lose it.
      self.history.append({
          "epoch": epoch + 1, "step": step,
          "train_loss": train_metrics["loss"], "train_psnr": train_metrics["psnr"],
          "elapsed_seconds": self._earlier_seconds + time.time() - self._run_start,
          "rss_mb": resources.rss_mb(),
          **{f"eval_{name}": value for name, value in eval_metrics.items()}})
      run_files.write_history(self._dirs.workdir, self.history)
    self.writers.flush()

  def report_evaluation(self, step: int, eval_metrics: dict[str, float]) -> None:
    """An evaluation's metric to a tuning trial's metric file (nothing outside a trial)."""
    self._metric_reporter.report(step, eval_metrics)

  def write_final(self, model: keras.Model, step: int, eval_metrics: dict[str, float]) -> None:
    """The SavedModel, plots/ and metrics.json, in that order.

    metrics.json comes last: it marks a finished run, so a failure in the
    export or the plots must not leave it newer than saved_model/.
    """
    if not self.enabled:
      return
    config, data = self._config, self._data
    # Export a copy built outside the strategy: plain variables, no replicas,
    # and float32 computation whatever the training's dtype policy (same weights).
    serving_model = models.create_model(config.model, data.image_shape, config.seed)
    serving_model.set_weights(model.get_weights())
    run_summary = {
        "step": step,
        "epochs": round(step / data.steps_per_epoch, 4),
        "num_parameters": model.count_params(),
    }
    # The export records what it holds: the evaluation may read it while a
    # later run of this workdir rewrites config.json and metrics.json.
    export.export_saved_model(serving_model, self._dirs.saved_model, training_run={
        **run_summary, "model_type": config.model.type, "noise": config.noise.to_dict()})
    portable_export.export_formats(serving_model, self._dirs.saved_model,
                                   portable_export.parse_formats(config.export.formats))
    plots.plot_loss(self.history, config.train.loss,
                    os.path.join(self._dirs.plots, workdir_lib.LOSS_PLOT_FILENAME))
    plots.plot_denoised(
        self._sample_clean, self._sample_noisy, self._denoise_samples(model),
        os.path.join(self._dirs.plots, workdir_lib.DENOISED_PLOT_FILENAME))
    fileio.write_json(self._dirs.file(workdir_lib.METRICS_FILENAME), {
        "split": config.eval_split,
        "noise": config.noise.to_dict(),
        **run_summary,
        **eval_metrics,
    })

  def _denoise_samples(self, model: keras.Model):
    return model(self._sample_noisy, training=False).numpy()
