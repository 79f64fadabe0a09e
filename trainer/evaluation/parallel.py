"""The baselines' work in worker processes (concurrent.futures), or inline for a serial run.

- `worker_count(requested)`: `requested` processes, or, for 0, one per core this
  process may run on.
- `make_executor(workers)`: for more than one worker a ProcessPoolExecutor whose
  processes are started with "spawn" (a fork of a process running TensorFlow's
  threads can deadlock in the child); for one an `InlineExecutor`, which runs
  each task in this process when it is submitted. The serial run goes through
  the very same code, tasks and order.
- `chunks(count, workers)`: the slices in which one baseline's test images are
  denoised, one task each.
- `TaskQueue`: tasks in priority order (the evaluation gives earlier levels
  precedence, so levels finish in order), a bounded number in flight, results
  handed to callbacks in the calling thread.
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
import heapq
import itertools
import multiprocessing
import os
import time

from absl import logging


def worker_count(requested: int) -> int:
  """`requested` (>= 1), or the cores this process may run on for 0."""
  if requested:
    return requested
  try:
    return max(1, len(os.sched_getaffinity(0)))
  except AttributeError:  # Not on Linux.
    return max(1, os.cpu_count() or 1)


class InlineExecutor(concurrent.futures.Executor):
  """Runs each task in the calling process as soon as it is submitted."""

  def submit(self, fn, /, *args, **kwargs):  # pylint: disable=arguments-differ
    future = concurrent.futures.Future()
    try:
      future.set_result(fn(*args, **kwargs))
    except BaseException as error:  # pylint: disable=broad-except
      future.set_exception(error)
    return future


def _initialize_worker(verbosity: int) -> None:
  """A worker logs at the evaluation's verbosity (its absl flags are never parsed)."""
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
      initializer=_initialize_worker, initargs=(logging.get_verbosity(),))


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
      self._executor.shutdown(wait=True, cancel_futures=exc_info[0] is not None)
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
