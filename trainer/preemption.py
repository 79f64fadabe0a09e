"""Stop requests: SIGTERM (preemption), SIGINT (Ctrl-C) and SIGHUP (a closed terminal).

Vertex AI, GKE and TPU VMs send SIGTERM before preemption; a user presses
Ctrl-C; a terminal that closes sends SIGHUP. Each is a request to stop with a
checkpoint, handled the same way:

- While training (`StopSignal`), the handler only sets a flag. The training
  loop passes it into every chunk of steps, where it is all-reduced (summed)
  over every replica of every task, so all tasks of a multi-worker job see the
  same answer after the same chunk, even when the signal reached only one of
  them. They save a checkpoint at that step together and raise
  `errors.Preempted`; the command exits with its `exit_code` (75). Rerunning
  the same command continues from that step, mid-epoch if need be, with the
  data an uninterrupted run would have seen.
- A repeated SIGTERM or SIGHUP changes nothing (Kubernetes and some schedulers
  send several). A second Ctrl-C ends the process at once with one line and
  exit status 130 (128 + SIGINT, as a shell reports), without a new
  checkpoint. Python runs signal handlers only between bytecodes of the main
  thread, which waits inside TensorFlow for a whole chunk of steps; so the
  signals are also written to a wakeup pipe (`signal.set_wakeup_fd`) that a
  watcher thread reads as they arrive.
- Before and after the training loop (`exit_on_stop_requests`: start-up, the
  final evaluation and export), the first signal ends the process at once
  with one line and exit status 75: no step is lost, the last checkpoint is
  where a rerun continues (every file is written atomically, so this is a
  kill -9 that explains itself).
- A signal the process was started with ignored (`nohup` ignores SIGHUP) stays
  ignored.
"""

import contextlib
import os
import signal
import sys
import threading
import time

from absl import logging

from trainer import errors

# The signals that request a stop, in the order their names are listed.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _install(signals, handler) -> dict:
  """Installs `handler` for each of `signals` not ignored; returns the handlers it replaced.

  Python only lets the main thread install handlers; elsewhere (e.g. a
  library caller's worker thread) nothing changes.
  """
  previous = {}
  if threading.current_thread() is not threading.main_thread():
    return previous
  for signum in signals:
    if signal.getsignal(signum) is signal.SIG_IGN:
      continue  # e.g. SIGHUP under nohup: the user asked for it to be ignored.
    previous[signum] = signal.signal(signum, handler)
  return previous


def _restore(previous: dict) -> None:
  for signum, handler in previous.items():
    signal.signal(signum, handler)


# 128 + SIGINT: what a shell reports for a process that Ctrl-C ended.
INTERRUPTED_EXIT_CODE = 130


class _SecondInterrupt:
  """Ends the process at once on the second SIGINT, from a thread, wherever the main thread is."""

  def __init__(self):
    self._read, self._write = os.pipe()
    os.set_blocking(self._write, False)
    self._previous_fd = None
    self._thread = threading.Thread(target=self._watch, name="second-ctrl-c", daemon=True)

  def _watch(self):
    interrupts = 0
    while True:
      try:
        received = os.read(self._read, 64)
      except OSError:
        return
      if not received:  # The write end closed: the context ended.
        return
      interrupts += received.count(signal.SIGINT)
      if interrupts >= 2:
        # Not through absl logging or the CLI: the process ends here, and this
        # must be its last line, in the CLI's format.
        print("dae-trainer: interrupted twice (Ctrl-C): stopped at once, without a new "
              "checkpoint; rerun the same command to continue from the last one.",
              file=sys.stderr, flush=True)
        os._exit(INTERRUPTED_EXIT_CODE)  # pylint: disable=protected-access

  def start(self):
    self._previous_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
    self._thread.start()

  def stop(self):
    signal.set_wakeup_fd(self._previous_fd)
    os.close(self._write)
    self._thread.join(timeout=1)
    os.close(self._read)


