"""Helpers over ml_collections configs shared by validation, summaries and the pipelines (no TensorFlow here)."""

import ml_collections

from trainer import errors


def flatten_config(config: ml_collections.ConfigDict | dict, prefix: str = "") -> dict:
  """{"train.num_epochs": 50, ...}: every leaf field under its dotted name (configs or dicts)."""
  flat = {}
  for key, value in config.items():
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      flat.update(flatten_config(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def set_field(config: ml_collections.ConfigDict, dotted_name: str, value,
              source: str = "an override") -> None:
  """Sets the field `dotted_name` ("train.learning_rate") of `config` to `value`.

  Raises:
    errors.ConfigError: no such field, or a value of the wrong type; the
      message names `source` (where the override came from).
  """
  *sections, field = dotted_name.split(".")
  try:
    node = config
    for section in sections:
      node = node[section]
    node[field] = value
  except (AttributeError, KeyError, TypeError) as error:
    raise errors.ConfigError(
        f"{source}: cannot set config field {dotted_name!r} to {value!r} ({error}); use the "
        "dotted names of configs/default.py, e.g. train.learning_rate.") from error
