"""The results of the levels' work, as immutable records, and what the report makes of them.

- `BaselineResult`: one baseline at one level, computed or read from the cache
  (`from_cache_entry` checks a cache entry holds what the plan needs;
  `cache_document` is what is stored).
- `ModelResult`: one model at one level.
- `LevelResult`: one (noise type, level), all of its methods.
- `level_summary`: a level's entry in report.json (`results[type][level]`);
  `level_details`: the text of its progress line.
- `LevelsResult`: what `schedule.evaluate_levels` returns to the report.
"""

import dataclasses

import numpy as np

from trainer.evaluation import cache as cache_lib
from trainer.evaluation import plan as plan_lib


# The per-image scores of a method (scoring.per_example_metrics), as stored in the cache.
PER_EXAMPLE = ("bce", "mse", "psnr_db", "ssim")


@dataclasses.dataclass(frozen=True)
class BaselineResult:
  """One baseline's result at one level.

  Attributes:
    params: its tuned parameters (JSON values).
    tuning_psnr_db: its per-image mean PSNR on the tuning images.
    per_example: {PER_EXAMPLE name: float64 [count]} on the test images it denoised.
    outputs: its first denoised test images (at least the shown ones).
    from_cache: read from the cache rather than computed.
    tune_seconds, denoise_seconds: worker time it took (0 from the cache).
  """
  params: dict
  tuning_psnr_db: float
  per_example: dict
  outputs: np.ndarray
  from_cache: bool
  tune_seconds: float = 0.0
  denoise_seconds: float = 0.0


@dataclasses.dataclass(frozen=True)
class ModelResult:
  """One model's per-image scores and first outputs at one level."""
  per_example: dict
  outputs: np.ndarray
  seconds: float


@dataclasses.dataclass(frozen=True)
class LevelResult:
  """Every method's result at one (noise type, level), with its noisy test images."""
  plan: plan_lib.LevelPlan
  noisy: np.ndarray
  models: dict  # {model name: ModelResult}, in the models' order.
  baselines: dict  # {baseline name: BaselineResult}, in report order.
  seconds: float


@dataclasses.dataclass(frozen=True)
class LevelsResult:
  """What `schedule.evaluate_levels` returns to the report.

  Attributes:
    results: {type: {level key: level summary}}, in type then level order.
    examples: {type: {"level", "rows"}}: the example rows of the type's shown level.
    reference_noisy: the noisy test images at the reference (type, level).
    cache: counts of baseline results read from the cache and computed, and of
      unusable entries.
  """
  results: dict
  examples: dict
  reference_noisy: np.ndarray | None
  cache: dict


def check_cache_entry(entry: cache_lib.Entry, baseline: plan_lib.BaselinePlan, needed: int,
                      image_shape: tuple[int, ...]) -> None:
  """Raises ValueError unless the entry holds `baseline`'s scores and `needed` example outputs."""
  for name in PER_EXAMPLE:
    values = entry.arrays.get(name)
    if values is None or values.shape != (baseline.count,) or values.dtype != np.float64:
      raise ValueError(f"its {name} is not {baseline.count} float64 values")
  outputs = entry.arrays.get("outputs")
  if (outputs is None or outputs.ndim != 4 or outputs.shape[0] < needed
      or outputs.shape[1:] != tuple(image_shape)):
    raise ValueError(f"it holds fewer than the {needed} example outputs needed")
  if not isinstance(entry.value.get("params"), dict) or not isinstance(
      entry.value.get("tuning_psnr_db"), (int, float)):
    raise ValueError("it lacks the tuned parameters")


def from_cache_entry(entry: cache_lib.Entry) -> BaselineResult:
  """The result an entry that passed `check_cache_entry` holds."""
  return BaselineResult(
      params=entry.value["params"], tuning_psnr_db=float(entry.value["tuning_psnr_db"]),
      per_example={name: entry.arrays[name] for name in PER_EXAMPLE},
      outputs=entry.arrays["outputs"], from_cache=True)


def cache_document(result: BaselineResult, count: int) -> tuple[dict, dict]:
  """(value, arrays) of the cache entry of a computed result."""
  return ({"params": result.params, "tuning_psnr_db": result.tuning_psnr_db,
           "num_examples": count,
           "seconds": {"tune": round(result.tune_seconds, 3),
                       "denoise": round(result.denoise_seconds, 3)}},
          {**result.per_example, "outputs": result.outputs})


def level_summary(level: LevelResult, plan: plan_lib.Plan, summarize, margin) -> dict:
  """The level's entry in report.json: every method's metrics, the baselines' parameters.

  `summarize` is `scoring.summarize` and `margin` `scoring.margin_over_best_baseline`.
  """
  counts = {entry.name: entry.count for entry in level.plan.baselines}
  per_example = {name: model.per_example for name, model in level.models.items()}
  per_example.update({name: baseline.per_example
                      for name, baseline in level.baselines.items()})
  result = {
      "level": level.plan.level,
      "num_examples": plan.num_examples,
      "metrics": {name: summarize(values) for name, values in per_example.items()},
      "baselines": {name: {"params": baseline.params, "tuning_psnr_db": baseline.tuning_psnr_db,
                           "num_examples": counts[name], "from_cache": baseline.from_cache}
                    for name, baseline in level.baselines.items()},
  }
  if plan.subset_size < plan.num_examples:
    result["subset"] = {
        "num_examples": plan.subset_size,
        "metrics": {name: summarize(values, plan.subset_size)
                    for name, values in per_example.items()},
    }
  result["margin_over_best_baseline"] = {name: margin(result, name) for name in level.models}
  return result


def example_rows(level: LevelResult, clean: np.ndarray, shown: int) -> list:
  """The examples figure's rows of a level: original, noisy input, then each method."""
  outputs = {name: model.outputs for name, model in level.models.items()}
  outputs.update({name: baseline.outputs[:shown] for name, baseline in level.baselines.items()})
  # The "noisy" baseline's output is the noisy row itself.
  return [("original", clean[:shown]), ("noisy input", np.array(level.noisy[:shown])),
          *((name, images) for name, images in outputs.items() if name != "noisy")]


def level_details(level: LevelResult, summary: dict) -> str:
  """What the level's progress line says was done: models, baselines, margins."""
  model_seconds = sum(model.seconds for model in level.models.values())
  parts = [f"models {model_seconds:.1f} s" if level.models else "no model"]
  computed = [result for result in level.baselines.values() if not result.from_cache]
  cached = len(level.baselines) - len(computed)
  if computed:
    tune = sum(result.tune_seconds for result in computed)
    run = sum(result.denoise_seconds for result in computed)
    parts.append(f"{len(computed)} baselines computed (tuning {tune:.1f} s, denoising "
                 f"{run:.1f} s of worker time)")
  if cached:
    parts.append(f"{cached} baselines from the cache")
  margins = [f"{name} {margin['margin_db']:+.2f} dB vs {margin['best_baseline']}"
             for name, margin in summary["margin_over_best_baseline"].items() if margin]
  if margins:
    parts.append("margin " + ", ".join(margins))
  return "; ".join(parts)
