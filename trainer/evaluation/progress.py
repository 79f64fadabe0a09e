"""What the evaluation tells a person while it runs: stage timings, one line per level, an ETA.

`Progress` logs one line per stage ("load data: 2.3 s") and keeps each
stage's seconds for report.json. `Progress.levels(...)` follows the noise
levels: one log line per (type, level) when it is done, with what was done,
how long it took and an estimate of the time left for the whole evaluation;
where stderr is a terminal, also a tqdm bar (the log lines print above it).

The estimate: every piece of work (a baseline to tune and run, a cache read,
a level's noise and models, the representation) has a prior cost in seconds
on one core (`baseline_cost`, `level_cost`, ...); the evaluation's own pace so
far, elapsed time per unit of prior cost done, turns what is left into
seconds. So it learns the machine's speed, its load and the number of
workers as it goes; it gives no figure before the first level (or a tenth of
the work) is done.
"""

import contextlib
import dataclasses
import sys
import time

from absl import logging

from trainer import logs

try:
  import tqdm as tqdm_lib  # pylint: disable=g-import-not-at-top
except ImportError:  # tqdm comes with the eval extra; plain lines without it.
  tqdm_lib = None


# Prior costs, seconds on one 2026 CPU core: (fixed, per image). Measured on the
# default config (200 tuning images, hill-climbed grids); only their ratios matter.
_BASELINE_COSTS = {
    "noisy": (0.0, 0.0),
    "median": (0.3, 2e-4),
    "gaussian_blur": (0.1, 4e-5),
    "total_variation": (0.6, 4e-4),
    "nl_means": (2.5, 6e-4),
    "wavelet": (0.8, 1e-4),
    "bm3d": (12.0, 2e-2),
    "wiener": (2.0, 5e-5),
}
# A computed baseline's scoring in this process, per image.
_SCORING_COST = 5e-5
# A level's noise, models and scoring in this process: fixed and per image.
_LEVEL_COST = (0.5, 1.5e-4)
# A result read from the cache.
_CACHED_COST = 0.02
# The representation: raw pixels (k-means and probes) and each model's features.
REPRESENTATION_RAW_COST = 30.0
REPRESENTATION_MODEL_COST = 4.0


def baseline_cost(name: str, num_images: int) -> float:
  fixed, per_image = _BASELINE_COSTS.get(name, (1.0, 1e-4))
  return fixed + (per_image + _SCORING_COST) * num_images


def level_cost(num_models: int, num_images: int) -> float:
  return _LEVEL_COST[0] + _LEVEL_COST[1] * num_images * max(1, num_models)


def cached_cost() -> float:
  return _CACHED_COST


class Progress:
  """Logs one line per stage with its elapsed seconds and keeps them for report.json."""

  def __init__(self):
    self.start = time.perf_counter()
    self.timings = {}

  @contextlib.contextmanager
  def stage(self, name: str, log: bool = True):
    """Times the block as stage `name`; logs its line unless `log` is False (debug only then)."""
    start = time.perf_counter()
    yield
    elapsed = time.perf_counter() - start
    self.record(name, elapsed)
    logging.log(logging.INFO if log else logging.DEBUG, "%s: %.1f s (%.0f s since the start).",
                name, elapsed, time.perf_counter() - self.start)

  def record(self, name: str, seconds: float) -> None:
    """Keeps a duration measured elsewhere (e.g. in a worker process) for report.json."""
    self.timings[name] = round(float(seconds), 3)

  def levels(self, num_levels: int, total_cost: float, later_cost: float = 0.0) -> "LevelProgress":
    return LevelProgress(self, num_levels, total_cost, later_cost)


@dataclasses.dataclass
class LevelProgress:
  """Counts levels and prior cost done; logs a line per level; drives the bar on a terminal.

  Attributes:
    progress: the evaluation's Progress (its start time is the ETA's origin).
    num_levels: (type, level) pairs in all.
    total_cost: prior cost of all the levels' work (models, baselines, cache reads).
    later_cost: prior cost of what follows the levels (the representation).
  """
  progress: Progress
  num_levels: int
  total_cost: float
  later_cost: float = 0.0
  done_levels: int = 0
  done_cost: float = 0.0

  def __post_init__(self):
    self._start = time.perf_counter()
    self._bar = None
    self._stream = None
    if tqdm_lib is not None and _is_terminal(sys.stderr):
      self._bar = tqdm_lib.tqdm(total=self.num_levels, unit="level", file=sys.stderr,
                                dynamic_ncols=True, leave=False,
                                bar_format="{desc}{percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                                           "levels [{elapsed}{postfix}]")
      self._stream = _redirect_log_stream(sys.stderr)

  def add_cost(self, cost: float) -> None:
    """Work found once a level started (e.g. a cache entry that turned out unusable)."""
    self.total_cost += cost

  def work_done(self, cost: float) -> None:
    self.done_cost += cost
    if self._bar is not None:
      self._bar.set_postfix_str(self.remaining_text(), refresh=True)

  def remaining_seconds(self) -> float | None:
    """Seconds left for the whole evaluation, or None before enough is known."""
    elapsed = time.perf_counter() - self._start
    # Until a level is done or a tenth of the work, the pace says little.
    if self.done_cost <= 0 or not (self.done_levels or self.done_cost >= 0.1 * self.total_cost):
      return None
    left = max(0.0, self.total_cost - self.done_cost) + self.later_cost
    return left * elapsed / self.done_cost

  def remaining_text(self) -> str:
    remaining = self.remaining_seconds()
    return "time left not known yet" if remaining is None else (
        f"about {logs.format_duration(remaining)} left")

  def level_done(self, label: str, seconds: float, details: str) -> None:
    """Logs the level's line: `label` done in `seconds` (`details`), elapsed and time left."""
    self.done_levels += 1
    elapsed = time.perf_counter() - self.progress.start
    logging.info("Level %d/%d %s done in %.1f s (%s); %s elapsed, %s.", self.done_levels,
                 self.num_levels, label, seconds, details, logs.format_duration(elapsed),
                 self.remaining_text())
    if self._bar is not None:
      self._bar.set_description_str(f"{label} ", refresh=False)
      self._bar.update(1)
      self._bar.refresh()

  def close(self) -> None:
    if self._bar is not None:
      _restore_log_stream(self._stream)
      self._bar.close()
      self._bar = None


def _is_terminal(stream) -> bool:
  try:
    return stream.isatty()
  except (AttributeError, ValueError):
    return False


class _BarSafeStream:
  """A file-like object writing through tqdm.write, so that log lines print above the bar."""

  def __init__(self, stream):
    self._stream = stream

  def write(self, text: str) -> None:
    if text.strip():
      tqdm_lib.tqdm.write(text.rstrip("\n"), file=self._stream)

  def flush(self) -> None:
    self._stream.flush()


def _redirect_log_stream(bar_stream):
  """Points absl's log handler at the bar's stream, through tqdm; returns what to restore."""
  handler = logging.get_absl_handler().python_handler
  original = handler.stream
  handler.stream = _BarSafeStream(bar_stream)
  return handler, original


def _restore_log_stream(saved) -> None:
  handler, original = saved
  handler.stream = original
