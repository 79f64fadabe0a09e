"""The run files of a workdir: config.json, config_history.json and history.json.

They let a rerun check its settings against the earlier run's
(`validation.check_resumable`) and continue its history; metrics.json, the
plots and the SavedModel are written at the end (`trainer.reporter`).
"""

import os

from absl import logging
import ml_collections
import tensorflow as tf

from trainer import errors
from trainer import fileio
from trainer import workdir as workdir_lib


def write_config(config: ml_collections.ConfigDict, workdir: str, from_step: int = 0,
                 changes: list[str] | None = None) -> None:
  """Saves the resolved config, so a run can always be traced to its settings.

  config.json holds the latest config; config_history.json adds an entry for
  each stretch of steps trained with another config, with what changed.
  """
  history_path = os.path.join(workdir, workdir_lib.CONFIG_HISTORY_FILENAME)
  stretches = fileio.read_json(history_path) if tf.io.gfile.exists(history_path) else []
  if not isinstance(stretches, list):
    raise errors.CorruptFileError(
        f"{history_path} holds a {type(stretches).__name__}, not a list of config stretches; "
        "move it away to start a new one, or restore it from a backup.")
  fileio.write_json(os.path.join(workdir, workdir_lib.CONFIG_FILENAME), config.to_dict())
  if not stretches or changes:
    stretches.append({"from_step": from_step, "changes": changes or [],
                      "config": config.to_dict()})
    fileio.write_json(history_path, stretches)


def read_config(workdir: str) -> dict | None:
  """The config of an earlier run in `workdir`, or None if it left none usable.

  config.json if it holds a non-empty JSON object; otherwise (missing, `{}`,
  a list, ...) the config of config_history.json's last stretch if that is
  one. A file that is not JSON at all raises errors.CorruptFileError.
  """
  path = os.path.join(workdir, workdir_lib.CONFIG_FILENAME)
  config = fileio.read_json(path) if tf.io.gfile.exists(path) else None
  if isinstance(config, dict) and config:
    return config
  history_path = os.path.join(workdir, workdir_lib.CONFIG_HISTORY_FILENAME)
  stretches = fileio.read_json(history_path) if tf.io.gfile.exists(history_path) else None
  if isinstance(stretches, list) and stretches and isinstance(stretches[-1], dict):
    config = stretches[-1].get("config")
    if isinstance(config, dict) and config:
      logging.warning("%s is missing or not a config; checking this run against the last "
                      "config in %s instead.", path, history_path)
      return config
  return None


def load_history(workdir: str, up_to_step: int | None = None) -> list[dict[str, float | None]]:
  """Per-epoch metrics recorded in workdir, those up to global step `up_to_step` if given.

  A resumed run keeps the entries its checkpoint covers and drops any a killed
  run wrote after its last checkpoint.
  """
  path = os.path.join(workdir, workdir_lib.HISTORY_FILENAME)
  if not tf.io.gfile.exists(path):
    return []
  history = fileio.read_json(path)
  if not (isinstance(history, list) and all(
      isinstance(entry, dict) and isinstance(entry.get("step"), int)
      and all(isinstance(value, (int, float)) or value is None
              for name, value in entry.items() if "loss" in name) for entry in history)):
    raise errors.CorruptFileError(
        f"{path} is not a list of epoch entries with an integer step and numeric losses; "
        "move it away to continue without it, or restore it from a backup.")
  if up_to_step is None:
    return history
  return [entry for entry in history if entry["step"] <= up_to_step]


def write_history(workdir: str, history: list[dict[str, float]]) -> None:
  fileio.write_json(os.path.join(workdir, workdir_lib.HISTORY_FILENAME), history)
