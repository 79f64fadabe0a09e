"""Helpers over ml_collections configs shared by validation, summaries and the pipelines (no TensorFlow here)."""

import ml_collections


def flatten_config(config: ml_collections.ConfigDict | dict, prefix: str = "") -> dict:
  """{"train.num_epochs": 50, ...}: every leaf field under its dotted name (configs or dicts)."""
  flat = {}
  for key, value in config.items():
    if isinstance(value, (ml_collections.ConfigDict, dict)):
      flat.update(flatten_config(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def set_field(config: ml_collections.ConfigDict, dotted_name: str, value) -> None:
  """Sets the field `dotted_name` ("train.learning_rate") of `config` to `value`.

  Raises AttributeError, KeyError or TypeError (from ml_collections) for a
  field that does not exist or a value of the wrong type: the caller names the
  source of the override in its message.
  """
  *sections, field = dotted_name.split(".")
  node = config
  for section in sections:
    node = node[section]
  node[field] = value
