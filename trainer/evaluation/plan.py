"""The evaluation's plan, made before any work: the levels, each baseline's cache key and cost.

`make_plan` is pure (no TensorFlow, nothing denoised): from the config, the
clean images, the selected baselines and the cache directory's listing it
says, for every (noise type, level) in order, which baselines run on how many
test images, each one's cache key, whether its result is already cached,
and the prior cost of each piece of work (for the time-left estimate).
trainer/evaluation/schedule.py then runs the plan.

A baseline's cache key holds exactly what its result depends on: the baseline,
its code (the registry's sources, the noise and metrics code, the libraries'
versions: `code`, from the caller), the dataset and its version, the split and
the number of test images it denoises (and a digest of those images), the
noise type, level, root seed and the seeds of its noise streams, and the
tuning images (their split and a digest; the Wiener fit images too for
wiener). The models, the other baselines and display settings are not in it.

Image i of a (type, level) gets the noise seed fold_in(`noise_seed(...)`, i),
so every method sees the very same noisy images and a rerun reproduces them.
"""

import dataclasses
import os
import zlib

import numpy as np

from trainer.evaluation import cache as cache_lib
from trainer.evaluation import progress as progress_lib


# Independent noise streams of each (type, level): test, tuning and Wiener-fit images.
TEST_STREAM, TUNE_STREAM, FIT_STREAM = "test", "tune", "fit"
# Example outputs kept per cached baseline result: enough for the default num_images_to_show.
STORED_OUTPUTS = 10
# Baselines that are not worth a worker process: nothing to tune or filter.
INLINE_BASELINES = ("noisy",)
# Baselines whose denoising stays one task: wiener's matrix product is never split
# (BLAS may sum a split one in another order).
WHOLE_BASELINES = ("noisy", "wiener")


def noise_seed(seed: int, noise_type: str, level: float, stream: str) -> np.ndarray:
  """The [2] int64 seed of one (stream, noise type, level): stable across processes and runs."""
  key = zlib.crc32(f"{stream}/{noise_type}/{float(level)!r}".encode())
  return np.array([seed, key], np.int64)


def level_key(level: float) -> str:
  """The JSON key and label of a level: its shortest exact repr, 0.4 -> "0.4"."""
  return repr(float(level))


@dataclasses.dataclass(frozen=True)
class BaselinePlan:
  """One baseline at one level: what it denoises, its cache key and whether that is cached."""
  name: str
  order: int  # Its position in the report: ties in the task queue go by it.
  count: int  # Test images it denoises.
  key: dict
  cached: bool  # An entry exists under `key` (it may still turn out unusable).
  cost: float  # Prior cost: a cache read if cached, else tuning, denoising and scoring.

  @property
  def kind(self) -> str:
    """The cache's folder of this baseline's entries."""
    return f"baseline-{self.name}"


@dataclasses.dataclass(frozen=True)
class LevelPlan:
  """One (noise type, level): its baselines (in report order) and the prior cost of its work."""
  index: int
  noise_type: str
  level: float
  baselines: tuple[BaselinePlan, ...]
  model_cost: float  # The level's noise, models and their scoring, in this process.

  @property
  def stage(self) -> str:
    return f"{self.noise_type}/{level_key(self.level)}"

  @property
  def label(self) -> str:
    return f"{self.noise_type} {level_key(self.level)}"

  @property
  def cost(self) -> float:
    return self.model_cost + sum(entry.cost for entry in self.baselines)


@dataclasses.dataclass(frozen=True)
class Plan:
  """Every level to evaluate, in order, and what the levels' results are shown with.

  Attributes:
    levels: the (type, level) pairs, in NOISE_TYPES then level order.
    num_examples: test images the models (and the fast baselines) are scored on.
    subset_size: test images every method denoised (the slow baselines' share).
    shown: example images per method in the examples figure.
    stored_outputs: example outputs kept in a baseline's cache entry.
    shown_levels: {type: the level whose examples are shown (the middle one)}.
    reference: (type, level) of the headline table, whose noisy images the
      representation evaluation reuses.
  """
  levels: tuple[LevelPlan, ...]
  num_examples: int
  subset_size: int
  shown: int
  stored_outputs: int
  shown_levels: dict
  reference: tuple[str, float]

  @property
  def cost(self) -> float:
    return sum(level.cost for level in self.levels)


