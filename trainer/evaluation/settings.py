"""The evaluate config's checks: which baselines and noise levels, and their bounds.

Everything here runs before any model or data is loaded, so a bad value costs
nothing; each failure is an `errors.EvaluationError` naming the field and the fix.
"""

import math

import ml_collections

from input_pipeline import noise
from trainer import errors


def selected_baselines(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """`config.baselines` as names, in order, without duplicates.

  Items may hold several comma-separated names, as `--config.baselines=noisy,median`
  gives a one-item tuple "noisy,median".
  """
  names = [name.strip() for item in config.baselines for name in str(item).split(",")]
  return tuple(dict.fromkeys(name for name in names if name))


def noise_levels(config: ml_collections.ConfigDict) -> dict[str, tuple[float, ...]]:
  """{noise type: sorted levels} to evaluate, the reference level included; empty types dropped.

  Assumes `validate_config` passed: types outside noise.NOISE_TYPES are not returned.
  """
  levels = {noise_type: {float(level) for level in config.levels[noise_type]}
            for noise_type in config.levels}
  levels.setdefault(config.reference.type, set()).add(float(config.reference.level))
  # In NOISE_TYPES order (a ConfigDict iterates its keys sorted).
  return {noise_type: tuple(sorted(levels[noise_type])) for noise_type in noise.NOISE_TYPES
          if levels.get(noise_type)}


def _check_level(noise_type: str, level, field: str) -> None:
  if not isinstance(level, (int, float)) or isinstance(level, bool):
    raise errors.EvaluationError(f"{field} holds {level!r}, not a number; set --config.{field}=... "
                                 "with numbers, e.g. 0.1,0.4.")
  fraction = noise_type in noise.FRACTION_NOISE_TYPES
  if not math.isfinite(level) or level < 0 or (fraction and level > 1):
    valid = "fractions of pixels in [0, 1]" if fraction else "standard deviations >= 0"
    raise errors.EvaluationError(
        f"{field} holds {level!r}, not a valid {noise_type} level: {noise_type} levels are "
        f"{valid}; set --config.{field}=... accordingly.")


def _check_count(config: ml_collections.ConfigDict, field: str, minimum: int) -> None:
  value = config
  for part in field.split("."):
    value = value[part]
  if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
    raise errors.EvaluationError(f"{field}={value!r} must be an integer >= {minimum} "
                                 f"(set --config.{field}=...).")


def validate_config(config: ml_collections.ConfigDict, baseline_names) -> None:
  """Raises errors.EvaluationError naming the bad field and the fix; reads no data.

  `baseline_names`: the registry's baselines, which `config.baselines` picks from.
  """
  for noise_type in config.levels:
    if noise_type not in noise.NOISE_TYPES:
      raise errors.EvaluationError(
          f"levels.{noise_type}: unknown noise type {noise_type!r}; valid types are "
          f"{', '.join(noise.NOISE_TYPES)}.")
    for level in config.levels[noise_type]:
      _check_level(noise_type, level, f"levels.{noise_type}")
  if config.reference.type not in noise.NOISE_TYPES:
    raise errors.EvaluationError(
        f"Unknown reference.type {config.reference.type!r}; valid types are "
        f"{', '.join(noise.NOISE_TYPES)} (set --config.reference.type=...).")
  _check_level(config.reference.type, config.reference.level, "reference.level")
  for name in selected_baselines(config):
    if name not in baseline_names:
      raise errors.EvaluationError(
          f"Unknown baseline {name!r} in baselines; valid baselines are "
          f"{', '.join(baseline_names)} (e.g. --config.baselines=noisy,median).")
  for field in ("num_examples", "wiener_fit_examples", "representation.train_examples",
                "num_workers"):
    _check_count(config, field, 0)
  if not isinstance(config.use_cache, bool):
    raise errors.EvaluationError(f"use_cache={config.use_cache!r} must be true or false "
                                 "(--config.use_cache=false computes every baseline afresh).")
  if not isinstance(config.cache_dir, str) or "://" in config.cache_dir:
    raise errors.EvaluationError(f"cache_dir={config.cache_dir!r} must be a local directory, or '' for "
                                 "the default ~/.cache/dae-trainer/evaluation (set --config.cache_dir=...).")
  if "wiener" in selected_baselines(config) and not config.wiener_fit_examples:
    raise errors.EvaluationError("The wiener baseline is fitted on wiener_fit_examples training images, "
                                 "but wiener_fit_examples=0; set --config.wiener_fit_examples=5000 or "
                                 "leave wiener out of --config.baselines.")
  for field in ("batch_size", "slow_baseline_max_images", "tuning_examples",
                "num_images_to_show"):
    _check_count(config, field, 1)
  if "[" in config.train_split:
    raise errors.EvaluationError(
        f"train_split={config.train_split!r} must be a plain split name such as 'train', "
        "not a slice: its last examples are taken for tuning (set --config.train_split=...).")
