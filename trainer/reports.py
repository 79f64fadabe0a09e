"""Files a run leaves in its workdir: config.json, config_history.json, history.json,
metrics.json and plots/.

The plotting and writing helpers also serve the evaluation's report
(trainer/evaluation/report.py). All I/O goes through tf.io.gfile so the workdir may
be a gs:// path. Files are written to a temporary name and renamed, so a crash
never leaves half a file; JSON files hold no NaN or Infinity (not JSON):
non-finite numbers become null.
"""

import io
import json
import math
import os

from absl import logging
import matplotlib

matplotlib.use("Agg")  # No display on training machines.
from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
import ml_collections
import numpy as np
import tensorflow as tf

from input_pipeline import storage
from trainer import errors
from trainer import safe_files

CONFIG_FILENAME = "config.json"
CONFIG_HISTORY_FILENAME = "config_history.json"
HISTORY_FILENAME = "history.json"
METRICS_FILENAME = "metrics.json"
PLOTS_DIRNAME = "plots"
LOSS_PLOT_FILENAME = "loss.png"
DENOISED_PLOT_FILENAME = "denoised.png"


_TEMPORARY_SUFFIX = safe_files.TEMPORARY_SUFFIX



def check_workdir(workdir: str, flag: str = "--workdir") -> None:
  """Raises errors.ConfigError naming the fix if `workdir` cannot be a workdir.

  A local path: a file where the directory should be, or a directory (or its
  nearest existing parent) this process cannot write to. A non-local one
  (gs://...): it must take a small file within seconds (`storage.check_usable`).
  `flag` is the command-line flag that named the directory, for the message.
  """
  if not workdir.strip():
    # os.path.abspath("") is the current directory: the run would litter it.
    raise errors.ConfigError(f"{flag}={workdir!r} is empty; name a directory, e.g. {flag}=runs/dae.")
  if storage.is_remote(workdir):
    _check_object_name_length(workdir, flag)
    storage.check_usable(workdir, flag, writable=True)
    return
  path = os.path.abspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    raise errors.ConfigError(f"{flag}={workdir} is a file, not a directory; choose another {flag}.")
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  _check_path_length(workdir, path, existing, flag)
  if not os.path.isdir(existing):
    raise errors.ConfigError(f"{flag}={workdir} cannot be created: {existing} is a file; choose "
                     f"another {flag}.")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise errors.ConfigError(f"{flag}={workdir} cannot be written ({existing} is not writable by "
                     f"this user); choose another {flag} or fix its permissions.")


# Bytes of the longest path a run (or the evaluation) writes below its workdir,
# with room to spare: e.g. train/events.out.tfevents.<time>.<hostname, up to 64
# bytes>.<pid>.<n>.v2, or saved_model.tmp-<pid>-previous/variables/variables.data-00000-of-00001.
_LONGEST_PATH_BELOW_WORKDIR = 160
# Cloud Storage limits an object's name (the path after the bucket) to 1024 bytes.
_MAX_OBJECT_NAME_BYTES = 1024


def _check_path_length(workdir: str, path: str, existing: str, flag: str) -> None:
  """Raises errors.ConfigError if a name in `path` or a file below it would be too long to create.

  Checked before anything is created: os.makedirs would create the parents,
  then fail on the long name, leaving a partial tree.
  """
  name_max = os.pathconf(existing, "PC_NAME_MAX")
  for name in path.split(os.sep):
    if len(os.fsencode(name)) > name_max:
      raise errors.ConfigError(
          f"{flag}={workdir[:80]}... has a name of {len(os.fsencode(name))} bytes "
          f"({name[:40]}...); this filesystem allows {name_max} bytes per name: choose a "
          f"shorter {flag}.")
  path_max = os.pathconf(existing, "PC_PATH_MAX")
  if len(os.fsencode(path)) + _LONGEST_PATH_BELOW_WORKDIR > path_max:
    raise errors.ConfigError(
        f"{flag}={workdir[:80]}... is {len(os.fsencode(path))} bytes long (absolute); with "
        f"the files the run writes below it, paths would pass this system's {path_max}-byte "
        f"limit: choose a {flag} of at most {path_max - _LONGEST_PATH_BELOW_WORKDIR} bytes.")


