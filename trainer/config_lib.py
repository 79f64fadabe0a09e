"""Helpers over ml_collections configs shared by validation and summaries (no TensorFlow here)."""

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
