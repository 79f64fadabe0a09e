"""The baselines' work in worker processes (concurrent.futures), or inline for a serial run.

- `worker_count(requested)`: `requested` processes, at most one per core this
  process may run on (more are warned about and not started: each idle one
  still costs a TensorFlow import, and the report waited for them: 80 s
  instead of 13 s with 12 on 2 cores); 0 is one per core.
- `make_executor(workers)`: for more than one worker a ProcessPoolExecutor whose
  processes are started with "spawn" (a fork of a process running TensorFlow's
  threads can deadlock in the child); for one an `InlineExecutor`, which runs
  each task in this process when it is submitted. The serial run goes through
  the very same code, tasks and order.
- `chunks(count, workers)`: the slices in which one baseline's test images are
  denoised, one task each.
- `TaskQueue`: tasks in priority order (the evaluation gives earlier levels
  precedence, so levels finish in order), a bounded number in flight, results
  handed to callbacks in the calling thread. Left on an error (a failure, a
  stop signal) it ends its worker processes at once.
- Workers end with their parent, however it ends (even `kill -9`): each asks
  Linux to kill it when its parent dies (prctl PR_SET_PDEATHSIG) and, on any
  system, a watchdog thread ends it once its parent is gone.
- `tune_task`, `denoise_task`: the work, as module-level functions (what a
  worker can unpickle) that use no TensorFlow.

Parallel results equal serial ones exactly: the tuning of one baseline at one
level runs whole in one process, every baseline denoises each image by itself
(wiener's matrix product is never split), and every task runs with one BLAS
thread, in a worker or not: OpenBLAS sums a product in another order with
another number of threads (wiener's output moved by 4e-7), and N workers with
several threads each would also fight over the cores
(tests/test_evaluation_parallel.py).
"""

import concurrent.futures
import contextlib
import ctypes
import heapq
import itertools
import multiprocessing
import os
import signal
import sys
import threading
import time

from absl import logging

from trainer import errors


def _cores() -> int:
  try:
    return max(1, len(os.sched_getaffinity(0)))
  except AttributeError:  # Not on Linux.
    return max(1, os.cpu_count() or 1)


def worker_count(requested: int) -> int:
  """`requested` (>= 1) but at most the cores this process may run on; those cores for 0."""
  cores = _cores()
  if requested > cores:
    logging.warning("num_workers=%d is more than the %d cores this process may use: running %d "
                    "worker processes (more would only wait for a core).", requested, cores,
                    cores)
  return min(requested, cores) if requested else cores


class InlineExecutor(concurrent.futures.Executor):
  """Runs each task in the calling process as soon as it is submitted."""

  def submit(self, fn, /, *args, **kwargs):  # pylint: disable=arguments-differ
    future = concurrent.futures.Future()
    try:
      future.set_result(fn(*args, **kwargs))
    except BaseException as error:  # pylint: disable=broad-except
      future.set_exception(error)
    return future


# The signals that stop an evaluation: TERM (kill, a scheduler), INT (Ctrl-C), HUP (a closed
# terminal). Each ends it with exit status 128 + its number: 143, 130, 129.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def stop_on_signals() -> None:
  """Makes a stop signal raise errors.Stopped in the main thread: the workers end, one line."""

  def stop(signal_number, frame) -> None:
    del frame
    raise errors.Stopped(
        f"stopped by {signal.Signals(signal_number).name} before the report was written; its "
        "worker processes were ended. Rerun the same command to evaluate again: baseline "
        "results already computed come from the cache.", signal_number)

  for stop_signal in STOP_SIGNALS:
    signal.signal(stop_signal, stop)


# PR_SET_PDEATHSIG (linux/prctl.h): the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG = 1
# How often a worker's watchdog looks for its parent, and its thread's name.
WATCHDOG_SECONDS = 1.0
_WATCHDOG = "parent-watchdog"


def die_with_parent(parent: int) -> None:
  """Ends this worker when `parent` ends: at once on Linux, within WATCHDOG_SECONDS elsewhere.

  Ctrl-C and a closed terminal signal the whole process group: a worker ignores
  them (no traceback of its own), and its parent, stopping, kills it.
  """
  for stop_signal in (signal.SIGINT, signal.SIGHUP):
    signal.signal(stop_signal, signal.SIG_IGN)
  if sys.platform.startswith("linux"):
    try:
      ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
      pass  # The watchdog still works.

  def watch() -> None:
    while os.getppid() == parent:
      time.sleep(WATCHDOG_SECONDS)
    os._exit(1)  # pylint: disable=protected-access  (no cleanup: the parent is gone)

  # The parent may have died before prctl: the watchdog's first look catches that.
  if not any(thread.name == _WATCHDOG for thread in threading.enumerate()):
    threading.Thread(target=watch, name=_WATCHDOG, daemon=True).start()