def _check_object_name_length(workdir: str, flag: str) -> None:
  """Raises errors.ConfigError if the objects below a gs:// workdir would have names too long for GCS."""
  if not workdir.startswith("gs://"):
    return
  object_name = workdir[len("gs://"):].partition("/")[2]
  limit = _MAX_OBJECT_NAME_BYTES - _LONGEST_PATH_BELOW_WORKDIR
  if len(object_name.encode()) > limit:
    raise errors.ConfigError(
        f"{flag}={workdir[:80]}...: its path after the bucket is {len(object_name.encode())} "
        f"bytes; Cloud Storage names are at most {_MAX_OBJECT_NAME_BYTES} bytes with the "
        f"files below it: choose a {flag} whose path is at most {limit} bytes.")


def report_paths(workdir: str) -> list[str]:
  """The files this module writes in `workdir`, with their temporary names."""
  names = [CONFIG_FILENAME, CONFIG_HISTORY_FILENAME, HISTORY_FILENAME, METRICS_FILENAME,
           os.path.join(PLOTS_DIRNAME, LOSS_PLOT_FILENAME),
           os.path.join(PLOTS_DIRNAME, DENOISED_PLOT_FILENAME)]
  return [os.path.join(workdir, name + suffix) for name in names
          for suffix in ("", _TEMPORARY_SUFFIX)]


def check_path_kinds(directories, files, flag: str = "--workdir") -> None:
  """Raises errors.ConfigError naming the first of `directories` that is a file, or of `files` that is a directory.

  A run checks every path it will write before it starts: otherwise a
  metrics.json that is a directory shows only when the run ends, after all
  the training.
  """
  for path in directories:
    if tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path):
      raise errors.ConfigError(f"{path} is a file where the run writes a directory; move it away, or "
                       f"choose another {flag}.")
  for path in files:
    if tf.io.gfile.isdir(path):
      raise errors.ConfigError(f"{path} is a directory where the run writes a file; move it away, or "
                       f"choose another {flag}.")


def remove_stale_temporaries(workdir: str) -> None:
  """Removes the `*.tmp` files a write killed midway leaves in the workdir and plots/."""
  for directory in (workdir, os.path.join(workdir, PLOTS_DIRNAME)):
    if not tf.io.gfile.isdir(directory):
      continue
    for name in tf.io.gfile.listdir(directory):
      if name.endswith(_TEMPORARY_SUFFIX):
        tf.io.gfile.remove(os.path.join(directory, name))


def _write_bytes(path: str, data: bytes) -> None:
  # Never through a symbolic link planted in the workdir (see safe_files).
  safe_files.write_atomically(path, data)


def replace_directory(temporary: str, path: str) -> None:
  """Puts the complete directory `temporary` in place of `path` (which may not exist yet).

  The previous `path` is moved aside with one rename, not deleted in place: a
  kill during a recursive delete would leave a partial `path`. On a local disk
  each rename is atomic; on GCS a directory rename copies, then deletes.
  """
  if tf.io.gfile.exists(path):
    previous = f"{temporary}-previous"
    tf.io.gfile.rename(path, previous)
    tf.io.gfile.rename(temporary, path)
    safe_files.remove_tree(previous)
  else:
    tf.io.gfile.rename(temporary, path)


