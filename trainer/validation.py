"""Checks a config before any work starts: every error names the bad value and the fix."""

import json

import ml_collections

from configs import default
from input_pipeline import noise
from trainer import config_lib
from trainer import metrics
from trainer import models
from trainer import strategy as strategy_lib


class ConfigError(ValueError):
  """The config cannot train; the message names the bad value and the fix."""


def _check_keys(config: ml_collections.ConfigDict) -> None:
  """Rejects fields that the trainer would silently ignore, or lacks."""
  expected = set(config_lib.flatten_config(default.get_config()))
  actual = set(config_lib.flatten_config(config))
  unknown = sorted(actual - expected)
  if unknown:
    raise ConfigError(
        f"Unknown config key(s) {', '.join(unknown)}; valid keys are those of "
        "configs/default.py (check the spelling).")
  missing = sorted(expected - actual)
  if missing:
    raise ConfigError(
        f"Config lacks key(s) {', '.join(missing)}; build configs from "
        "configs.default.get_config() and change fields instead.")


def _check_positive(config: ml_collections.ConfigDict, names: tuple[str, ...]) -> None:
  for name in names:
    section, field = name.split(".")
    value = config[section][field]
    if not value > 0:
      raise ValueError(f"{name}={value} must be > 0 (set --config.{name}=...).")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError if `config` cannot train; cheap, reads no data.

  The dataset and its splits are checked when the run's data source is created
  (`data_source.create_data_source`), once.
  """
  try:
    _validate(config)
  except ConfigError:
    raise
  except ValueError as error:
    raise ConfigError(str(error)) from error


def _validate(config: ml_collections.ConfigDict) -> None:
  _check_keys(config)
  noise.validate_noise_config(config.noise)
  models.check_model_config(config.model)
  metrics.check_loss_name(config.train.loss)
  strategy_lib.check_strategy_name(config.runtime.strategy)
  _check_positive(config, (
      "train.num_epochs", "train.batch_size",
      "train.eval_batch_size", "train.learning_rate", "train.shuffle_buffer_size",
      "train.steps_per_loop", "train.checkpoints_to_keep", "train.num_images_to_show",
      "runtime.collective_timeout_seconds"))
  if config.train.max_steps < 0:
    raise ValueError(f"train.max_steps={config.train.max_steps} must be >= 0 "
                     "(0: train.num_epochs decides).")
  if not isinstance(config.runtime.jit_compile, bool):
    raise ValueError(f"runtime.jit_compile={config.runtime.jit_compile!r} must be True or False.")
  if config.runtime.num_cpu_devices < 0:
    raise ValueError(
        f"runtime.num_cpu_devices={config.runtime.num_cpu_devices} must be >= 0 "
        "(0 leaves the CPU as one device).")


def check_resumable(config: ml_collections.ConfigDict, previous: dict | None) -> None:
  """Raises ConfigError if a workdir's earlier run used another model: its checkpoints cannot load.

  Args:
    config: the config of this run.
    previous: the earlier run's config.json content, or None for a new workdir.
  """
  if previous is None:
    return
  current = json.loads(json.dumps(config.to_dict()))  # Tuples become lists, as in the file.
  earlier_model = previous.get("model", {})
  changes = [f"model.{key}={earlier_model.get(key)!r} -> {value!r}"
             for key, value in current["model"].items() if earlier_model.get(key) != value]
  if changes:
    raise ConfigError(
        f"The workdir holds a run of another model ({', '.join(changes)}); its checkpoints "
        "cannot be resumed. Use a new --workdir, or the earlier run's model settings.")


def validate_batch_sizes(config: ml_collections.ConfigDict, num_replicas: int) -> None:
  """Raises ConfigError unless the global batch sizes split evenly over the replicas."""
  for name in ("batch_size", "eval_batch_size"):
    value = config.train[name]
    if value % num_replicas:
      raise ConfigError(
          f"train.{name}={value} is not divisible by the {num_replicas} replicas; "
          f"use a multiple of {num_replicas} (e.g. --config.train.{name}="
          f"{max(num_replicas, value // num_replicas * num_replicas)}).")
