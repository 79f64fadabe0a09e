"""TensorBoard summaries: scalars, evaluation images, hparams and the config as text.

Layout under the workdir: `train/` and `eval/` hold the scalars of each phase
(so TensorBoard overlays train and eval curves of the same tag), `eval/` also
holds the image summaries and the hparams session (beside its metrics), and
the workdir itself holds the hparams experiment (its columns) and the config
text. Only the chief writes; other workers get no-op writers.
"""

import json
import os

import ml_collections
import numpy as np
from tensorboard.plugins.hparams import api as hparams_api
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.hparams import plugin_data_pb2
import tensorflow as tf

from trainer import config_lib
from trainer import workdir as workdir_lib

# Eval scalars reported as hparams metrics, so runs can be compared in the HParams tab,
# with what TensorBoard shows as their column titles.
HPARAMS_METRICS = {"psnr": "eval PSNR (dB)", "ssim": "eval SSIM", "loss": "eval loss"}
# The fields that tell runs apart, first and in this order: TensorBoard's HParams
# table opens on the first columns of the declared list (the rest of the config
# follows, alphabetically, so every field is still recorded and can be ticked).
LEADING_HPARAMS = (
    "model.type", "noise.type", "noise.factor", "noise.factor_range", "noise.mixture_types",
    "train.learning_rate", "train.learning_rate_schedule", "train.batch_size",
    "train.num_epochs", "model.latent_dim", "train.loss", "runtime.dtype_policy")
# TensorBoard 2.21 ignores the declared order: its hparams server returns the
# columns sorted by (not `differs`, name), and the HParams tab ticks the first
# five. `differs` is the one lever a writer has, so these five are declared as
# differing between runs: the table opens on model.type, noise.factor,
# noise.factor_range, noise.type and train.learning_rate, in that (name) order.
OPENING_HPARAMS = ("model.type", "noise.type", "noise.factor", "noise.factor_range",
                   "train.learning_rate")


class Writers:
  """The summary writers of one run."""

  def __init__(self, workdir: str, enabled: bool):
    if enabled:
      self.root = tf.summary.create_file_writer(workdir)
      self.train = tf.summary.create_file_writer(os.path.join(workdir, workdir_lib.TRAIN_SUBDIRECTORY))
      self.eval = tf.summary.create_file_writer(os.path.join(workdir, workdir_lib.EVAL_SUBDIRECTORY))
    else:
      self.root = self.train = self.eval = tf.summary.create_noop_writer()

  def flush(self) -> None:
    for writer in (self.root, self.train, self.eval):
      writer.flush()


def _hparam_value(value):
  """HParams take bool, int, float or str only."""
  if isinstance(value, (bool, int, float, str)):
    return value
  return str(value)


def hparams_order(names) -> list[str]:
  """`names` with `LEADING_HPARAMS` first (those present), then the others sorted."""
  names = set(names)
  leading = [name for name in LEADING_HPARAMS if name in names]
  return leading + sorted(names - set(leading))


def _write_hparams_config(names) -> None:
  """`hparams_api.hparams_config` for `names`, with `OPENING_HPARAMS` marked as differing."""
  summary = hparams_api.hparams_config_pb(
      hparams=[hparams_api.HParam(name) for name in names],
      metrics=[hparams_api.Metric(tag, display_name=title)
               for tag, title in HPARAMS_METRICS.items()])
  value = summary.value[0]
  experiment = hparams_metadata.parse_experiment_plugin_data(value.metadata.plugin_data.content)
  for info in experiment.hparam_infos:
    info.differs = info.name in OPENING_HPARAMS
  value.metadata.CopyFrom(hparams_metadata.create_summary_metadata(
      plugin_data_pb2.HParamsPluginData(experiment=experiment)))
  tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=0)


def write_run_description(writers: Writers, config: ml_collections.ConfigDict,
                          trial_id: str) -> None:
  """Writes the hparams session and the resolved config as text, once per run start."""
  hparams = {name: _hparam_value(value)
             for name, value in config_lib.flatten_config(config).items()}
  with writers.eval.as_default():
    # The session lives in the eval run, beside the metrics' scalars: TensorBoard
    # looks a metric up in the run "<session's run>/<group>", and a session in
    # the root run "." would send it to "./eval", which is not the eval run's
    # name ("eval"), and the table's metric columns stayed empty.
    hparams_api.hparams(hparams, trial_id=trial_id)
  with writers.root.as_default():
    _write_hparams_config(hparams_order(hparams))
    config_json = json.dumps(config.to_dict(), indent=2, sort_keys=True)
    # Indented by four spaces: TensorBoard renders text summaries as Markdown.
    tf.summary.text("config", "\n".join("    " + line for line in config_json.splitlines()),
                    step=0)
  writers.flush()


def write_scalars(writer, scalars: dict[str, float], step: int) -> None:
  with writer.as_default():
    for name, value in scalars.items():
      tf.summary.scalar(name, value, step=step)


def write_images(writer, name: str, grid: np.ndarray, step: int) -> None:
  with writer.as_default():
    tf.summary.image(name, grid, step=step, max_outputs=1)
