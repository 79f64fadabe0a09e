"""Atomic file I/O through tf.io.gfile (so gs:// paths work), for the trainer and the evaluation.

Files are written to a temporary name and renamed, so a crash never leaves
half a file; directories are put in place with renames (`replace_directory`).
JSON files hold no NaN or Infinity (not JSON): non-finite numbers become null.
A JSON file of an earlier run that cannot be read is an `errors.CorruptFileError`
naming it and the fix.
"""

import json
import math
import os

import tensorflow as tf

from trainer import errors
from trainer import safe_files

# Appended to a file's name while it is being written.
TEMPORARY_SUFFIX = safe_files.TEMPORARY_SUFFIX


def remove_stale_temporaries(directories) -> None:
  """Removes the `*.tmp` files a write killed midway left in `directories`."""
  for directory in directories:
    if not tf.io.gfile.isdir(directory):
      continue
    for name in tf.io.gfile.listdir(directory):
      if name.endswith(TEMPORARY_SUFFIX):
        tf.io.gfile.remove(os.path.join(directory, name))


def write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` through a temporary file and a rename.

  Never through a symbolic link planted in the workdir (see `safe_files`).
  """
  safe_files.write_atomically(path, data)


def write_text(path: str, text: str) -> None:
  """Writes `text` (UTF-8) to `path` through a temporary file, like the JSON files."""
  write_bytes(path, text.encode())


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
  write_bytes(path, (text + "\n").encode())


def read_json(path: str):
  """The content of a JSON file of an earlier run; errors.CorruptFileError naming it if unreadable."""
  try:
    with tf.io.gfile.GFile(path, "r") as file:
      return json.load(file)
  except (json.JSONDecodeError, UnicodeDecodeError) as error:
    raise errors.CorruptFileError(
        f"{path} is corrupt ({type(error).__name__}: {error}); move it away to continue "
        "without it, or restore it from a backup.") from error
