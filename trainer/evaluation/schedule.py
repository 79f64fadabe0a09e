"""Runs the plan (trainer/evaluation/plan.py): models in this process, baselines from the cache or workers.

Per level, in this process: the fixed noisy test images
(`scoring.add_fixed_noise`), each model's output and every method's scores.
Per baseline: its cache entry if the plan found one and it holds what is
needed, else tuning on the tuning images and denoising of the test images as
tasks in worker processes (trainer/evaluation/parallel.py), then scoring
here and a new cache entry. Earlier levels' tasks go first, so levels finish
in order, while this process draws the next level's noise and runs its
models. Each piece of work ends in an immutable record
(trainer/evaluation/records.py); a level's records become its report entry
and its progress line once its last baseline is in.
"""

import dataclasses
import time

import numpy as np
import tensorflow as tf

from input_pipeline import noise as noise_lib
from trainer import errors
from trainer import metrics as metrics_lib
from trainer.evaluation import cache as cache_lib
from trainer.evaluation import loading
from trainer.evaluation import parallel
from trainer.evaluation import plan as plan_lib
from trainer.evaluation import progress as progress_lib
from trainer.evaluation import records
from trainer.evaluation import registry as registry_lib
from trainer.evaluation import scoring


# The libraries whose versions are part of a baseline's key (TensorFlow's is added: its
# distribution has several names).
_LIBRARIES = ("numpy", "scipy", "scikit-image", "PyWavelets", "bm3d", "bm4d")


def code_key(registry: registry_lib.Registry) -> dict:
  """The code part of a baseline's key: sources and library versions."""
  sources = [*registry.baseline_sources, scoring.__file__, metrics_lib.__file__,
             noise_lib.__file__]
  return {"sources": cache_lib.source_digest(sources),
          "libraries": {**cache_lib.library_versions(_LIBRARIES), "tensorflow": tf.__version__}}


def _score(clean, denoised, method: str, batch_size: int) -> dict[str, np.ndarray]:
  try:
    return scoring.per_example_metrics(clean, denoised, batch_size)
  except ValueError as error:
    raise errors.EvaluationError(
        f"Method {method!r} returned unusable images: {error}.") from error


@dataclasses.dataclass
class _Running:
  """A level between its start and its last baseline's result."""
  noise: noise_lib.NoiseSpec
  noisy: np.ndarray
  models: dict
  start: float
  baselines: dict = dataclasses.field(default_factory=dict)  # {name: BaselineResult}, as done.
  prepared: bool = False  # Every baseline is read or queued.


