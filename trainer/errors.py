"""The failures a user can fix, in one place: a common base, its subtypes, and `describe`.

Every check raises one of these itself, with a message that names the bad
value and the fix, so no caller re-wraps one error as another. The command-line
runner (`trainer.cli.run`) turns any `UserError` into the one
"dae-trainer: ..." line and its `exit_code`; anything else is a bug and keeps
its traceback.

The types that stand for a bad value also derive from `ValueError` (and the
ones for a missing or lost resource from `RuntimeError`), so library callers
that catch the builtin types keep working.
"""


class UserError(Exception):
  """A failure whose message says what happened and what to do; the CLI prints it as one line."""
  exit_code = 1


class ConfigError(UserError, ValueError):
  """The config, a flag or the workdir cannot train; the message names the bad value and the fix."""


class EvaluationError(UserError, ValueError):
  """The evaluation cannot run; the message names the bad value and the fix."""


class CorruptFileError(UserError, ValueError):
  """A file of an earlier run cannot be read; the message names it and the fix."""


class UnreachableError(UserError, ValueError):
  """A non-local directory cannot be used; the message names it, why, and the fix."""


class StudyError(UserError, ValueError):
  """A tuning study file cannot run; the message names the bad value and the fix."""


class DatasetUnavailableError(UserError, RuntimeError):
  """The dataset is neither prepared in the data_dir nor downloadable."""


class NonFiniteLossError(UserError, FloatingPointError):
  """The training loss stopped being finite; the message names the step range and the fix."""


class PeerLostError(UserError, RuntimeError):
  """Another task of a multi-worker job died or stopped answering."""


# EX_TEMPFAIL (sysexits.h): a temporary failure, rerun to continue.
PREEMPTED_EXIT_CODE = 75


class Preempted(UserError):
  """Training stopped on a signal after saving a checkpoint; rerunning continues."""
  exit_code = PREEMPTED_EXIT_CODE


class Stopped(UserError):
  """A stop signal ended a command that has nothing to save (the evaluation): exit 128 + signal."""

  def __init__(self, message: str, signal_number: int):
    super().__init__(message)
    self.exit_code = 128 + signal_number


def describe(error: BaseException, max_chars: int = 400) -> str:
  """`error` as one line: its type and the start of its message, whitespace collapsed."""
  text = " ".join(str(error).replace("\\n", " ").split())
  return f"{type(error).__name__}: {text[:max_chars]}"
