"""One workdir, one writer: the chief's lock on a local workdir, a run marker on an object store.

The chief takes `fcntl.flock` on `<workdir>/trainer.lock` before it reads or
writes anything there; a second trainer on the same workdir stops at once,
naming the PID that holds it. The kernel releases the lock when its holder
exits, however it dies (kill -9 included), so there is never a stale lock to
remove. `holder` tells a reader (the evaluation) whether a trainer is running
there.

Object stores (gs://) have no locks. There the chief writes a run marker,
`<workdir>/trainer.marker.json` (host, PID, a heartbeat count), and renews it
every `HEARTBEAT_SECONDS` from a background thread; it deletes it when the run
ends. A second trainer that finds a marker watches it for
`STALE_AFTER_HEARTBEATS` heartbeats: if it is renewed, a live trainer owns the
workdir and the second one stops with one line naming it; if not, its owner is
gone (killed, or its machine lost) and the marker is taken over, so a job
restarted after a crash waits about a minute, never forever.
`runtime.ignore_run_marker` skips the check.
"""

import errno
import fcntl
import json
import os
import socket
import threading
import time
import uuid

from absl import logging
import tensorflow as tf

from input_pipeline import storage
from trainer import errors
from trainer import safe_files
from trainer import workdir as workdir_lib

# How often the owner of a run marker renews it, and how many missed renewals
# make it stale. Object stores answer in tens of milliseconds to a second.
HEARTBEAT_SECONDS = 20.0
STALE_AFTER_HEARTBEATS = 3
# After writing its marker a claimant reads it back this much later: of two
# trainers that claimed at once, only the last writer finds its own marker.
_SETTLE_SECONDS = 2.0


class Clock:
  """Real time: what `claim_marker` waits with. Tests hand in a fake that advances by itself."""

  def monotonic(self) -> float:
    return time.monotonic()

  def sleep(self, seconds: float) -> None:
    time.sleep(seconds)


class WorkdirLock:
  """The held lock on one workdir; `release()` (or process exit) frees it."""

  def __init__(self, file=None, marker=None):
    self._file = file
    self._marker = marker

  def __enter__(self) -> "WorkdirLock":
    return self

  def __exit__(self, *exc_info) -> None:
    self.release()

  def release(self) -> None:
    if self._file is not None:
      # Closing the descriptor releases the flock.
      self._file.close()
      self._file = None
    if self._marker is not None:
      self._marker.release()
      self._marker = None


class RunMarker:
  """This process's run marker in a workdir, renewed by a daemon thread until `release()`."""

  def __init__(self, path: str, heartbeat_seconds: float):
    self.path = path
    self._heartbeat_seconds = heartbeat_seconds
    self._content = {"owner": uuid.uuid4().hex, "host": socket.gethostname(),
                     "pid": os.getpid(), "heartbeat": 0}
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._renew, name="run-marker", daemon=True)

  @property
  def owner(self) -> str:
    return self._content["owner"]

  def write(self) -> None:
    with tf.io.gfile.GFile(self.path, "w") as marker_file:
      marker_file.write(json.dumps(self._content))

  def start(self) -> None:
    self._thread.start()

  def _renew(self) -> None:
    while not self._stop.wait(self._heartbeat_seconds):
      if not self.renew_once():
        return

  def renew_once(self) -> bool:
    """One heartbeat: the marker rewritten with the next count; False once another owns it."""
    current = read_marker(self.path)
    if current is not None and current.get("owner") != self.owner:
      logging.error("%s now names another trainer (host %s, PID %s): two trainers are writing "
                    "this workdir.", self.path, current.get("host"), current.get("pid"))
      return False
    self._content["heartbeat"] += 1
    try:
      self.write()
    except tf.errors.OpError as error:  # A transient store error: the next beat retries.
      logging.warning("Could not renew the run marker %s: %s", self.path, error)
    return True

  def release(self) -> None:
    self._stop.set()
    if self._thread.is_alive():
      self._thread.join()
    try:
      current = read_marker(self.path)
      if current is not None and current.get("owner") == self.owner:
        tf.io.gfile.remove(self.path)
    except tf.errors.OpError as error:
      # Runs as the run ends, often after another failure: never hide that one.
      logging.warning("Could not remove the run marker %s (%s); the next trainer takes it "
                      "over once it sees no renewal.", self.path, error)


