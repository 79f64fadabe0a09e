"""Every (noise type, level): models in this process, baselines from the cache or worker processes.

`evaluate_levels` scores every method at every level and returns what the
report needs. Per level, in this process: the fixed noisy test images
(`scoring.add_fixed_noise`), each model's output and every method's scores.
Per baseline: its entry in the cache (trainer/evaluation/cache.py) if there
is one, else tuning on the tuning images and denoising of the test images as
tasks in worker processes (trainer/evaluation/parallel.py), then scoring here
and a new cache entry. Earlier levels' tasks go first, so levels finish in
order, while this process draws the next level's noise and runs its models.

A baseline's cache key holds exactly what its result depends on: the baseline,
its code (baselines and tuning, the noise and metrics code, the libraries'
versions), the dataset and its version, the split and the number of test
images it denoises (and a digest of those images), the noise type, level,
root seed and the seeds of its noise streams, and the tuning images (their
split and a digest; the Wiener fit images too for wiener). The models, the
other baselines and display settings are not in it.
"""

import dataclasses
import os
import time

import numpy as np
import tensorflow as tf

from input_pipeline import noise as noise_lib
from trainer import errors
from trainer.evaluation import baselines
from trainer.evaluation import cache as cache_lib
from trainer.evaluation import loading
from trainer.evaluation import parallel
from trainer.evaluation import progress as progress_lib
from trainer.evaluation import scoring
from trainer.evaluation import tuning
from trainer import metrics as metrics_lib


# Example outputs kept per cached baseline result: enough for the default num_images_to_show.
STORED_OUTPUTS = 10
# The libraries whose versions are part of a baseline's key (TensorFlow's is added: its
# distribution has several names).
_LIBRARIES = ("numpy", "scipy", "scikit-image", "PyWavelets", "bm3d", "bm4d")
_PER_EXAMPLE = ("bce", "mse", "psnr_db", "ssim")


@dataclasses.dataclass
class LevelsResult:
  """What `evaluate_levels` returns to the report.

  Attributes:
    results: {type: {level key: level result}}, in type then level order.
    examples: {type: {"level", "rows"}}: the example rows of the type's middle level.
    reference_noisy: the noisy test images at the reference (type, level).
    cache: counts of baseline results read from the cache and computed.
  """
  results: dict
  examples: dict
  reference_noisy: np.ndarray | None
  cache: dict


@dataclasses.dataclass
class _Baseline:
  name: str
  order: int
  count: int  # Test images it denoises.
  key: dict
  cost: float
  expected_in_cache: bool = False
  from_cache: bool = False
  params: dict | None = None
  tuning_psnr_db: float | None = None
  per_example: dict | None = None
  outputs: np.ndarray | None = None
  tuned: object = None
  parts: list | None = None
  tune_seconds: float = 0.0
  denoise_seconds: float = 0.0


@dataclasses.dataclass
class _Level:
  index: int
  noise_type: str
  level: float
  baselines: dict
  noisy: np.ndarray | None = None
  per_example: dict = dataclasses.field(default_factory=dict)
  outputs: dict = dataclasses.field(default_factory=dict)
  start: float = 0.0
  model_seconds: float = 0.0
  remaining: int = 0
  prepared: bool = False

  @property
  def stage(self) -> str:
    return f"{self.noise_type}/{scoring.level_key(self.level)}"


def subset_size(config, baseline_names, num_examples: int) -> int:
  """Test images every method denoised: the slow baselines' share, else all of them."""
  if any(name in baselines.SLOW_BASELINES for name in baseline_names):
    return min(config.slow_baseline_max_images, num_examples)
  return num_examples


def code_key() -> dict:
  """The code part of a baseline's key: sources and library versions."""
  sources = [*cache_lib.module_files(baselines, "TunedBaseline"),
             *cache_lib.module_files(tuning, "tune_baseline"),
             scoring.__file__, metrics_lib.__file__, noise_lib.__file__]
  return {"sources": cache_lib.source_digest(sources),
          "libraries": {**cache_lib.library_versions(_LIBRARIES), "tensorflow": tf.__version__}}


class _Keys:
  """Builds the baselines' cache keys; digests of the images are computed once."""

  def __init__(self, config, data: loading.EvalData):
    self._config, self._data = config, data
    self._code = code_key()
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
    streams = [scoring.TEST_STREAM, scoring.TUNE_STREAM]
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
      streams.append(scoring.FIT_STREAM)
    key["noise"] = {
        "type": noise_type, "level": float(level), "seed": int(config.seed),
        "stream_seeds": {stream: scoring.noise_seed(config.seed, noise_type, level, stream).tolist()
                         for stream in streams}}
    return key


