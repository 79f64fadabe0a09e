"""What a run prints: a header, a line per epoch, progress lines in long epochs, a final line.

By default the log is for a person: TensorFlow's C++ start-up notices (CUDA
probing on a CPU machine, CPU feature flags, XLA's assert notices) are
silenced by setting `TF_CPP_MIN_LOG_LEVEL` before TensorFlow is imported, and
other libraries' INFO records (TFDS's per-split lines, checkpoint sharding
timings) are dropped. `--verbosity=1` (or `-v 1`) brings all of it back; so
does setting `TF_CPP_MIN_LOG_LEVEL` yourself (0 shows everything) for the C++
part. Warnings and errors of every library are always shown.

One exception, TensorFlow 2.20 only: XLA's first compile in a process logs
"Compiled cluster using XLA!" through absl's C++ logging before TensorFlow
initialises it (hence absl's "All log messages before absl::InitializeLog()"
line), which ignores TF_CPP_MIN_LOG_LEVEL. TensorFlow 2.21 initialises absl
logging and honours the variable, so those two lines are not printed there.

This module does not import TensorFlow: `silence_tensorflow_startup` must run
before anything else does.
"""

import logging as std_logging
import os
import re
import sys
import tempfile
import time

from absl import logging

# TF_CPP_MIN_LOG_LEVEL=3 keeps only FATAL: the CUDA probing of a CPU machine
# logs at ERROR level ("failed call to cuInit"), so 2 is not enough.
_QUIET_TF_CPP_LEVEL = "3"
# Where this project's code lives: its records always pass the filter.
_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_PROJECT_DIRS = tuple(os.path.join(_PROJECT_ROOT, name) + os.sep
                      for name in ("trainer", "input_pipeline", "configs", "scripts"))
_VERBOSITY_FLAG = re.compile(r"^--?(?:v|verbosity)(?:=(.*))?$")
# A progress line at most this often: short epochs print none.
PROGRESS_MIN_SECONDS = 10.0


def verbosity_from_argv(argv: list[str]) -> int:
  """The absl --verbosity (-v) value in `argv`, before flags are parsed; 0 if absent."""
  value = None
  for index, argument in enumerate(argv[1:], start=1):
    match = _VERBOSITY_FLAG.match(argument)
    if match:
      value = match.group(1) if match.group(1) is not None else (
          argv[index + 1] if index + 1 < len(argv) else None)
  try:
    return int(value) if value is not None else 0
  except ValueError:
    return 0  # absl reports the bad value when it parses the flags.


def silence_tensorflow_startup(argv: list[str]) -> None:
  """Imports TensorFlow without its C++ start-up notices, unless --verbosity >= 1.

  Must run before anything else imports TensorFlow. TF_CPP_MIN_LOG_LEVEL=3
  (unless already set) silences what the C++ runtime logs after it starts;
  what it writes while its libraries load (oneDNN and CUDA-driver notices,
  before absl's C++ logging is initialised) ignores that variable, so the
  import runs with the process's stderr captured. If the import fails, what
  was captured is written out before the error propagates.
  """
  if verbosity_from_argv(argv) >= 1 or "tensorflow" in sys.modules:
    return
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", _QUIET_TF_CPP_LEVEL)
  sys.stderr.flush()
  saved_stderr = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      import tensorflow  # noqa: F401  # pylint: disable=import-outside-toplevel,unused-import
    except BaseException:
      os.dup2(saved_stderr, 2)
      captured.seek(0)
      sys.stderr.write(captured.read().decode(errors="replace"))
      raise
    finally:
      os.dup2(saved_stderr, 2)
      os.close(saved_stderr)


class _ProjectRecordsOnly(std_logging.Filter):
  """Passes this project's records, and other libraries' warnings and errors."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or record.pathname.startswith(_PROJECT_DIRS)


_FILTER = _ProjectRecordsOnly()


def configure_python_logging() -> None:
  """After flags are parsed: other libraries' INFO records off unless --verbosity >= 1."""
  handler = logging.get_absl_handler()
  handler.removeFilter(_FILTER)
  verbose = logging.get_verbosity() >= logging.DEBUG
  if not verbose:
    handler.addFilter(_FILTER)
  # TensorFlow's Python logger also prints through a handler of its own
  # ("INFO:tensorflow:Assets written to ..."), besides the absl one.
  std_logging.getLogger("tensorflow").setLevel(
      std_logging.DEBUG if verbose else std_logging.WARNING)


def format_duration(seconds: float) -> str:
  minutes, seconds = divmod(int(round(seconds)), 60)
  hours, minutes = divmod(minutes, 60)
  return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