def _finite_or_none(value):
  """`value` with every non-finite float replaced by None (JSON null)."""
  if isinstance(value, float) and not math.isfinite(value):
    return None
  if isinstance(value, dict):
    return {key: _finite_or_none(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [_finite_or_none(item) for item in value]
  return value


def write_json(path: str, value) -> None:
  text = json.dumps(_finite_or_none(value), indent=2, sort_keys=True, allow_nan=False)
  _write_bytes(path, (text + "\n").encode())


def read_json(path: str):
  """The content of a JSON file of an earlier run; errors.CorruptFileError naming it if unreadable."""
  try:
    with tf.io.gfile.GFile(path, "r") as file:
      return json.load(file)
  except (json.JSONDecodeError, UnicodeDecodeError) as error:
    raise errors.CorruptFileError(
        f"{path} is corrupt ({type(error).__name__}: {error}); move it away to continue "
        "without it, or restore it from a backup.") from error


def write_config(config: ml_collections.ConfigDict, workdir: str, from_step: int = 0,
                 changes: list[str] | None = None) -> None:
  """Saves the resolved config, so a run can always be traced to its settings.

  config.json holds the latest config; config_history.json adds an entry for
  each stretch of steps trained with another config, with what changed.
  """
  history_path = os.path.join(workdir, CONFIG_HISTORY_FILENAME)
  stretches = read_json(history_path) if tf.io.gfile.exists(history_path) else []
  if not isinstance(stretches, list):
    raise errors.CorruptFileError(
        f"{history_path} holds a {type(stretches).__name__}, not a list of config stretches; "
        "move it away to start a new one, or restore it from a backup.")
  write_json(os.path.join(workdir, CONFIG_FILENAME), config.to_dict())
  if not stretches or changes:
    stretches.append({"from_step": from_step, "changes": changes or [],
                      "config": config.to_dict()})
    write_json(history_path, stretches)


def read_config(workdir: str) -> dict | None:
  """The config of an earlier run in `workdir`, or None if it left none usable.

  config.json if it holds a non-empty JSON object; otherwise (missing, `{}`,
  a list, ...) the config of config_history.json's last stretch if that is
  one. A file that is not JSON at all raises errors.CorruptFileError.
  """
  path = os.path.join(workdir, CONFIG_FILENAME)
  config = read_json(path) if tf.io.gfile.exists(path) else None
  if isinstance(config, dict) and config:
    return config
  history_path = os.path.join(workdir, CONFIG_HISTORY_FILENAME)
  stretches = read_json(history_path) if tf.io.gfile.exists(history_path) else None
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
  path = os.path.join(workdir, HISTORY_FILENAME)
  if not tf.io.gfile.exists(path):
    return []
  history = read_json(path)
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
  write_json(os.path.join(workdir, HISTORY_FILENAME), history)


def _save_figure(figure, path: str) -> None:
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
  pyplot.close(figure)
  _write_bytes(path, buffer.getvalue())


def plot_loss(history: list[dict[str, float]], loss_name: str, path: str) -> None:
  """Train and validation loss per epoch, log scale."""
  epochs = [entry["epoch"] for entry in history]
  figure, axes = pyplot.subplots(figsize=(8, 4.5))
  axes.plot(epochs, [entry["train_loss"] for entry in history], marker=".",
            label="train (noisy train -> clean)")
  axes.plot(epochs, [entry["eval_loss"] for entry in history], marker=".",
            label="validation (noisy test -> clean)")
  axes.set_yscale("log")
  axes.set_xlabel("epoch")
  axes.set_ylabel(f"loss ({loss_name})")
  axes.set_title("Denoising autoencoder loss")
  axes.grid(True, which="both", alpha=0.3)
  axes.legend()
  _save_figure(figure, path)


def plot_denoised(clean: np.ndarray, noisy: np.ndarray, denoised: np.ndarray,
                  path: str) -> None:
  """Rows original / noisy / denoised, one column per image."""
  plot_image_rows((("original", clean), ("noisy", noisy), ("denoised", denoised)), path)


def plot_image_rows(rows, path: str, title: str | None = None) -> None:
  """A row of images [n, H, W, 1] in [0, 1] per (label, images) of `rows`, a column per image."""
  num_images = rows[0][1].shape[0]
  figure, axes = pyplot.subplots(len(rows), num_images, squeeze=False,
                                 figsize=(1.6 * num_images, 1.8 * len(rows)))
  if title:
    figure.suptitle(title)
  for row, (label, images) in enumerate(rows):
    for column in range(num_images):
      axis = axes[row][column]
      axis.imshow(images[column, :, :, 0], cmap="gray", vmin=0.0, vmax=1.0)
      axis.set_xticks([])
      axis.set_yticks([])
      if column == 0:
        axis.set_ylabel(label)
  figure.tight_layout()
  _save_figure(figure, path)


def plot_lines(series, x_label: str, y_label: str, title: str, path: str,
               dashed=()) -> None:
  """One line per `label: (xs, ys)` of `series`; labels in `dashed` are drawn dashed."""
  figure, axes = pyplot.subplots(figsize=(8, 5))
  for label, (xs, ys) in series.items():
    axes.plot(xs, ys, marker=".", linestyle="--" if label in dashed else "-", label=label)
  axes.set_xlabel(x_label)
  axes.set_ylabel(y_label)
  axes.set_title(title)
  axes.grid(True, alpha=0.3)
  axes.legend(fontsize="small")
  _save_figure(figure, path)


def image_grid(clean: np.ndarray, noisy: np.ndarray, denoised: np.ndarray) -> np.ndarray:
  """One [1, 3 * 28, n * 28, 1] image: rows original, noisy, denoised."""
  return image_rows_grid((clean, noisy, denoised))


def image_rows_grid(rows) -> np.ndarray:
  """One [1, len(rows) * H, n * W, 1] image: each [n, H, W, 1] array of `rows` as a row."""
  return np.concatenate([np.concatenate(list(images), axis=1) for images in rows],
                        axis=0)[np.newaxis]


def write_text(path: str, text: str) -> None:
  """Writes `text` (UTF-8) to `path` through a temporary file, like the JSON files."""
  _write_bytes(path, text.encode())
