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
  send several). A second Ctrl-C ends the process at once, without a new
  checkpoint (SIGINT's default action: the shell shows exit status 130); it
  works even while the process waits inside TensorFlow.
- Before and after the training loop (`stop_requests_raise`: start-up, the
  final evaluation and export), the first signal raises `errors.Preempted`
  where the program is, and the command exits with 75: no step is lost, the
  last checkpoint is where a rerun continues.
- A signal the process was started with ignored (`nohup` ignores SIGHUP) stays
  ignored.
"""

import contextlib
import signal
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
    if signum == signal.SIGINT:
      # The next Ctrl-C takes SIGINT's default action: the process ends at
      # once, even while its main thread waits inside TensorFlow.
      signal.signal(signal.SIGINT, signal.SIG_DFL)
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
    return self

  def __exit__(self, *exc_info):
    _restore(self._previous)
    self._previous = {}


def _raise_preempted(signum, frame):
  del frame
  name = signal.Signals(signum).name
  # Only the first signal raises: a second one must not interrupt the unwinding.
  for stop_signal in STOP_SIGNALS:
    if signal.getsignal(stop_signal) is _raise_preempted:
      signal.signal(stop_signal, signal.SIG_DFL if stop_signal == signal.SIGINT
                    else signal.SIG_IGN)
  raise errors.Preempted(
      f"stopped on {name}'s request outside the training loop (starting up, or writing the "
      "final reports); no training step was lost: rerun the same command to continue from "
      "the last checkpoint.")


@contextlib.contextmanager
def stop_requests_raise(signals=STOP_SIGNALS):
  """While active, the first of `signals` raises `errors.Preempted` (exit 75) where the program is.

  For the trainer's whole run: start-up, the final evaluation and the export
  have no chunk boundary to stop at, and nothing to save (the training loop's
  `StopSignal` takes over while it runs, and gives these handlers back).
  """
  previous = _install(signals, _raise_preempted)
  try:
    yield
  finally:
    _restore(previous)


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
