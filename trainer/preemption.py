"""Stops training cleanly on SIGTERM, the signal Vertex AI, GKE and TPU VMs send before preemption.

The handler only sets a flag. The training loop passes the flag into every
chunk of steps, where it is all-reduced (summed) over every replica of every
task, so all tasks of a multi-worker job see the same answer after the same
chunk, even when the signal reached only one of them. They then save a
checkpoint at that step together and raise `errors.Preempted`; the command
exits with its `exit_code` (75). Rerunning the same command continues from that step, mid-epoch
if need be, with the data an uninterrupted run would have seen.
"""

import signal
import threading

from absl import logging


class StopSignal:
  """Context manager: while active, SIGTERM (and SIGINT if asked) only request a stop."""

  def __init__(self, signals=(signal.SIGTERM,)):
    self._signals = signals
    self._previous = {}
    self.received = None

  @property
  def requested(self) -> bool:
    return self.received is not None

  def _handle(self, signum, frame):
    del frame
    if self.received is None:
      logging.warning("Received %s: stopping after the current chunk of steps, with a "
                      "checkpoint.", signal.Signals(signum).name)
    self.received = signal.Signals(signum).name

  def __enter__(self):
    # Python only lets the main thread install handlers; elsewhere (e.g. a
    # library caller's worker thread) the default behaviour stays.
    if threading.current_thread() is threading.main_thread():
      for signum in self._signals:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}
