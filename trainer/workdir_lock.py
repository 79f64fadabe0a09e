"""One workdir, one writer: the chief's exclusive lock on a local workdir.

The chief takes `fcntl.flock` on `<workdir>/trainer.lock` before it reads or
writes anything there; a second trainer on the same workdir stops at once,
naming the PID that holds it. The kernel releases the lock when its holder
exits, however it dies (kill -9 included), so there is never a stale lock to
remove. gs:// workdirs have no such lock (GCS has no advisory locks): there,
one writer per workdir is the user's to ensure (see docs/reliability.md).
`holder` tells a reader (the evaluation) whether a trainer is running there.
"""

import errno
import fcntl
import os

from absl import logging

from trainer import validation

LOCK_FILENAME = "trainer.lock"


class WorkdirLock:
  """The held lock on one local workdir; `release()` (or process exit) frees it."""

  def __init__(self, file=None):
    self._file = file

  def release(self) -> None:
    if self._file is not None:
      # Closing the descriptor releases the flock.
      self._file.close()
      self._file = None


def acquire(workdir: str) -> WorkdirLock:
  """Locks the local `workdir` (creating it) for this process; a no-op lock for gs:// paths.

  Raises:
    validation.ConfigError: another live process holds the lock; the message
      names its PID.
  """
  if "://" in workdir:
    logging.info("%s is not local: no workdir lock; run one trainer on it at a time.", workdir)
    return WorkdirLock()
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK_FILENAME)
  # "a+": never truncates the holder's PID before we own the lock.
  file = open(path, "a+", encoding="utf-8")  # pylint: disable=consider-using-with
  try:
    fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as error:
    file.seek(0)
    holder = file.read().strip() or "unknown"
    file.close()
    if error.errno not in (errno.EWOULDBLOCK, errno.EACCES):
      raise
    raise validation.ConfigError(
        f"--workdir={workdir} is in use by another trainer (PID {holder} holds {path}); wait "
        "for it to finish or stop it, or use another --workdir.") from error
  file.seek(0)
  file.truncate()
  file.write(f"{os.getpid()}\n")
  file.flush()
  return WorkdirLock(file)


def holder(workdir: str) -> str | None:
  """The PID of the live trainer holding `workdir`'s lock, or None (none, or a gs:// workdir).

  Takes a shared lock for an instant, to test whether a trainer holds the
  exclusive one, and never creates the file. A trainer starting within that
  instant would stop as if another trainer held the workdir; its rerun starts.
  """
  if "://" in workdir:
    return None
  path = os.path.join(workdir, LOCK_FILENAME)
  try:
    file = open(path, encoding="utf-8")  # pylint: disable=consider-using-with
  except OSError:  # No lock file, or no such workdir: no trainer there.
    return None
  with file:  # Closing the descriptor releases the shared lock.
    try:
      fcntl.flock(file.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as error:
      if error.errno not in (errno.EWOULDBLOCK, errno.EACCES):
        raise
      return file.read().strip() or "unknown"
  return None
