"""Writing and removing files in a workdir without following a symbolic link planted there.

A workdir under /tmp (as in the README's examples) is a place where another
local user may have created the directory, or names in it, first. A writer
that follows a link there writes, or deletes, whatever the link points to, with
the trainer's permissions. So, on a local disk:

- Files are written to a temporary name created with `O_CREAT | O_EXCL |
  O_NOFOLLOW` (a leftover or planted entry of that name is unlinked first: the
  link goes, never its target), then renamed over the final name. `rename`
  replaces a symbolic link at the final name with the new file, so a link
  planted there is replaced, atomically, and its target is never opened.
- Directories are removed with `shutil.rmtree`, which unlinks the links it
  meets instead of descending into them, and a link in place of a directory is
  unlinked. (TensorFlow's `tf.io.gfile.rmtree` follows both: given a link to a
  directory it empties the target.)
- `open_for_update` opens a file that must keep its identity (the workdir's
  lock) with `O_NOFOLLOW`, and refuses anything but a regular file with one
  link: that one cannot be replaced by a rename.
- `check_not_writable_by_others` refuses a workdir that belongs to another
  user or that every user can write to: there someone else could plant links
  where TensorFlow itself writes (checkpoints, TensorBoard events), which this
  module cannot guard.

Object stores (gs://) have no links; there the `tf.io.gfile` calls are used.
"""

import errno
import os
import shutil
import stat

import tensorflow as tf

from input_pipeline import storage
from trainer import errors

TEMPORARY_SUFFIX = ".tmp"
# O_NOFOLLOW refuses a link as the last component; O_CLOEXEC keeps the file
# out of child processes (the evaluation's workers).
_NO_FOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


def _symlink_refused(path: str) -> errors.ConfigError:
  target = os.readlink(path) if os.path.islink(path) else "?"
  return errors.ConfigError(
      f"{path} is a symbolic link (to {target}) where the run writes a file; the trainer never "
      "writes through one (it would overwrite a file outside the workdir): remove the link, "
      "or choose another --workdir.")


def write_atomically(path: str, data: bytes) -> None:
  """Writes `data` to `path` through `path + ".tmp"` and a rename; never through a link."""
  directory = os.path.dirname(path)
  temporary = f"{path}{TEMPORARY_SUFFIX}"
  if storage.is_remote(path):
    tf.io.gfile.makedirs(directory)
    with tf.io.gfile.GFile(temporary, "wb") as file:
      file.write(data)
    tf.io.gfile.rename(temporary, path, overwrite=True)
    return
  if directory:
    os.makedirs(directory, exist_ok=True)
  try:
    os.unlink(temporary)  # A killed write's leftover, or a planted link: the entry goes.
  except FileNotFoundError:
    pass
  try:
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NO_FOLLOW, 0o666)
  except FileExistsError as error:
    # Created again between the unlink and the open: someone else writes here.
    raise errors.ConfigError(
        f"{temporary} reappeared while this run was writing it: another process writes in "
        f"{directory}; stop it, or choose another --workdir.") from error
  try:
    with os.fdopen(descriptor, "wb") as file:
      file.write(data)
    os.replace(temporary, path)
  except BaseException:
    try:
      os.unlink(temporary)
    except FileNotFoundError:
      pass
    raise


def remove_tree(path: str) -> None:
  """Removes the directory `path`; a link there is unlinked, and no link inside is followed."""
  if storage.is_remote(path):
    tf.io.gfile.rmtree(path)
  elif os.path.islink(path) or not os.path.isdir(path):
    os.unlink(path)
  else:
    shutil.rmtree(path)


def open_for_update(path: str):
  """Opens (creating) the regular file `path` for reading and writing, without following a link.

  Returns a text file object positioned at the start; nothing is truncated.

  Raises:
    errors.ConfigError: `path` is a symbolic link, not a regular file
      (a FIFO, a device), or a hard link to another file.
  """
  try:
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NONBLOCK | _NO_FOLLOW, 0o644)
  except OSError as error:
    if error.errno == errno.ELOOP:
      raise _symlink_refused(path) from error
    raise
  status = os.fstat(descriptor)
  if not stat.S_ISREG(status.st_mode) or status.st_nlink != 1:
    os.close(descriptor)
    kind = "a hard link to another file" if stat.S_ISREG(status.st_mode) else "not a regular file"
    raise errors.ConfigError(
        f"{path} is {kind}; the trainer writes its PID there: remove it, or choose another "
        "--workdir.")
  os.set_blocking(descriptor, True)
  return os.fdopen(descriptor, "r+", encoding="utf-8")


def check_not_writable_by_others(workdir: str) -> None:
  """Raises errors.ConfigError if another user may plant files in the local `workdir`.

  That is: it belongs to another user (root aside), or every user may write in
  it. A group's members are trusted.
  """
  if storage.is_remote(workdir):
    return
  status = os.stat(workdir)
  mode = status.st_mode
  if status.st_uid not in (os.geteuid(), 0):
    raise errors.ConfigError(
        f"--workdir={workdir} belongs to another user (uid {status.st_uid}), who could plant "
        "links there that make the run overwrite or delete their targets; use a directory "
        "of your own (another --workdir).")
  if mode & stat.S_IWOTH:
    raise errors.ConfigError(
        f"--workdir={workdir} is writable by every user (mode {stat.filemode(mode)}): anyone "
        "could plant links there that make the run overwrite or delete their targets; use a "
        f"directory of your own (e.g. chmod o-w {workdir}, or another --workdir).")