class _Scheduler:
  """Runs one plan (see `evaluate_levels`)."""

  def __init__(self, plan, config, data, models, registry, progress, cache, workers, later_cost):
    self._plan, self._config, self._data, self._models = plan, config, data, models
    self._tune_baseline = registry.tune_baseline
    self._progress, self._cache, self._workers = progress, cache, workers
    self._counts = {"from_cache": 0, "computed": 0}
    self._summaries = {}
    for level in plan.levels:
      self._summaries.setdefault(level.noise_type, {})[plan_lib.level_key(level.level)] = None
    self._examples, self._reference_noisy = {}, None
    self._level_progress = progress.levels(len(plan.levels), plan.cost, later_cost)
    self._queue = parallel.TaskQueue(lambda: parallel.make_executor(workers), 2 * workers)

  def run(self) -> records.LevelsResult:
    try:
      with self._queue:
        next_level = 0
        levels = self._plan.levels
        while next_level < len(levels) or self._queue.pending():
          # Keep enough work queued for the workers; draw the next level's noise meanwhile.
          if next_level < len(levels) and self._queue.pending() < 3 * self._workers:
            self._prepare(levels[next_level])
            next_level += 1
          else:
            self._queue.wait()
    finally:
      self._level_progress.close()
    return records.LevelsResult(self._summaries, self._examples, self._reference_noisy,
                                {**self._counts, "invalid": self._cache.invalid})

  def _noise(self, level: plan_lib.LevelPlan, spec: noise_lib.NoiseSpec, images: np.ndarray,
             stream: str) -> np.ndarray:
    with self._progress.stage(f"{level.stage}: noise ({stream})", log=False):
      return scoring.add_fixed_noise(
          images, spec, plan_lib.noise_seed(self._config.seed, spec.type, spec.factor, stream))

  # This process's part: noise, models, cache reads.

  def _prepare(self, level: plan_lib.LevelPlan) -> None:
    config, data = self._config, self._data
    start = time.perf_counter()
    spec = noise_lib.NoiseSpec(level.noise_type, level.level)
    with self._progress.stage(f"{level.stage}: noise", log=False):
      noisy = scoring.add_fixed_noise(
          data.test_images, spec,
          plan_lib.noise_seed(config.seed, spec.type, spec.factor, plan_lib.TEST_STREAM))
    models = {}
    for model in self._models:
      model_start = time.perf_counter()
      with self._progress.stage(f"{level.stage}: model {model.name}", log=False):
        denoised = model.denoise(noisy, config.batch_size)
        per_example = _score(data.test_images, denoised, model.name, config.batch_size)
      models[model.name] = records.ModelResult(per_example, np.array(denoised[:self._plan.shown]),
                                               time.perf_counter() - model_start)
    running = _Running(spec, noisy, models, start)
    self._level_progress.work_done(level.model_cost)
    tune_noisy = fit_noisy = None
    # The costliest first: a level's longest task should not be the last one started.
    for entry in sorted(level.baselines, key=lambda entry: -entry.cost):
      if self._read_cache(level, running, entry):
        continue
      if tune_noisy is None:
        tune_noisy = self._noise(level, spec, data.tune_images, plan_lib.TUNE_STREAM)
      if entry.name == "wiener" and fit_noisy is None:
        fit_noisy = self._noise(level, spec, data.fit_images, plan_lib.FIT_STREAM)
      fit = ((fit_noisy, data.fit_images) if entry.name == "wiener" and len(data.fit_images)
             else (None, None))
      args = (self._tune_baseline, entry.name, tune_noisy, data.tune_images, *fit)
      callback = (lambda result, entry=entry: self._tuned(level, running, entry, result))
      if entry.name in plan_lib.INLINE_BASELINES:
        callback(parallel.tune_task(*args))
      else:
        self._queue.push((level.index, 0, entry.order), parallel.tune_task, args, callback)
    running.prepared = True
    self._finish_if_done(level, running)

  def _read_cache(self, level: plan_lib.LevelPlan, running: _Running,
                  entry: plan_lib.BaselinePlan) -> bool:
    """Takes `entry`'s result from its cache entry; False (its cost added back if needed) if none."""
    needed = min(self._plan.shown, entry.count)
    image_shape = self._data.test_images.shape[1:]
    found = self._cache.load(entry.kind, entry.key, lambda found: records.check_cache_entry(
        found, entry, needed, image_shape))
    if found is None:
      if entry.cached:  # It was there, but unusable: the work is back.
        self._level_progress.add_cost(_computed_cost(entry) - entry.cost)
      return False
    self._counts["from_cache"] += 1
    self._baseline_done(level, running, entry, records.from_cache_entry(found), entry.cost)
    return True

  # The workers' part, as their results come back.

  def _tuned(self, level: plan_lib.LevelPlan, running: _Running, entry: plan_lib.BaselinePlan,
             result) -> None:
    tuned, tune_seconds = result
    self._progress.record(f"{level.stage}: tune {entry.name}", tune_seconds)
    slices = ([slice(0, entry.count)] if entry.name in plan_lib.WHOLE_BASELINES
              else parallel.chunks(entry.count, self._workers))
    parts, seconds = [None] * len(slices), []

    def denoised(part: int, result) -> None:
      parts[part], part_seconds = result
      seconds.append(part_seconds)
      if all(done is not None for done in parts):
        images = np.concatenate(parts) if len(parts) > 1 else parts[0]
        self._denoised(level, running, entry, tuned, images, tune_seconds, sum(seconds))

    for part, images in enumerate(slices):
      args = (tuned, running.noisy[images])
      callback = lambda result, part=part: denoised(part, result)
      if entry.name in plan_lib.INLINE_BASELINES:
        callback(parallel.denoise_task(*args))
      else:
        self._queue.push((level.index, 1, entry.order, part), parallel.denoise_task, args,
                         callback)

  def _denoised(self, level: plan_lib.LevelPlan, running: _Running, entry: plan_lib.BaselinePlan,
                tuned, denoised: np.ndarray, tune_seconds: float, denoise_seconds: float) -> None:
    self._progress.record(f"{level.stage}: baseline {entry.name} ({entry.count} images)",
                          denoise_seconds)
    result = records.BaselineResult(
        params=scoring.to_builtin(dict(tuned.params)),
        tuning_psnr_db=float(tuned.tuning_psnr_db),
        per_example=_score(self._data.test_images[:entry.count], denoised, entry.name,
                           self._config.batch_size),
        outputs=np.asarray(denoised[:min(self._plan.stored_outputs, entry.count)], np.float32),
        from_cache=False, tune_seconds=tune_seconds, denoise_seconds=denoise_seconds)
    self._cache.store(entry.kind, entry.key, *records.cache_document(result, entry.count))
    self._counts["computed"] += 1
    self._baseline_done(level, running, entry, result, _computed_cost(entry))

  def _baseline_done(self, level: plan_lib.LevelPlan, running: _Running,
                     entry: plan_lib.BaselinePlan, result: records.BaselineResult,
                     cost: float) -> None:
    running.baselines[entry.name] = result
    self._level_progress.work_done(cost)
    self._finish_if_done(level, running)

  # A level's result.

  def _finish_if_done(self, level: plan_lib.LevelPlan, running: _Running) -> None:
    if not running.prepared or len(running.baselines) < len(level.baselines):
      return
    result = records.LevelResult(
        plan=level, noisy=running.noisy, models=running.models,
        baselines={entry.name: running.baselines[entry.name] for entry in level.baselines},
        seconds=time.perf_counter() - running.start)
    summary = records.level_summary(result, self._plan, scoring.summarize,
                                    scoring.margin_over_best_baseline)
    self._summaries[level.noise_type][plan_lib.level_key(level.level)] = summary
    if level.level == self._plan.shown_levels[level.noise_type]:
      self._examples[level.noise_type] = {
          "level": level.level,
          "rows": records.example_rows(result, self._data.test_images, self._plan.shown)}
    if (level.noise_type, level.level) == self._plan.reference:
      self._reference_noisy = running.noisy
    self._level_progress.level_done(level.label, result.seconds,
                                    records.level_details(result, summary))


def _computed_cost(entry: plan_lib.BaselinePlan) -> float:
  """A baseline's prior cost when it is computed (tuned, denoised, scored)."""
  return progress_lib.baseline_cost(entry.name, entry.count)


def evaluate_levels(plan: plan_lib.Plan, config, data: loading.EvalData,
                    models: list[loading.Model], registry: registry_lib.Registry,
                    progress: progress_lib.Progress, cache: cache_lib.Cache, workers: int,
                    later_cost: float = 0.0) -> records.LevelsResult:
  """Scores every model and baseline at every level of `plan`.

  Args:
    plan: `plan.make_plan`'s plan.
    config: the evaluate config.
    data: the clean images.
    models: the SavedModels, run in this process.
    registry: where the baselines' tuning function comes from.
    progress: where stage timings and the per-level lines go.
    cache: baseline results read and written there.
    workers: worker processes for the baselines (1: all in this process, serially).
    later_cost: prior cost of what the evaluation does after the levels, for the ETA.
  """
  return _Scheduler(plan, config, data, models, registry, progress, cache, workers,
                    later_cost).run()
