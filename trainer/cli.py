"""The one command-line runner of the project's tools: flags, the config, and one-line failures.

`python -m trainer.main`, `python -m trainer.evaluate` and the scripts that take
a `--config` start with `cli.run(main, ...)`. It parses the flags and loads the
config (a missing file, a broken `get_config()` or a misspelled `--config.*`
override ends with one line), calls `main(argv)`, and turns every expected
failure into one line "<program>: <message>" and an exit status: any
`errors.UserError` (its own `exit_code`: 1, or 75 for `errors.Preempted`), a
corrupt file, a permission problem, a full disk, a tensor too large for memory.
The traceback is logged only at --verbosity=1. Anything else is a bug and keeps
its traceback.
"""

import errno
import functools
import re
import sys

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf

from trainer import errors
from trainer.cloud import hypertune


def config_error(error: Exception, argv: list[str], config_fields: str) -> str:
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
    return (f"unknown config key in a --config.* override: {message} "
            f"Valid keys are the fields of {config_fields}.")
  return (f"cannot load the config file {config_file} ({errors.describe(error)}); "
          "check the path and that its get_config() runs, e.g. python -c \"import runpy; "
          f"runpy.run_path('{config_file}')['get_config']()\".")


# How a full disk (or quota) shows in an OSError's errno, or in the message of
# a TensorFlow error (a checkpoint's SaveV2, a SavedModel write, a summary).
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_DISK_FULL_TEXTS = ("No space left on device", "Disk quota exceeded")


def disk_full_message(error: BaseException, output_flag: str = "--workdir") -> str | None:
  """The one line for a write that failed on a full disk, or None if `error` is another failure."""
  if isinstance(error, OSError) and error.errno in _DISK_FULL_ERRNOS:
    where = f" writing {error.filename}" if error.filename else ""
  elif not isinstance(error, OSError) and any(text in str(error) for text in _DISK_FULL_TEXTS):
    where = ""  # A TensorFlow error's message names the file itself.
  else:
    return None
  return (f"the disk is full{where} ({errors.describe(error)}); free space or choose another "
          f"{output_flag}, then rerun the same command: it resumes from the last complete "
          "checkpoint.")


def out_of_memory_message(error: BaseException) -> str | None:
  """The one line for a tensor that did not fit in memory, or None if `error` is another failure."""
  if "OOM when allocating" not in str(error):
    return None
  return (f"out of memory ({errors.describe(error)}); lower train.batch_size, "
          "train.eval_batch_size or the model's size (model.latent_dim, its hidden units or "
          "filters).")


def failure_message(error: BaseException, output_flag: str = "--workdir") -> tuple[str, int] | None:
  """(the one line, the exit status) for an expected failure; None for a bug."""
  if isinstance(error, errors.UserError):
    return str(error), error.exit_code
  if isinstance(error, tf.errors.DataLossError):
    return (f"the input data or a checkpoint is corrupt ({errors.describe(error)}); rebuild the "
            "dataset (tfds build) or restore the file it names."), 1
  if isinstance(error, (PermissionError, tf.errors.PermissionDeniedError)):
    return (f"cannot write to {output_flag} ({errors.describe(error)}); choose another "
            f"{output_flag} or fix its permissions."), 1
  if isinstance(error, (OSError, tf.errors.ResourceExhaustedError, tf.errors.UnknownError)):
    message = disk_full_message(error, output_flag) or out_of_memory_message(error)
    return (message, 1) if message else None
  return None


def fail(message: str, exit_code: int = 1, program: str = "dae-trainer"):
  """Ends the process with `message` as its last line; the traceback only at --verbosity>=1."""
  if logging.get_verbosity() >= logging.DEBUG:
    logging.exception("%s failed:", program)
  print(f"{program}: {' '.join(message.split())}", file=sys.stderr, flush=True)
  sys.exit(exit_code)


def parse_flags(argv: list[str], program: str = "dae-trainer", default_config: str | None = None,
                config_fields: str = "configs/default.py") -> list[str]:
  """Parses flags and loads the config (`default_config` without --config); errors in one line."""
  if default_config and not any(argument == "--config" or argument.startswith("--config=")
                                for argument in argv):
    argv = [argv[0], f"--config={default_config}", *argv[1:]]
  try:
    # Vertex AI tuning trials pass `--config.a.b VALUE`; absl needs `--config.a.b=VALUE`.
    remaining = flags.FLAGS(hypertune.normalize_vertex_args(argv))
    if "config" in flags.FLAGS and flags.FLAGS["config"].present:
      flags.FLAGS.config.lock()  # Loads the file now, if loading was deferred.
  except flags.Error as error:
    fail(f"{error}. Pass --helpshort to see the flags.", program=program)
  except Exception as error:  # pylint: disable=broad-except
    # A config file runs arbitrary Python: any error in it is the user's to fix.
    fail(config_error(error, argv, config_fields), program=program)
  return remaining


def _call_main(main, program: str, output_flag: str, positional_arguments: int,
               argv: list[str]) -> None:
  if len(argv) > 1 + positional_arguments:
    fail(f"unexpected arguments {' '.join(argv[1:])}; every setting is a --flag.",
         program=program)
  try:
    main(argv)
  except Exception as error:  # pylint: disable=broad-except
    failure = failure_message(error, output_flag)
    if failure is None:
      raise
    fail(*failure, program=program)


def run(main, *, program: str = "dae-trainer", default_config: str | None = None,
        config_fields: str = "configs/default.py", output_flag: str = "--workdir",
        positional_arguments: int = 0) -> None:
  """`absl.app.run(main)` with the config loaded by `parse_flags` and failures as one line.

  Args:
    main: called with the remaining argv (only the program name: extra
      positional arguments are refused).
    program: the prefix of every failure line, e.g. "dae-trainer evaluate".
    default_config: the config file when no --config is given.
    config_fields: the config file whose fields are the valid overrides, for messages.
    output_flag: the flag naming where the tool writes, for messages.
    positional_arguments: how many arguments besides flags `main` takes (a command).
  """
  app.run(functools.partial(_call_main, main, program, output_flag, positional_arguments),
          flags_parser=functools.partial(parse_flags, program=program,
                                         default_config=default_config,
                                         config_fields=config_fields))