def _kind(name: str) -> str:
  return f"baseline-{name}"


def _score(clean, denoised, method: str, config) -> dict[str, np.ndarray]:
  try:
    return scoring.per_example_metrics(clean, denoised, config.batch_size)
  except ValueError as error:
    raise errors.EvaluationError(
        f"Method {method!r} returned unusable images: {error}.") from error


class _Evaluation:
  """The state of one `evaluate_levels` call (see there)."""

  def __init__(self, config, data, models, baseline_names, levels, progress, shown, cache,
               workers, later_cost):
    self.config, self.data, self.models = config, data, models
    self.baseline_names, self.progress, self.shown, self.cache = (
        baseline_names, progress, shown, cache)
    self.workers = workers
    self.num_examples = len(data.test_images)
    self.subset_size = subset_size(config, baseline_names, self.num_examples)
    self.stored_outputs = max(config.num_images_to_show, STORED_OUTPUTS)
    keys = _Keys(config, data)
    self.levels = []
    for noise_type, type_levels in levels.items():
      for level in type_levels:
        entries = {}
        for order, name in enumerate(baseline_names):
          count = self.subset_size if name in baselines.SLOW_BASELINES else self.num_examples
          key = keys.baseline(name, count, noise_type, level)
          cached = cache.enabled and os.path.exists(cache.path(_kind(name), key))
          cost = (progress_lib.cached_cost() if cached
                  else progress_lib.baseline_cost(name, count))
          entries[name] = _Baseline(name, order, count, key, cost, expected_in_cache=cached)
        self.levels.append(_Level(len(self.levels), noise_type, level, entries))
    self.results = {noise_type: {scoring.level_key(level): None for level in type_levels}
                    for noise_type, type_levels in levels.items()}
    self.shown_levels = {noise_type: type_levels[len(type_levels) // 2]
                         for noise_type, type_levels in levels.items()}
    self.examples, self.reference_noisy = {}, None
    self.counts = {"from_cache": 0, "computed": 0}
    level_costs = [progress_lib.level_cost(len(models), self.num_examples)
                   + sum(entry.cost for entry in level.baselines.values())
                   for level in self.levels]
    self.level_progress = progress.levels(len(self.levels), sum(level_costs), later_cost)
    self.queue = parallel.TaskQueue(lambda: parallel.make_executor(workers), 2 * workers)

  def run(self) -> LevelsResult:
    try:
      with self.queue:
        next_level = 0
        while next_level < len(self.levels) or self.queue.pending():
          # Keep enough work queued for the workers; draw the next level's noise meanwhile.
          if next_level < len(self.levels) and self.queue.pending() < 3 * self.workers:
            self._prepare(self.levels[next_level])
            next_level += 1
          else:
            self.queue.wait()
    finally:
      self.level_progress.close()
    return LevelsResult(self.results, self.examples, self.reference_noisy,
                        {**self.counts, "invalid": self.cache.invalid})

  # This process's part: noise, models, cache reads.

  def _prepare(self, level: _Level) -> None:
    config, data = self.config, self.data
    level.start = time.perf_counter()
    with self.progress.stage(f"{level.stage}: noise", log=False):
      level.noisy = scoring.add_fixed_noise(
          data.test_images, level.noise_type, level.level,
          scoring.noise_seed(config.seed, level.noise_type, level.level, scoring.TEST_STREAM))
    for model in self.models:
      start = time.perf_counter()
      with self.progress.stage(f"{level.stage}: model {model.name}", log=False):
        denoised = model.denoise(level.noisy, config.batch_size)
        level.per_example[model.name] = _score(data.test_images, denoised, model.name, config)
        level.outputs[model.name] = np.array(denoised[:self.shown])
      level.model_seconds += time.perf_counter() - start
    self.level_progress.work_done(progress_lib.level_cost(len(self.models), self.num_examples))
    level.remaining = len(level.baselines)
    tune_noisy = fit_noisy = None
    # The costliest first: a level's longest task should not be the last one started.
    for entry in sorted(level.baselines.values(), key=lambda entry: -entry.cost):
      if self._read_cache(level, entry):
        continue
      if tune_noisy is None:
        tune_noisy = self._noise(level, data.tune_images, scoring.TUNE_STREAM)
      if entry.name == "wiener" and fit_noisy is None:
        fit_noisy = self._noise(level, data.fit_images, scoring.FIT_STREAM)
      fit = ((fit_noisy, data.fit_images) if entry.name == "wiener" and len(data.fit_images)
             else (None, None))
      args = (tuning.tune_baseline, entry.name, tune_noisy, data.tune_images, *fit)
      if entry.name == "noisy":  # Nothing to tune or filter: not worth a process.
        self._tuned(level, entry, parallel.tune_task(*args))
      else:
        self.queue.push((level.index, 0, entry.order), parallel.tune_task, args,
                        lambda result, level=level, entry=entry: self._tuned(level, entry, result))
    level.prepared = True
    if not level.remaining:
      self._finish_level(level)

  def _noise(self, level: _Level, images: np.ndarray, stream: str) -> np.ndarray:
    with self.progress.stage(f"{level.stage}: noise ({stream})", log=False):
      return scoring.add_fixed_noise(
          images, level.noise_type, level.level,
          scoring.noise_seed(self.config.seed, level.noise_type, level.level, stream))

  def _read_cache(self, level: _Level, entry: _Baseline) -> bool:
    """Fills `entry` from its cache entry; False (its cost added back if needed) if there is none."""
    needed = min(self.shown, entry.count)

    def validate(found: cache_lib.Entry) -> None:
      for name in _PER_EXAMPLE:
        values = found.arrays.get(name)
        if values is None or values.shape != (entry.count,) or values.dtype != np.float64:
          raise ValueError(f"its {name} is not {entry.count} float64 values")
      outputs = found.arrays.get("outputs")
      if (outputs is None or outputs.ndim != 4 or outputs.shape[0] < needed
          or outputs.shape[1:] != self.data.test_images.shape[1:]):
        raise ValueError(f"it holds fewer than the {needed} example outputs needed")
      if not isinstance(found.value.get("params"), dict) or not isinstance(
          found.value.get("tuning_psnr_db"), (int, float)):
        raise ValueError("it lacks the tuned parameters")

    found = self.cache.load(_kind(entry.name), entry.key, validate)
    if found is None:
      if entry.expected_in_cache:  # It was there, but unusable: the work is back.
        entry.cost = progress_lib.baseline_cost(entry.name, entry.count)
        self.level_progress.add_cost(entry.cost - progress_lib.cached_cost())
      return False
    entry.from_cache = True
    entry.params = found.value["params"]
    entry.tuning_psnr_db = float(found.value["tuning_psnr_db"])
    entry.per_example = {name: found.arrays[name] for name in _PER_EXAMPLE}
    entry.outputs = found.arrays["outputs"]
    self.counts["from_cache"] += 1
    self._baseline_done(level, entry)
    return True

  # The workers' part, as their results come back.

  def _tuned(self, level: _Level, entry: _Baseline, result) -> None:
    entry.tuned, entry.tune_seconds = result
    self.progress.record(f"{level.stage}: tune {entry.name}", entry.tune_seconds)
    # wiener's matrix product stays whole (BLAS may sum a split one in another order).
    slices = ([slice(0, entry.count)] if entry.name in ("noisy", "wiener")
              else parallel.chunks(entry.count, self.workers))
    entry.parts = [None] * len(slices)
    for part, images in enumerate(slices):
      args = (entry.tuned, level.noisy[images])
      callback = (lambda result, level=level, entry=entry, part=part:
                  self._denoised(level, entry, part, result))
      if entry.name == "noisy":
        callback(parallel.denoise_task(*args))
      else:
        self.queue.push((level.index, 1, entry.order, part), parallel.denoise_task, args, callback)

  def _denoised(self, level: _Level, entry: _Baseline, part: int, result) -> None:
    entry.parts[part], seconds = result
    entry.denoise_seconds += seconds
    if any(part is None for part in entry.parts):
      return
    denoised = np.concatenate(entry.parts) if len(entry.parts) > 1 else entry.parts[0]
    entry.parts = None
    self.progress.record(f"{level.stage}: baseline {entry.name} ({entry.count} images)",
                         entry.denoise_seconds)
    entry.per_example = _score(self.data.test_images[:entry.count], denoised, entry.name,
                               self.config)
    entry.outputs = np.asarray(denoised[:min(self.stored_outputs, entry.count)], np.float32)
    entry.params = scoring.to_builtin(dict(entry.tuned.params))
    entry.tuning_psnr_db = float(entry.tuned.tuning_psnr_db)
    entry.tuned = None
    self.cache.store(_kind(entry.name), entry.key, {
        "params": entry.params, "tuning_psnr_db": entry.tuning_psnr_db,
        "num_examples": entry.count,
        "seconds": {"tune": round(entry.tune_seconds, 3),
                    "denoise": round(entry.denoise_seconds, 3)},
    }, {**entry.per_example, "outputs": entry.outputs})
    self.counts["computed"] += 1
    self._baseline_done(level, entry)

  def _baseline_done(self, level: _Level, entry: _Baseline) -> None:
    self.level_progress.work_done(entry.cost)
    level.remaining -= 1
    if not level.remaining and level.prepared:
      self._finish_level(level)

  # A level's result.

  def _finish_level(self, level: _Level) -> None:
    per_example, outputs = dict(level.per_example), dict(level.outputs)
    for name, entry in level.baselines.items():
      per_example[name] = entry.per_example
      outputs[name] = entry.outputs[:self.shown]
    result = {
        "level": level.level,
        "num_examples": self.num_examples,
        "metrics": {name: scoring.summarize(values) for name, values in per_example.items()},
        "baselines": {name: {"params": entry.params, "tuning_psnr_db": entry.tuning_psnr_db,
                             "num_examples": entry.count, "from_cache": entry.from_cache}
                      for name, entry in level.baselines.items()},
    }
    if self.subset_size < self.num_examples:
      result["subset"] = {
          "num_examples": self.subset_size,
          "metrics": {name: scoring.summarize(values, self.subset_size)
                      for name, values in per_example.items()},
      }
    result["margin_over_best_baseline"] = {
        model.name: scoring.margin_over_best_baseline(result, model.name)
        for model in self.models}
    self.results[level.noise_type][scoring.level_key(level.level)] = result
    if level.level == self.shown_levels[level.noise_type]:
      self.examples[level.noise_type] = {
          "level": level.level,
          # The "noisy" baseline's output is the noisy row itself.
          "rows": [("original", self.data.test_images[:self.shown]),
                   ("noisy input", np.array(level.noisy[:self.shown])),
                   *((name, images) for name, images in outputs.items() if name != "noisy")],
      }
    if (level.noise_type, level.level) == (self.config.reference.type,
                                           float(self.config.reference.level)):
      self.reference_noisy = level.noisy
    level.noisy = None
    level.per_example, level.outputs = {}, {}
    for entry in level.baselines.values():
      entry.per_example = entry.outputs = None
    self.level_progress.level_done(
        f"{level.noise_type} {scoring.level_key(level.level)}",
        time.perf_counter() - level.start, self._details(level, result))

  def _details(self, level: _Level, result: dict) -> str:
    parts = [f"models {level.model_seconds:.1f} s" if self.models else "no model"]
    computed = [entry for entry in level.baselines.values() if not entry.from_cache]
    cached = len(level.baselines) - len(computed)
    if computed:
      tune = sum(entry.tune_seconds for entry in computed)
      run = sum(entry.denoise_seconds for entry in computed)
      parts.append(f"{len(computed)} baselines computed (tuning {tune:.1f} s, denoising "
                   f"{run:.1f} s of worker time)")
    if cached:
      parts.append(f"{cached} baselines from the cache")
    margins = [f"{name} {margin['margin_db']:+.2f} dB vs {margin['best_baseline']}"
               for name, margin in result["margin_over_best_baseline"].items() if margin]
    if margins:
      parts.append("margin " + ", ".join(margins))
    return "; ".join(parts)


def evaluate_levels(config, data: loading.EvalData, models: list[loading.Model], baseline_names,
                    levels: dict[str, tuple[float, ...]], progress: progress_lib.Progress,
                    shown: int, cache: cache_lib.Cache, workers: int,
                    later_cost: float = 0.0) -> LevelsResult:
  """Scores every model and baseline at every (type, level) of `levels`.

  Args:
    config: the evaluate config.
    data: the clean images.
    models: the SavedModels, run in this process.
    baseline_names: the baselines, in report order.
    levels: {noise type: levels}, as `settings.noise_levels` gives them.
    progress: where stage timings and the per-level lines go.
    shown: example images per method in the examples figure.
    cache: baseline results read and written there.
    workers: worker processes for the baselines (1: all in this process, serially).
    later_cost: prior cost of what the evaluation does after the levels, for the ETA.
  """
  return _Evaluation(config, data, models, baseline_names, levels, progress, shown, cache,
                     workers, later_cost).run()