def read_marker(path: str) -> dict | None:
  """A run marker's content; None if there is none, or it is not a marker (then it is replaced)."""
  try:
    with tf.io.gfile.GFile(path) as marker_file:
      content = json.loads(marker_file.read())
  except tf.errors.NotFoundError:
    return None
  except (ValueError, UnicodeDecodeError):
    logging.warning("%s is not a run marker; it is replaced.", path)
    return None
  return content if isinstance(content, dict) and "owner" in content else None


def claim_marker(workdir: str, ignore_marker: bool = False,
                 heartbeat_seconds: float = HEARTBEAT_SECONDS,
                 clock: Clock = Clock()) -> RunMarker:
  """Claims `workdir` with a run marker (see the module docstring), renewed until released.

  `clock` times the watch of an existing marker and the settling read-back.

  Raises:
    errors.ConfigError: a live trainer's marker is there (it was renewed
      while this one watched), or another trainer claimed the workdir at the
      same moment; the message names it.
  """
  marker = RunMarker(os.path.join(workdir, workdir_lib.MARKER_FILENAME), heartbeat_seconds)
  existing = read_marker(marker.path)
  if existing is not None and not ignore_marker:
    watch_seconds = STALE_AFTER_HEARTBEATS * heartbeat_seconds
    logging.info("%s holds a run marker of host %s, PID %s: watching it for %.0f s to see "
                 "whether that trainer is alive.", workdir, existing.get("host"),
                 existing.get("pid"), watch_seconds)
    deadline = clock.monotonic() + watch_seconds
    while clock.monotonic() < deadline:
      clock.sleep(heartbeat_seconds / 4)
      current = read_marker(marker.path)
      if current is not None and current != existing:
        raise _in_use(workdir, current)
    logging.warning("Taking over %s: its trainer (host %s, PID %s) renewed it for none of "
                    "%.0f s, so it is gone.", marker.path, existing.get("host"),
                    existing.get("pid"), watch_seconds)
  tf.io.gfile.makedirs(workdir)
  marker.write()
  clock.sleep(min(_SETTLE_SECONDS, heartbeat_seconds))
  current = read_marker(marker.path)
  if current is not None and current.get("owner") != marker.owner:
    raise _in_use(workdir, current)
  marker.start()
  return marker


def _in_use(workdir: str, marker: dict) -> errors.ConfigError:
  return errors.ConfigError(
      f"--workdir={workdir} is in use by another trainer (host {marker.get('host')}, PID "
      f"{marker.get('pid')} renews {workdir_lib.MARKER_FILENAME} there); wait for it to finish or stop it, "
      "or use another --workdir (--config.runtime.ignore_run_marker=true skips this check).")


def acquire(workdir: str, ignore_marker: bool = False) -> WorkdirLock:
  """Locks the local `workdir` (creating it) for this process; a run marker on an object store.

  Raises:
    errors.ConfigError: another live trainer holds the workdir; the
      message names it.
  """
  if storage.is_remote(workdir):
    return WorkdirLock(marker=claim_marker(workdir, ignore_marker))
  os.makedirs(workdir, exist_ok=True)
  safe_files.check_not_writable_by_others(workdir)
  path = os.path.join(workdir, workdir_lib.LOCK_FILENAME)
  # Never truncates the holder's PID before we own the lock, and never follows
  # a link planted at that name (it would write our PID into its target).
  file = safe_files.open_for_update(path)
  try:
    fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as error:
    file.seek(0)
    holder = file.read().strip() or "unknown"
    file.close()
    if error.errno not in (errno.EWOULDBLOCK, errno.EACCES):
      raise
    raise errors.ConfigError(
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
  if storage.is_remote(workdir):
    return None
  path = os.path.join(workdir, workdir_lib.LOCK_FILENAME)
  try:
    # Not through a link: the trainer never writes through one either.
    file = os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC),
                     encoding="utf-8")
  except OSError:  # No lock file, no such workdir, or a link: no trainer there.
    return None
  with file:  # Closing the descriptor releases the shared lock.
    try:
      fcntl.flock(file.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as error:
      if error.errno not in (errno.EWOULDBLOCK, errno.EACCES):
        raise
      return file.read().strip() or "unknown"
  return None