@contextlib.contextmanager
def _second_interrupt_ends_the_process():
  if threading.current_thread() is not threading.main_thread():
    yield  # Only the main thread may set the wakeup fd (or handle signals at all).
    return
  watcher = _SecondInterrupt()
  watcher.start()
  try:
    yield
  finally:
    watcher.stop()


class StopSignal:
  """Context manager: while active, each of `signals` only requests a stop (see the module docstring)."""

  def __init__(self, signals=STOP_SIGNALS):
    self._signals = signals
    self._previous = {}
    self.received = None

  @property
  def requested(self) -> bool:
    return self.received is not None

  def _handle(self, signum, frame):
    del frame
    name = signal.Signals(signum).name
    if self.received is None:
      logging.warning("Received %s: stopping after the current chunk of steps, with a "
                      "checkpoint%s.", name,
                      " (press Ctrl-C again to quit at once, without it)"
                      if signum == signal.SIGINT else "")
      self.received = name
    else:
      logging.info("Received %s again: already stopping after the current chunk.", name)

  def __enter__(self):
    self._previous = _install(self._signals, self._handle)
    self._watcher = _second_interrupt_ends_the_process()
    self._watcher.__enter__()  # pylint: disable=unnecessary-dunder-call
    return self

  def __exit__(self, *exc_info):
    self._watcher.__exit__(None, None, None)
    if self.requested and _stderr_at_start is not None:
      # The trainer's process ends now with its checkpoint (exit 75). Python
      # puts the default action back while it shuts down (about 2 s with
      # TensorFlow): a repeated SIGTERM then would end it with 143 instead.
      for signum in self._previous:
        signal.signal(signum, signal.SIG_IGN)
    else:
      _restore(self._previous)
    self._previous = {}


def _exit_preempted(signum, frame):
  del frame
  # Not an exception: raised between two bytecodes of whatever runs (TFDS's
  # builder lookup, Keras), it would be caught by a broad `except` there and
  # reported as something else (a probe got "Unknown TFDS dataset 'mnist'").
  # Ending here is a kill -9 that explains itself, and a rerun recovers from
  # any moment of a kill -9 (tests/test_recovery_slow.py).
  # Not through absl logging or the CLI either: this is the process's last line.
  logging.flush()
  sys.stderr.flush()
  # To the stderr of the process's start: while TensorFlow imports, file
  # descriptor 2 is captured (logs.silence_tensorflow_startup).
  os.write(_stderr_at_start or 2, (
      f"dae-trainer: stopped on {signal.Signals(signum).name}'s request outside the training "
      "loop (starting up, or writing the final reports); no training step was lost: rerun "
      "the same command to continue from the last checkpoint.\n").encode())
  os._exit(errors.PREEMPTED_EXIT_CODE)  # pylint: disable=protected-access


_stderr_at_start = None


def exit_on_stop_requests(signals=STOP_SIGNALS) -> None:
  """From now on, the first of `signals` ends the process at once, with one line and exit 75.

  For the trainer's process, from its first line: importing TensorFlow,
  start-up, the final evaluation and the export have no chunk boundary to stop
  at, and nothing to save (the training loop's `StopSignal` takes over while
  it runs, and gives these handlers back).
  """
  global _stderr_at_start  # pylint: disable=global-statement
  if _stderr_at_start is None:
    _stderr_at_start = os.dup(2)
  _install(signals, _exit_preempted)


def wait_for(done: threading.Event, timeout_seconds: float, poll_seconds: float = 0.1) -> str | None:
  """Waits until `done` is set or `timeout_seconds` pass, honouring stop requests meanwhile.

  Returns the name of the stop signal received during the wait, or None (then
  `done.is_set()` tells whether the wait ended in time). The main thread waits
  in short slices, so the handlers run at once.
  """
  with StopSignal() as stop:
    deadline = time.monotonic() + timeout_seconds
    while not stop.requested and not done.wait(
        min(poll_seconds, max(0.0, deadline - time.monotonic()))):
      if time.monotonic() >= deadline:
        break
    return stop.received