def subset_size(config, baseline_names, slow_baselines, num_examples: int) -> int:
  """Test images every method denoised: the slow baselines' share, else all of them."""
  if any(name in slow_baselines for name in baseline_names):
    return min(config.slow_baseline_max_images, num_examples)
  return num_examples


class _Keys:
  """Builds the baselines' cache keys; digests of the images are computed once."""

  def __init__(self, config, data, code: dict):
    self._config, self._data, self._code = config, data, code
    self._test_digests = {}
    self._tuning = {"split": data.splits["tuning"], "num_images": len(data.tune_images),
                    "clean": cache_lib.array_digest(data.tune_images)}
    self._fit = {"split": data.splits["wiener_fit"], "num_images": len(data.fit_images),
                 "clean": cache_lib.array_digest(data.fit_images)}

  def _test(self, count: int) -> dict:
    if count not in self._test_digests:
      self._test_digests[count] = cache_lib.array_digest(self._data.test_images[:count])
    return {"num_images": count, "clean": self._test_digests[count]}

  def baseline(self, name: str, count: int, noise_type: str, level: float) -> dict:
    config = self._config
    streams = [TEST_STREAM, TUNE_STREAM]
    key = {
        "kind": "baseline",
        "baseline": name,
        "code": self._code,
        "dataset": {"name": config.dataset, "version": self._data.dataset_version,
                    "split": config.split, "train_split": config.train_split},
        "test": self._test(count),
        "tuning": self._tuning,
    }
    if name == "wiener":
      key["fit"] = self._fit
      streams.append(FIT_STREAM)
    key["noise"] = {
        "type": noise_type, "level": float(level), "seed": int(config.seed),
        "stream_seeds": {stream: noise_seed(config.seed, noise_type, level, stream).tolist()
                         for stream in streams}}
    return key


def make_plan(config, data, levels: dict[str, tuple[float, ...]], baseline_names,
              slow_baselines, cache: cache_lib.Cache, code: dict, num_models: int) -> Plan:
  """The plan of one evaluation (see the module docstring).

  Args:
    config: the evaluate config.
    data: the clean images (`loading.EvalData`, or anything with its fields).
    levels: {noise type: levels}, as `settings.noise_levels` gives them.
    baseline_names: the selected baselines, in report order.
    slow_baselines: those of the registry run on a subset only.
    cache: where cached results are looked for (only their existence is checked).
    code: the code part of every baseline's key (`schedule.code_key`).
    num_models: models scored at each level (for the costs).
  """
  num_examples = len(data.test_images)
  subset = subset_size(config, baseline_names, slow_baselines, num_examples)
  keys = _Keys(config, data, code)
  planned = []
  for noise_type, type_levels in levels.items():
    for level in type_levels:
      entries = []
      for order, name in enumerate(baseline_names):
        count = subset if name in slow_baselines else num_examples
        key = keys.baseline(name, count, noise_type, level)
        cached = cache.enabled and os.path.exists(cache.path(f"baseline-{name}", key))
        cost = progress_lib.cached_cost() if cached else progress_lib.baseline_cost(name, count)
        entries.append(BaselinePlan(name, order, count, key, cached, cost))
      planned.append(LevelPlan(len(planned), noise_type, float(level), tuple(entries),
                               progress_lib.level_cost(num_models, num_examples)))
  return Plan(
      levels=tuple(planned), num_examples=num_examples, subset_size=subset,
      shown=min(config.num_images_to_show, subset),
      stored_outputs=max(config.num_images_to_show, STORED_OUTPUTS),
      shown_levels={noise_type: type_levels[len(type_levels) // 2]
                    for noise_type, type_levels in levels.items()},
      reference=(config.reference.type, float(config.reference.level)))
