"""The serving directory: TF Serving's `<serving_dir>/<version>/` layout, read and pushed to.

TF Serving watches a model's base directory and serves its highest numbered
version. `serving_version` finds the model in service: the highest numbered
folder holding a loadable SavedModel; a numbered folder without one (a push
killed midway on gs://, a copy by hand) is skipped with a warning, since a
server fails to load it too and keeps the version below. `push` copies a
SavedModel in as the next version, numbered above every numbered folder
(corrupt ones included, so no number is ever reused).

The push is atomic on a local disk: the copy is written to a hidden temporary
sibling (not a number, so TF Serving ignores it) and renamed into place, so a
server never sees a half-written version. On gs:// a rename copies object by
object, so the copy goes straight into the version folder with
`saved_model.pb` last: until that file lands the folder is not a SavedModel
(`tf.saved_model.contains_saved_model` is False) and a server's load of it
fails and is retried at its next poll.
"""

import dataclasses
import os

from absl import logging
import tensorflow as tf

from input_pipeline import storage
from trainer import workdir as workdir_lib

# Prefix of a push in progress (local disks); not a number, so TF Serving skips it.
_TEMPORARY_PREFIX = ".push-"
# The file that makes a directory a SavedModel; copied last on gs://.
_SAVED_MODEL_FILENAME = "saved_model.pb"


@dataclasses.dataclass(frozen=True)
class Version:
  """One numbered folder of the serving directory."""
  number: int
  path: str


def check_serving_dir(serving_dir: str, flag: str = "--serving_dir") -> None:
  """Raises errors.ConfigError naming the fix if `serving_dir` cannot take a pushed version.

  A file in its place, a local directory (or its nearest existing parent) this
  user cannot write, a gs:// path that does not take a small file in seconds.
  """
  workdir_lib.check_workdir(serving_dir, flag)


def versions(serving_dir: str) -> list[Version]:
  """The numbered folders of `serving_dir`, lowest first ([] if it does not exist)."""
  if not tf.io.gfile.isdir(serving_dir):
    return []
  found = []
  for name in tf.io.gfile.listdir(serving_dir):
    name = name.rstrip("/")
    if name.isdigit() and tf.io.gfile.isdir(os.path.join(serving_dir, name)):
      found.append(Version(int(name), os.path.join(serving_dir, name)))
  return sorted(found, key=lambda version: version.number)


def is_loadable(path: str) -> bool:
  """True if `path` holds a SavedModel that `tf.saved_model.load` reads."""
  if not tf.saved_model.contains_saved_model(path):
    return False
  try:
    tf.saved_model.load(path)
  except (tf.errors.OpError, ValueError, OSError) as error:
    logging.warning("%s holds a SavedModel that does not load (%s).", path,
                    " ".join(str(error).split())[:200])
    return False
  return True


def serving_version(serving_dir: str) -> Version | None:
  """The version in service: the highest loadable one; None if there is none.

  Higher numbered folders that do not load are skipped with a warning.
  """
  for version in reversed(versions(serving_dir)):
    if is_loadable(version.path):
      return version
    logging.warning("Serving directory %s: version %d holds no loadable SavedModel; ignoring "
                    "it (a model server skips it too). Remove %s.", serving_dir,
                    version.number, version.path)
  return None


def _copy_tree(source: str, destination: str, last: str | None = None) -> None:
  """Copies the directory tree `source` to `destination`; the file named `last` (at the top) last."""
  deferred = []
  for directory, _, files in tf.io.gfile.walk(source):
    relative = os.path.relpath(directory, source)
    target = os.path.normpath(os.path.join(destination, relative))
    tf.io.gfile.makedirs(target)
    for name in files:
      pair = (os.path.join(directory, name), os.path.join(target, name))
      if relative == "." and name == last:
        deferred.append(pair)
      else:
        tf.io.gfile.copy(*pair, overwrite=True)
  for pair in deferred:
    tf.io.gfile.copy(*pair, overwrite=True)


def push(saved_model: str, serving_dir: str) -> Version:
  """Copies the SavedModel at `saved_model` into `serving_dir` as its next version.

  Returns the version written. Raises FileExistsError if another pusher took
  that number meanwhile (nothing is overwritten).
  """
  tf.io.gfile.makedirs(serving_dir)
  existing = versions(serving_dir)
  number = existing[-1].number + 1 if existing else 1
  final = os.path.join(serving_dir, str(number))
  if storage.is_remote(serving_dir):
    if tf.io.gfile.exists(final):
      raise FileExistsError(f"{final} appeared while pushing; push again.")
    _copy_tree(saved_model, final, last=_SAVED_MODEL_FILENAME)
    return Version(number, final)
  temporary = os.path.join(serving_dir, f"{_TEMPORARY_PREFIX}{number}-{os.getpid()}")
  try:
    _copy_tree(saved_model, temporary)
    # os.rename of a directory onto a missing name is atomic; onto an existing
    # non-empty directory it fails, so a concurrent push is never overwritten.
    os.rename(temporary, final)
  except BaseException:
    if tf.io.gfile.exists(temporary):
      tf.io.gfile.rmtree(temporary)
    raise
  logging.info("Pushed %s to %s.", saved_model, final)
  return Version(number, final)
