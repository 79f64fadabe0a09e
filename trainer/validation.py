"""Checks a config before any work starts: every error names the bad value and the fix."""

import json
import math

import ml_collections

from configs import default
from input_pipeline import data_service
from input_pipeline import noise
from trainer import config_lib
from trainer import errors
from trainer import metrics
from trainer import models
from trainer import optimizers
from trainer import portable_export
from trainer import profiling
from trainer import strategy as strategy_lib
from trainer.cloud import hypertune



def _check_keys(config: ml_collections.ConfigDict) -> None:
  """Rejects fields that the trainer would silently ignore, or lacks."""
  expected = set(config_lib.flatten_config(default.get_config()))
  actual = set(config_lib.flatten_config(config))
  unknown = sorted(actual - expected)
  if unknown:
    raise errors.ConfigError(
        f"Unknown config key(s) {', '.join(unknown)}; valid keys are those of "
        "configs/default.py (check the spelling).")
  missing = sorted(expected - actual)
  if missing:
    raise errors.ConfigError(
        f"Config lacks key(s) {', '.join(missing)}; build configs from "
        "configs.default.get_config() and change fields instead.")


def _check_positive(config: ml_collections.ConfigDict, names: tuple[str, ...]) -> None:
  for name in names:
    section, field = name.split(".")
    value = config[section][field]
    if not value > 0:
      raise errors.ConfigError(f"{name}={value} must be > 0 (set --config.{name}=...).")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises errors.ConfigError if `config` cannot train; cheap, reads no data.

  Also stores `noise.mixture_types` as a tuple of names (`noise.normalize_mixture_types`).

  The dataset and its splits are checked when the run's data source is created
  (`data_source.create_data_source`), once.
  """
  _check_keys(config)
  # Before anything reads it: a command line's '(a,b)' becomes the names a, b.
  noise.normalize_mixture_types(config.noise)
  noise.validate_noise_config(config.noise)
  models.check_model_config(config.model)
  metrics.check_loss_name(config.train.loss)
  optimizers.check_learning_rate_schedule(config.train.learning_rate_schedule)
  models.check_dtype_policy(config.runtime.dtype_policy)
  strategy_lib.check_strategy_name(config.runtime.strategy)
  _check_positive(config, (
      "train.num_epochs", "train.batch_size",
      "train.eval_batch_size", "train.learning_rate", "train.shuffle_buffer_size",
      "train.steps_per_loop", "train.checkpoints_to_keep", "train.num_images_to_show",
      "train.eval_every_epochs",
      "runtime.collective_timeout_seconds"))
  if not math.isfinite(config.train.learning_rate):
    # inf passes "> 0" but makes every weight non-finite after the first step.
    raise errors.ConfigError(f"train.learning_rate={config.train.learning_rate} must be a finite "
                             "number > 0 (e.g. --config.train.learning_rate=0.001).")
  if config.train.log_every_steps < 0:
    raise errors.ConfigError(f"train.log_every_steps={config.train.log_every_steps} must be >= 0 "
                             "(0: no step-level summaries or progress lines).")
  if not (math.isfinite(config.train.stop_at_eval_psnr) and config.train.stop_at_eval_psnr >= 0):
    raise errors.ConfigError(
        f"train.stop_at_eval_psnr={config.train.stop_at_eval_psnr} must be a number of dB >= 0 "
        "(0: train all of train.num_epochs), e.g. --config.train.stop_at_eval_psnr=23.0.")
  if config.train.max_steps < 0:
    raise errors.ConfigError(f"train.max_steps={config.train.max_steps} must be >= 0 "
                             "(0: train.num_epochs decides).")
  if not isinstance(config.runtime.jit_compile, bool):
    raise errors.ConfigError(f"runtime.jit_compile={config.runtime.jit_compile!r} must be True or False.")
  # Its end is checked against the run's length once the data is known (train.py).
  profiling.parse_profile_steps(config.runtime.profile_steps)
  hypertune.check_metric_name(config.runtime.hypertune_metric)
  portable_export.parse_formats(config.export.formats)
  data_service.check_timeout(config.input.data_service_timeout_seconds)
  if config.runtime.num_cpu_devices < 0:
    raise errors.ConfigError(
        f"runtime.num_cpu_devices={config.runtime.num_cpu_devices} must be >= 0 "
        "(0 leaves the CPU as one device).")


# Fields a resumed run may change without asking: how long, where and how fast
# it runs and what it logs. None changes what the model learns at a given step
# (runtime settings change float rounding at most).
_FREE_FIELDS = ("data_dir", "train.num_epochs", "train.max_steps", "train.checkpoints_to_keep",
                "train.num_images_to_show", "train.steps_per_loop", "train.eval_every_epochs",
                "train.log_every_steps", "train.stop_at_eval_psnr")
_FREE_PREFIXES = ("runtime.", "input.", "export.")
# Fields a resumed run can never change: which variables the checkpoint holds,
# and what its step counts (batches of one size, of one split).
_FIXED_FIELDS = ("dataset", "train_split", "train.batch_size",
                 # mixed_float16 wraps the optimizer (and its checkpointed state) in a
                 # loss-scale optimizer.
                 "runtime.dtype_policy")
_FIXED_PREFIXES = ("model.",)


def config_changes(previous: dict, config: ml_collections.ConfigDict) -> list[str]:
  """Fields that differ from an earlier run's config.json, as "name=old -> new".

  Fields the earlier run's config did not have yet are not counted.
  """
  earlier = config_lib.flatten_config(previous)
  current = config_lib.flatten_config(json.loads(json.dumps(config.to_dict())))
  return [f"{name}={earlier[name]!r} -> {value!r}" for name, value in sorted(current.items())
          if name in earlier and earlier[name] != value]


def _field(change: str) -> str:
  return change.split("=", 1)[0]


def check_resumable(config: ml_collections.ConfigDict, previous: dict | None,
                    allow_changes: bool = False) -> list[str]:
  """Checks a rerun's config against the workdir's earlier one; returns the changes to record.

  Args:
    config: the config of this run.
    previous: the earlier run's config.json content, or None for a new workdir.
    allow_changes: continue with changed fields that alter the result (the
      learning rate, noise, loss, seed, ...), which then take effect.

  Raises:
    errors.ConfigError: a field changed that a checkpoint cannot follow (the model,
      dataset, training split or batch size), or one that alters the result
      without `allow_changes`. The message names every such field.
  """
  if previous is None:
    return []
  changes = config_changes(previous, config)
  fixed = [change for change in changes if _field(change) in _FIXED_FIELDS
           or _field(change).startswith(_FIXED_PREFIXES)]
  if fixed:
    raise errors.ConfigError(
        f"The workdir holds a run with other {', '.join(fixed)}; its checkpoints cannot be "
        "resumed with these. Use a new --workdir, or the earlier run's values.")
  free_fields = _FREE_FIELDS
  if config.train.learning_rate_schedule != "constant":
    # The schedule spans the whole run: its length shapes every step's learning rate.
    free_fields = tuple(field for field in free_fields
                        if field not in ("train.num_epochs", "train.max_steps"))
  altering = [change for change in changes if _field(change) not in free_fields
              and not _field(change).startswith(_FREE_PREFIXES)]
  if altering and not allow_changes:
    raise errors.ConfigError(
        f"The workdir was trained with other settings ({', '.join(altering)}); continuing would "
        "mix them into one run. Pass --allow_config_change to continue with the new values "
        "(recorded in config_history.json), or use a new --workdir.")
  return changes


def validate_batch_sizes(config: ml_collections.ConfigDict, num_replicas: int) -> None:
  """Raises errors.ConfigError unless the global batch sizes split evenly over the replicas."""
  for name in ("batch_size", "eval_batch_size"):
    value = config.train[name]
    if value % num_replicas:
      raise errors.ConfigError(
          f"train.{name}={value} is not divisible by the {num_replicas} replicas; "
          f"use a multiple of {num_replicas} (e.g. --config.train.{name}="
          f"{max(num_replicas, value // num_replicas * num_replicas)}).")
