"""Is a non-local directory (gs://...) usable? Checked in seconds, before a run starts.

The workdir (`trainer.workdir.check_workdir`) and a `data_dir`
(`data_source.get_builder`) on a filesystem of TensorFlow's (`gs://`, ...) are
tried once at start: the data_dir must exist, the workdir must take a small
file (written and removed at once). Without this, an unreachable bucket (no
network, no credentials, no such bucket, no permission) surfaces as a
traceback from the first file the run touches, after the data is read.

TensorFlow's GCS client retries a failing request up to 10 times with
exponential backoff (1 s doubling to 32 s, about 3 minutes;
GCS_RETRY_CONFIG_MAX_RETRIES and friends). Those settings are read once per
process and should stay generous for a long run's transient errors, so the
check is bounded by a deadline of its own instead: it runs on a daemon thread
and the run is refused if it has not answered within `ANSWER_SECONDS`.

Lives in input_pipeline (the lower layer) so that data_source can use it too.
"""

import os
import socket
import threading

import tensorflow as tf

from trainer import errors

# How long the first check of a non-local directory may take. A working bucket
# answers in about a second, credentials included.
ANSWER_SECONDS = 15.0
_FIX = ("check this machine's network and its Google Cloud credentials (gcloud auth "
        "application-default login, or GOOGLE_APPLICATION_CREDENTIALS=KEY.json) and that the "
        "bucket exists, or use a local path")



def is_remote(path: str) -> bool:
  """True for a path on a filesystem of TensorFlow's (gs://, ...) rather than a local one."""
  return "://" in path



def _within_deadline(function, seconds: float):
  """`function()`'s result, or TimeoutError if it has not returned within `seconds`.

  A call still hanging on a retry is left to its daemon thread, which never
  keeps the process from exiting.
  """
  outcome = {}

  def run():
    try:
      outcome["result"] = function()
    except BaseException as error:  # pylint: disable=broad-except
      outcome["error"] = error

  thread = threading.Thread(target=run, name="dae-storage-check", daemon=True)
  thread.start()
  thread.join(seconds)
  if thread.is_alive():
    raise TimeoutError(f"no answer within {seconds:g} s")
  if "error" in outcome:
    raise outcome["error"]
  return outcome.get("result")


def _write_and_remove(directory: str) -> None:
  # Named per host and process: the tasks of a multi-worker job check at once.
  path = os.path.join(directory, f".dae-trainer-check-{socket.gethostname()}-{os.getpid()}")
  with tf.io.gfile.GFile(path, "w") as file:
    file.write("")
  tf.io.gfile.remove(path)


def check_usable(path: str, flag: str, writable: bool,
                 seconds: float = ANSWER_SECONDS) -> None:
  """Raises errors.UnreachableError unless the non-local directory `path` answers in `seconds`.

  Args:
    path: a non-local directory (`is_remote(path)`); local paths are the
      caller's to check.
    flag: the flag that named it, for the message (e.g. "--workdir").
    writable: the run writes there: a small file is written and removed.
      Otherwise `path` must exist.
    seconds: the deadline of the whole check.
  """
  def check():
    # exists() raises on an unreachable filesystem (isdir() would say False).
    exists = tf.io.gfile.exists(path)
    if writable:
      _write_and_remove(path)
    return exists

  try:
    exists = _within_deadline(check, seconds)
  except TimeoutError as error:
    raise errors.UnreachableError(
        f"{flag}={path} did not answer within {seconds:g} s (TensorFlow's storage client "
        f"keeps retrying); {_FIX}.") from error
  except tf.errors.UnimplementedError as error:
    raise errors.UnreachableError(
        f"{flag}={path}: TensorFlow has no filesystem for {path.split('://')[0]}:// "
        f"({errors.describe(error, 240)}); use a gs:// or local path.") from error
  except (tf.errors.PermissionDeniedError, tf.errors.UnauthenticatedError) as error:
    raise errors.UnreachableError(
        f"{flag}={path} cannot be {'written' if writable else 'read'} with this machine's "
        f"credentials ({errors.describe(error, 240)}); log in with gcloud auth application-default login "
        "(or set GOOGLE_APPLICATION_CREDENTIALS=KEY.json) as an account with access to the "
        f"bucket, or choose another {flag}.") from error
  except tf.errors.NotFoundError as error:
    raise errors.UnreachableError(
        f"{flag}={path} cannot be written ({errors.describe(error, 240)}); check that the bucket exists "
        f"and is spelled right, or choose another {flag}.") from error
  except tf.errors.OpError as error:
    raise errors.UnreachableError(f"{flag}={path} cannot be reached ({errors.describe(error, 240)}); {_FIX}.") from error
  if not exists and not writable:
    raise errors.UnreachableError(
        f"{flag}={path} does not exist; fix {flag}.")
