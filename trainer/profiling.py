"""A profiler window: traces a range of global training steps for TensorBoard's Profile tab.

`runtime.profile_steps = (first, last)` traces the chunks of
`train.steps_per_loop` steps that contain global steps first..last (counted
from 0, as the step ranges of the training loop's errors are), with
`tf.profiler.experimental.start/stop`, into the run's `train/` TensorBoard
directory. The trace starts and stops between chunks, never inside one: a
chunk is one `tf.function` (one XLA computation on one device), so the window
is rounded out to whole chunks. Only the chief traces; tracing only observes,
so the trained weights are the same with or without a window.
"""

import ast

from absl import logging
import tensorflow as tf

from trainer import errors


def parse_profile_steps(value) -> tuple[int, int] | None:
  """`runtime.profile_steps` as (first, last), or None when off (empty).

  Accepts a tuple or list, or its string form such as '(100, 110)'.

  Raises:
    errors.ConfigError: naming the value and the expected form.
  """
  if value in ("", (), [], None):
    return None
  parsed = value
  if isinstance(value, str):
    try:
      parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      parsed = None
  if not (isinstance(parsed, (tuple, list)) and len(parsed) == 2
          and all(isinstance(step, int) and not isinstance(step, bool) for step in parsed)
          and 0 <= parsed[0] <= parsed[1]):
    raise errors.ConfigError(
        f"runtime.profile_steps={value!r} must be two global steps (first, last) with "
        "0 <= first <= last, e.g. --config.runtime.profile_steps='(100, 110)', or () for off.")
  return int(parsed[0]), int(parsed[1])


def check_window_in_run(value, last_step: int) -> None:
  """Raises errors.ConfigError if the window does not fall inside the run's steps 0..last_step - 1."""
  window = parse_profile_steps(value)
  if window is not None and window[1] >= last_step:
    raise errors.ConfigError(
        f"runtime.profile_steps={value!r} ends after the run's last step {last_step - 1}; "
        f"choose steps below {last_step}, e.g. --config.runtime.profile_steps="
        f"'({max(0, last_step - 10)}, {last_step - 1})'.")


class ProfilerWindow:
  """Starts the profiler before the chunk that reaches the window and stops it after the last."""

  def __init__(self, profile_steps, logdir: str, enabled: bool):
    self._window = parse_profile_steps(profile_steps) if enabled else None
    self._logdir = logdir
    self.active = False
    self._done = False

  def before_chunk(self, first_step: int, num_steps: int) -> None:
    """Called before training global steps first_step .. first_step + num_steps - 1."""
    if self._window is None or self.active or self._done:
      return
    first, last = self._window
    if first_step <= last and first_step + num_steps > first:
      logging.info("Profiling steps %d-%d into %s.", first, last, self._logdir)
      tf.profiler.experimental.start(self._logdir)
      self.active = True

  def after_chunk(self, step_reached: int, running_means=None) -> None:
    """Called after a chunk; `step_reached` is the number of global steps trained so far."""
    del running_means
    if self.active and step_reached > self._window[1]:
      self.close()

  def close(self) -> None:
    """Stops (and writes) the trace if one is running: also when training ends early."""
    if self.active:
      tf.profiler.experimental.stop()
      self.active = False
      self._done = True
