"""Saving and restoring the train state: `Checkpointer`, and a fingerprint of the weights."""

import hashlib
import os
import re
import tempfile

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from trainer import errors
from trainer import safe_files


# The names tf.train.CheckpointManager gives its checkpoints: ckpt-<step>.index + data files.
_INDEX_PATTERN = re.compile(r"ckpt-(\d+)\.index$")


def find_checkpoints(directory: str) -> list[str]:
  """The checkpoint prefixes in `directory`, oldest (lowest number) first.

  Found from the `ckpt-N.index` files themselves, not from the `checkpoint`
  state file: a garbled or empty state file must not hide them (a rerun would
  then train from zero and overwrite them).
  """
  if not tf.io.gfile.isdir(directory):
    return []
  numbers = sorted(int(match.group(1)) for match in (
      _INDEX_PATTERN.match(name) for name in tf.io.gfile.listdir(directory)) if match)
  return [os.path.join(directory, f"ckpt-{number}") for number in numbers]


# Every file name of a checkpoint: its index and its data shards.
_FILE_PATTERN = re.compile(r"ckpt-\d+\.(index|data-\d+-of-\d+)$")
_STATE_FILENAME = "checkpoint"


def file_paths(directory: str) -> list[str]:
  """The files checkpoints are kept in: the state file, and each existing checkpoint's files."""
  names = tf.io.gfile.listdir(directory) if tf.io.gfile.isdir(directory) else []
  return [os.path.join(directory, name) for name in [_STATE_FILENAME, *sorted(
      name.rstrip("/") for name in names if _FILE_PATTERN.match(name.rstrip("/")))]]


def _state_paths(directory: str) -> list[str] | None:
  """The checkpoints the `checkpoint` state file lists, oldest first; None if it is unreadable."""
  try:
    state = tf.train.get_checkpoint_state(directory)
  except ValueError:  # An empty file, or one naming no checkpoint.
    return None
  if state is None:
    return None
  paths = list(state.all_model_checkpoint_paths)
  if state.model_checkpoint_path not in paths:
    paths.append(state.model_checkpoint_path)
  return paths


def repair_state_file(directory: str) -> None:
  """Rewrites `directory`'s `checkpoint` state file if it disagrees with the files there.

  tf.train.CheckpointManager numbers new checkpoints and deletes old ones from
  that file; a garbled one would make it forget (and never delete) the
  existing checkpoints. The chief calls this before creating its manager.
  """
  found = find_checkpoints(directory)
  if not found or _state_paths(directory) == found:
    return
  logging.warning("%s does not list the checkpoints in %s (%s); rewriting it from the files.",
                  os.path.join(directory, _STATE_FILENAME), directory,
                  ", ".join(os.path.basename(path) for path in found))
  # The manager only deletes checkpoints whose timestamp is after the "last
  # preserved" one: the files' own times, so max_to_keep counts them.
  timestamps = [tf.io.gfile.stat(f"{path}.index").mtime_nsec / 1e9 for path in found]
  tf.compat.v1.train.update_checkpoint_state(
      directory, found[-1], all_model_checkpoint_paths=found,
      all_model_checkpoint_timestamps=timestamps,
      last_preserved_timestamp=min(timestamps) - 1.0)


def weights_fingerprint(model: keras.Model) -> str:
  """A short hash of every weight's bytes: equal on all tasks iff their weights are identical."""
  return arrays_fingerprint(model.get_weights())


def arrays_fingerprint(arrays) -> str:
  """`weights_fingerprint` of weights given as arrays in the model's order (a loaded
  SavedModel's `variables`, for one exported by trainer/export.py)."""
  digest = hashlib.sha256()
  for array in arrays:
    digest.update(np.ascontiguousarray(array).tobytes())
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
    self._task_name = task_name.replace(" ", "-")
    self._manager = None
    if is_chief:
      repair_state_file(directory)
      self._manager = tf.train.CheckpointManager(checkpoint, directory, max_to_keep=max_to_keep)

  def restore_latest(self) -> str | None:
    """Restores the chief's newest intact checkpoint, if any; returns its path.

    The checkpoints are found from their files (`find_checkpoints`), newest
    first. A checkpoint that cannot be read (a truncated or garbled file, say after a
    disk filled up) is skipped with one warning naming it, for the one before.

    Raises:
      errors.ConfigError: a checkpoint was written by another model, or
        none of the checkpoints can be read.
    """
    unreadable = []
    for path in reversed(find_checkpoints(self.directory)):
      try:
        self._checkpoint.restore(path).assert_existing_objects_matched()
      except (AssertionError, ValueError) as error:
        raise errors.ConfigError(
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
      raise errors.ConfigError(
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
        safe_files.remove_tree(os.path.join(self.directory, name))

  def save(self, number: int) -> None:
    if self._is_chief:
      self._manager.save(checkpoint_number=number)
      return
    # A new directory for each save (mkdtemp: this user's only, under a name
    # no one could plant a link at beforehand; a fixed name in /tmp could be
    # one), removed at once.
    write_dir = tempfile.mkdtemp(prefix=f"dae-trainer-{self._task_name}-")
    try:
      tf.train.CheckpointManager(self._checkpoint, write_dir, max_to_keep=1).save(
          checkpoint_number=number)
    finally:
      safe_files.remove_tree(write_dir)
