"""TensorBoard summaries: scalars, evaluation images, hparams and the config as text.

Layout under the workdir: `train/` and `eval/` hold the scalars of each phase
(so TensorBoard overlays train and eval curves of the same tag), `eval/` also
holds the image summaries, and the workdir itself holds the hparams session
and the config text. Only the chief writes; other workers get no-op writers.
"""

import json
import os

import ml_collections
import numpy as np
from tensorboard.plugins.hparams import api as hparams_api
import tensorflow as tf

from trainer import config_lib
from trainer import workdir as workdir_lib

# Eval scalars reported as hparams metrics, so runs can be compared in the HParams tab.
_HPARAMS_METRICS = ("loss", "psnr", "ssim")


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


def write_run_description(writers: Writers, config: ml_collections.ConfigDict,
                          trial_id: str) -> None:
  """Writes the hparams session and the resolved config as text, once per run start."""
  hparams = {name: _hparam_value(value)
             for name, value in config_lib.flatten_config(config).items()}
  with writers.root.as_default():
    hparams_api.hparams_config(
        hparams=[hparams_api.HParam(name) for name in hparams],
        metrics=[hparams_api.Metric(name, group="eval", display_name=f"eval {name}")
                 for name in _HPARAMS_METRICS])
    hparams_api.hparams(hparams, trial_id=trial_id)
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
