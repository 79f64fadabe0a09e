"""A profiler window: traces a range of global training steps for TensorBoard's Profile tab.

`runtime.profile_steps = (first, last)` traces the chunks of
`train.steps_per_loop` steps that contain global steps first..last (counted
from 0, as the step ranges of the training loop's errors are), with
`tf.profiler.experimental.start/stop`, into the run's `train/` TensorBoard
directory. The trace starts and stops between chunks, never inside one: a
chunk is one `tf.function` (one XLA computation on one device), so the window
is rounded out to whole chunks. Only the chief traces; tracing only observes,
so the trained weights are the same with or without a window.

Three things make the Profile tab's Overview and Input Pipeline Analysis
pages measure the training steps:

- Step markers: each chunk runs inside `tf.profiler.experimental.Trace("train",
  step_num=<its first global step>, _r=1)` (`with_step_markers`), the
  profiler's documented marker for custom loops; one profiler "step" is one
  chunk of `train.steps_per_loop` training steps.
- A window that overlaps this process's first chunk is moved one chunk later:
  that chunk traces the `tf.function` and compiles it (about 1.2 s of a 1.6 s
  trace in the default config), which is not training. One log line says so.
- TensorBoard's profiler (xprof) groups events into steps by the TensorFlow
  while-loop iterations it finds, in preference to explicit step markers, and
  the chunk's own `tf.range` loops then leave it with no step at all ("No step
  time measured"). After the trace is written, `_group_by_step_markers`
  removes the loop-iteration numbers (`iter_num`) from the trace's events, so
  the markers decide the steps; nothing else in the trace changes.
"""

import ast
import contextlib

from absl import logging
import tensorflow as tf
from tensorflow.tsl.profiler.protobuf import xplane_pb2

# The event statistic xprof groups TensorFlow loop iterations by.
_LOOP_ITERATION_STAT = "iter_num"

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


def resolve_window(value, last_step: int) -> tuple[int, int] | None:
  """`runtime.profile_steps` as (first, last) global steps of this run, or None for off.

  Raises:
    errors.ConfigError: the window does not fall inside the run's steps 0..last_step - 1.
  """
  window = parse_profile_steps(value)
  if window is not None and window[1] >= last_step:
    raise errors.ConfigError(
        f"runtime.profile_steps={value!r} ends after the run's last step {last_step - 1}; "
        f"choose steps below {last_step}, e.g. --config.runtime.profile_steps="
        f"'({max(0, last_step - 10)}, {last_step - 1})'.")
  return window


def _xplane_paths(logdir: str) -> set[str]:
  return set(tf.io.gfile.glob(f"{logdir}/plugins/profile/*/*.xplane.pb"))


def _group_by_step_markers(path: str) -> None:
  """Rewrites the trace at `path` without loop-iteration numbers (see the module docstring)."""
  space = xplane_pb2.XSpace()
  with tf.io.gfile.GFile(path, "rb") as file:
    space.ParseFromString(file.read())
  for plane in space.planes:
    loop_stats = {key for key, stat in plane.stat_metadata.items()
                  if stat.name == _LOOP_ITERATION_STAT}
    if not loop_stats:
      continue
    for line in plane.lines:
      for event in line.events:
        kept = [stat for stat in event.stats if stat.metadata_id not in loop_stats]
        if len(kept) < len(event.stats):
          del event.stats[:]
          event.stats.extend(kept)
  temporary = f"{path}.tmp"
  with tf.io.gfile.GFile(temporary, "wb") as file:
    file.write(space.SerializeToString())
  tf.io.gfile.rename(temporary, path, overwrite=True)


class ProfilerWindow:
  """Starts the profiler before the chunk that reaches the window and stops it after the last."""

  def __init__(self, window: tuple[int, int] | None, logdir: str, enabled: bool):
    """`window`: (first, last) global steps to trace (`resolve_window`), or None for off."""
    self._window = tuple(window) if enabled and window is not None else None
    self._logdir = logdir
    self.active = False
    self._done = False
    self._seen_a_chunk = False
    self._chunk_first_step = 0
    self._traced = None  # [first, last] global steps traced so far.
    self._traced_chunks = 0
    self._earlier_traces = set()

  def before_chunk(self, first_step: int, num_steps: int) -> None:
    """Called before training global steps first_step .. first_step + num_steps - 1."""
    if num_steps <= 0:  # The end of an epoch: no chunk follows in it.
      return
    self._chunk_first_step = first_step
    first_chunk, self._seen_a_chunk = not self._seen_a_chunk, True
    if self._window is None or self._done:
      return
    if self.active:
      self._traced[1] = first_step + num_steps - 1
      self._traced_chunks += 1
      return
    first, last = self._window
    if first_step <= last and first_step + num_steps > first:
      if first_chunk:
        # This chunk traces and compiles the training function: not training.
        self._window = (first + num_steps, last + num_steps)
        logging.info(
            "Profiling: runtime.profile_steps=(%d, %d) overlaps steps %d-%d, this run's first "
            "chunk, which traces and compiles the training function; tracing from step %d "
            "instead, one chunk later.", first, last, first_step, first_step + num_steps - 1,
            first_step + num_steps)
        return
      logging.info("Profiling from step %d into %s.", first_step, self._logdir)
      self._earlier_traces = _xplane_paths(self._logdir)
      tf.profiler.experimental.start(self._logdir)
      self.active = True
      self._traced = [first_step, first_step + num_steps - 1]
      self._traced_chunks = 1

  def with_step_markers(self, train_steps):
    """`train_steps` (one chunk per call), marked as one profiler step while tracing."""

    def marked(*args, **kwargs):
      marker = (tf.profiler.experimental.Trace("train", step_num=self._chunk_first_step, _r=1)
                if self.active else contextlib.nullcontext())
      with marker:
        return train_steps(*args, **kwargs)

    return marked

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
      for path in _xplane_paths(self._logdir) - self._earlier_traces:
        _group_by_step_markers(path)
      logging.info("Profiled steps %d-%d (%d chunks, one profiler step each) into %s.",
                   self._traced[0], self._traced[1], self._traced_chunks, self._logdir)