def format_overrides(overrides: dict) -> str:
  """`a.b=1, c=x` for the fields a command line changed, or "no overrides"."""
  if not overrides:
    return "no overrides"
  return ", ".join(f"{name}={value!r}" if isinstance(value, str) else f"{name}={value}"
                   for name, value in sorted(overrides.items()))


def log_run_header(task_name: str, model, data, start_step: int, last_step: int,
                   batch_size: int, writes_to: str) -> None:
  """One line: what trains, how many steps, where it writes (the strategy logs its devices)."""
  first_epoch = start_step // data.steps_per_epoch + 1
  last_epoch = -(-last_step // data.steps_per_epoch)
  resumed = f", resuming after step {start_step}" if start_step else ""
  logging.info(
      "%s: training %s (%s parameters): epochs %d..%d, steps %d..%d (%d per epoch of %d "
      "examples)%s; writing to %s.", task_name, model.name, f"{model.count_params():,}",
      first_epoch, last_epoch, start_step + 1, last_step, data.steps_per_epoch, batch_size,
      resumed, writes_to)


def log_epoch(epoch: int, num_epochs: int, train_metrics: dict, eval_metrics: dict | None,
              examples_per_second: float, seconds: float, seconds_left: float,
              rss_mb: float) -> None:
  evaluation = ("eval loss {loss:.4f} PSNR {psnr:.2f} dB SSIM {ssim:.3f}".format(
      **eval_metrics) if eval_metrics is not None else "not evaluated")
  logging.info(
      "epoch %d/%d: train loss %.4f PSNR %.2f dB | %s | %.0f examples/s, %.1f s, "
      "%s left, %.0f MiB", epoch + 1, num_epochs, train_metrics["loss"],
      train_metrics["psnr"], evaluation, examples_per_second, seconds,
      format_duration(seconds_left), rss_mb)


def log_final(task_name: str, step: int, eval_metrics: dict, fingerprint: str,
              saved_model_dir: str | None) -> None:
  where = f"; SavedModel in {saved_model_dir}" if saved_model_dir else ""
  logging.info("%s finished at step %d: eval %s; weights fingerprint %s%s.", task_name, step,
               ", ".join(f"{name} {value:.4f}" for name, value in eval_metrics.items()),
               fingerprint, where)


class Progress:
  """A training-loop hook: step-level scalars every `log_every_steps` steps, and a line now and then.

  After every chunk of steps, when a multiple of `log_every_steps` was passed,
  the epoch's running loss, PSNR and examples/s go to `write_scalars`
  (TensorBoard; a no-op on tasks other than the chief) and, if
  `PROGRESS_MIN_SECONDS` have passed since the epoch began or the last line,
  to the log: an epoch of a few seconds prints nothing extra, a minutes-long
  one shows signs of life.
  """

  def __init__(self, steps_per_epoch: int, last_step: int, batch_size: int,
               log_every_steps: int, write_scalars, clock=time.time):
    self._steps_per_epoch, self._last_step = steps_per_epoch, last_step
    self._num_epochs = -(-last_step // steps_per_epoch)
    self._batch_size, self._every = batch_size, log_every_steps
    self._write_scalars, self._clock = write_scalars, clock
    self._epoch = None

  def before_chunk(self, first_step: int, num_steps: int) -> None:
    """Called before global steps first_step .. first_step + num_steps - 1; starts an epoch's count."""
    del num_steps
    epoch = first_step // self._steps_per_epoch
    if epoch == self._epoch:
      return
    # The epoch's first step here, or the step a resumed run starts from.
    self._epoch, self._first_step = epoch, first_step
    self._epoch_steps = min((epoch + 1) * self._steps_per_epoch, self._last_step) - first_step
    self._start = self._last_line = self._clock()
    self._last_boundary = first_step // self._every if self._every > 0 else 0

  def after_chunk(self, step: int, running: dict[str, float]) -> None:
    """Called after a chunk: `step` global steps are done; `running` holds the epoch's means so far."""
    if self._every <= 0 or step // self._every == self._last_boundary:
      return
    self._last_boundary = step // self._every
    steps_done = step - self._first_step
    now = self._clock()
    examples_per_second = steps_done * self._batch_size / max(now - self._start, 1e-9)
    self._write_scalars({"step/loss": running["loss"], "step/psnr": running["psnr"],
                         "step/examples_per_second": examples_per_second}, step)
    if now - self._last_line >= PROGRESS_MIN_SECONDS:
      self._last_line = now
      logging.info("epoch %d/%d, step %d (%d of %d): running loss %.4f PSNR %.2f dB, "
                   "%.0f examples/s", self._epoch + 1, self._num_epochs, step, steps_done,
                   self._epoch_steps, running["loss"], running["psnr"], examples_per_second)

  def close(self) -> None:
    """Nothing to release; every hook of the loop has it."""