def _initialize_worker(verbosity: int, parent: int) -> None:
  """A worker dies with its parent and logs at its verbosity (its absl flags are never parsed)."""
  die_with_parent(parent)
  # pylint: disable=g-import-not-at-top
  from absl import flags
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  logging.use_absl_handler()
  logging.set_verbosity(verbosity)


def make_executor(workers: int) -> concurrent.futures.Executor:
  if workers <= 1:
    return InlineExecutor()
  return concurrent.futures.ProcessPoolExecutor(
      max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
      initializer=_initialize_worker, initargs=(logging.get_verbosity(), os.getpid()))


def _end_workers(executor: concurrent.futures.Executor) -> None:
  """Kills a process pool's workers now, rather than waiting for their tasks to finish."""
  # ProcessPoolExecutor has no public way to stop running tasks before Python 3.14
  # (terminate_workers); its `_processes` ({pid: process}) is stable since 3.2.
  for process in list((getattr(executor, "_processes", None) or {}).values()):
    if process.is_alive():
      process.kill()
  executor.shutdown(wait=True, cancel_futures=True)


# Fewer images than this per task would cost more in transfers than they save.
_MIN_CHUNK = 50


def chunks(count: int, workers: int) -> list[slice]:
  """Contiguous slices covering range(count): one for a serial run, else about 2 per worker."""
  parts = 1 if workers <= 1 else max(1, min(2 * workers, count // _MIN_CHUNK))
  bounds = [round(index * count / parts) for index in range(parts + 1)]
  return [slice(start, stop) for start, stop in zip(bounds, bounds[1:])]


class TaskQueue:
  """Submits tasks in priority order, at most `max_in_flight` at once; callbacks run in `wait`.

  The executor is made by `make_executor()` when the first task is submitted,
  so an evaluation whose results all come from the cache starts no process.
  Use as a context manager: leaving it shuts the executor down (cancelling
  what was not started, after an error).
  """

  def __init__(self, make_executor_fn, max_in_flight: int):
    self._make_executor = make_executor_fn
    self._executor = None
    self._max_in_flight = max(1, max_in_flight)
    self._queued = []
    self._in_flight = {}
    self._order = itertools.count()

  def push(self, priority, fn, args: tuple, callback) -> None:
    """Queues fn(*args); `callback(result)` runs in a later `wait` (which re-raises a failure)."""
    heapq.heappush(self._queued, (priority, next(self._order), fn, args, callback))

  def pending(self) -> int:
    """Tasks queued or running."""
    return len(self._queued) + len(self._in_flight)

  def __enter__(self) -> "TaskQueue":
    return self

  def __exit__(self, *exc_info) -> None:
    if self._executor is not None:
      if exc_info[0] is None:
        self._executor.shutdown(wait=True)
      else:  # A failure or a stop signal: the running tasks' results are not wanted.
        _end_workers(self._executor)
      self._executor = None

  def _submit(self) -> None:
    while self._queued and len(self._in_flight) < self._max_in_flight:
      _, order, fn, args, callback = heapq.heappop(self._queued)
      if self._executor is None:
        self._executor = self._make_executor()
      self._in_flight[self._executor.submit(fn, *args)] = (order, callback)

  def wait(self) -> None:
    """Submits what it may, waits for at least one task and runs the callbacks of those done."""
    self._submit()
    if not self._in_flight:
      return
    done, _ = concurrent.futures.wait(self._in_flight,
                                      return_when=concurrent.futures.FIRST_COMPLETED)
    for future in sorted(done, key=lambda future: self._in_flight[future][0]):
      _, callback = self._in_flight.pop(future)
      callback(future.result())
    self._submit()


def _one_blas_thread():
  """A context in which numpy's BLAS (and OpenMP) use one thread; no-op without threadpoolctl."""
  try:
    import threadpoolctl  # pylint: disable=g-import-not-at-top
  except ImportError:  # It comes with scikit-learn, in the eval extra.
    return contextlib.nullcontext()
  return threadpoolctl.threadpool_limits(limits=1)


def tune_task(tune_fn, name: str, noisy_tune, clean_tune, fit_noisy, fit_clean):
  """(tune_fn(...)'s tuned baseline, seconds it took)."""
  start = time.perf_counter()
  with _one_blas_thread():
    tuned = tune_fn(name, noisy_tune, clean_tune, fit_noisy=fit_noisy, fit_clean=fit_clean)
  return tuned, time.perf_counter() - start


def denoise_task(tuned, noisy):
  """(tuned.denoise(noisy), seconds it took)."""
  start = time.perf_counter()
  with _one_blas_thread():
    denoised = tuned.denoise(noisy)
  return denoised, time.perf_counter() - start
