"""What the command-line tools of training share: flag parsing and one-line failures.

`python -m trainer.main` and `scripts/benchmark.py` parse their flags and load
their `--config` with `parse_flags` (passed to `absl.app.run`), so a missing
config file or a misspelled `--config.*` override ends both with one line
starting "dae-trainer:", and end expected failures with `fail`.
"""

import errno
import re
import sys

from absl import flags
from absl import logging

from trainer.cloud import hypertune


def describe(error: BaseException) -> str:
  """`error` as one line: its type and the start of its message."""
  text = " ".join(str(error).replace("\\n", " ").split())
  return f"{type(error).__name__}: {text[:400]}"


def config_error(error: Exception, argv: list[str]) -> str:
  """One line for a config that could not be built: an unknown override, or a broken file."""
  config_file = next((argument.split("=", 1)[1] for argument in argv
                      if argument.startswith("--config=")), "the --config file")
  overrides = {argument.split("=", 1)[0].rsplit(".", 1)[-1] for argument in argv
               if argument.startswith("--config.")}
  key = re.search(r"""["']?(\w+)["']?""", str(error).strip("'\" ")) if isinstance(
      error, (AttributeError, KeyError)) else None
  if key and key.group(1) in overrides:
    # config_flags reports an unknown `--config.a.b` key this way.
    message = str(error).replace("\\n", ". ").replace("\\'", "").strip("'\" ")
    return (f"dae-trainer: unknown config key in a --config.* override: {message} "
            "Valid keys are the fields of configs/default.py.")
  return (f"dae-trainer: cannot load the config file {config_file} ({describe(error)}); "
          "check the path and that its get_config() runs, e.g. python -c \"import runpy; "
          f"runpy.run_path('{config_file}')['get_config']()\".")


# How a full disk (or quota) shows in an OSError's errno, or in the message of
# a TensorFlow error (a checkpoint's SaveV2, a SavedModel write, a summary).
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded")


def disk_full_message(error: BaseException) -> str | None:
  """The one line for a write that failed on a full disk, or None if `error` is another failure."""
  if isinstance(error, OSError) and error.errno in _DISK_FULL_ERRNOS:
    where = f" writing {error.filename}" if error.filename else ""
  elif not isinstance(error, OSError) and any(text in str(error) for text in _DISK_FULL_TEXTS):
    where = ""  # A TensorFlow error's message names the file itself.
  else:
    return None
  return (f"the disk is full{where} ({describe(error)}); free space or choose another --workdir, "
          "then rerun the same command: it resumes from the last complete checkpoint.")


def out_of_memory_message(error: BaseException) -> str | None:
  """The one line for a tensor that did not fit in memory, or None if `error` is another failure."""
  if "OOM when allocating" not in str(error):
    return None
  return (f"out of memory ({describe(error)}); lower train.batch_size, train.eval_batch_size or "
          "the model's size (model.latent_dim, its hidden units or filters).")


def parse_flags(argv: list[str]) -> list[str]:
  """Parses flags and loads the config; any problem exits with one line."""
  try:
    # Vertex AI tuning trials pass `--config.a.b VALUE`; absl needs `--config.a.b=VALUE`.
    remaining = flags.FLAGS(hypertune.normalize_vertex_args(argv))
    flags.FLAGS.config.lock()  # Loads the file now, if loading was deferred.
  except flags.Error as error:
    raise SystemExit(f"FATAL Flags parsing error: {error}\n"
                     "Pass --helpshort or --helpfull to see help on flags.") from error
  except Exception as error:  # pylint: disable=broad-except
    # A config file runs arbitrary Python: any error in it is the user's to fix.
    raise SystemExit(config_error(error, argv)) from error
  return remaining


def fail(message: str, exit_code: int = 1):
  """Ends the process with `message` as its last line; the traceback only at --verbosity>=1."""
  if logging.get_verbosity() >= logging.DEBUG:
    logging.exception("dae-trainer failed:")
  print(f"dae-trainer: {message}", file=sys.stderr, flush=True)
  sys.exit(exit_code)
