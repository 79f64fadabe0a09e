"""Saving and restoring the train state: `Checkpointer`, and a fingerprint of the weights."""

import hashlib
import os
import tempfile

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from trainer import validation


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
