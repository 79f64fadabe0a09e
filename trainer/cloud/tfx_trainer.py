"""TFX Trainer entry point: `run_fn(fn_args)`, the contract of TFX's Trainer component.

    from tfx import v1 as tfx
    trainer = tfx.components.Trainer(
        module_file="trainer/cloud/tfx_trainer.py",   # or run_fn="trainer.cloud.tfx_trainer.run_fn"
        examples=example_gen.outputs["examples"],
        train_args=tfx.proto.TrainArgs(num_steps=2000),
        eval_args=tfx.proto.EvalArgs(num_steps=0),
        custom_config={"config": "conv", "overrides": {"noise.factor": 0.3}})

What `run_fn` reads from `fn_args` (tfx 1.21's FnArgs):
- `custom_config`: `{"config": NAME, "overrides": {"train.learning_rate": 3e-4, ...}}`;
  NAME is a module of `configs/` (default, conv, tpu, test; "default" if absent),
  the overrides are dotted field names as on the command line.
- `hyperparameters`: a keras_tuner `HyperParameters` config (from a Tuner); the
  values it holds, named by dotted config fields, are applied after the overrides.
- `train_steps`: training stops after this many global steps (`train.max_steps`);
  None: `train.num_epochs` decides.
- `model_run_dir`: the run's workdir (config.json, checkpoints, TensorBoard
  events, history.json, metrics.json, plots/).
- `serving_model_dir`: where the SavedModel is written.

What it does not read: `train_files`, `eval_files`, `data_accessor`,
`schema_path` and `transform_graph_path` (the images come from the TFDS
dataset named by the config's `dataset` and `data_dir`, as in every other run;
the ExampleGen input only wires the component into the pipeline), `eval_steps`
(every evaluation covers the whole eval split), `eval_model_dir`, `base_model`
and `working_dir`.
"""

import importlib

from absl import logging
import ml_collections

from trainer import config_lib
from trainer import errors
from trainer import train
from trainer import workdir as workdir_lib

DEFAULT_CONFIG_NAME = "default"


def _hyperparameter_values(hyperparameters) -> dict:
  """The values of a keras_tuner HyperParameters config (a dict) or object; {} for None."""
  if hyperparameters is None:
    return {}
  if isinstance(hyperparameters, dict):
    return dict(hyperparameters.get("values", {}))
  return dict(hyperparameters.values)


def config_from_fn_args(fn_args) -> ml_collections.ConfigDict:
  """The training config that `fn_args` describes (see the module docstring)."""
  custom_config = dict(fn_args.custom_config or {})
  name = custom_config.get("config", DEFAULT_CONFIG_NAME)
  try:
    config = importlib.import_module(f"configs.{name}").get_config()
  except ModuleNotFoundError as error:
    raise errors.ConfigError(
        f"TFX run_fn: custom_config['config']={name!r} is not a module of configs/ "
        "(e.g. 'default', 'conv', 'tpu').") from error
  for dotted_name, value in {**custom_config.get("overrides", {}),
                             **_hyperparameter_values(fn_args.hyperparameters)}.items():
    config_lib.set_field(config, dotted_name, value, source="TFX run_fn")
  if fn_args.train_steps:
    config_lib.set_field(config, "train.max_steps", int(fn_args.train_steps), source="TFX run_fn")
  return config


def run_fn(fn_args) -> None:
  """Trains and exports the denoising autoencoder for TFX's Trainer component."""
  config = config_from_fn_args(fn_args)
  logging.info("TFX run_fn: training into %s, SavedModel to %s.", fn_args.model_run_dir,
               fn_args.serving_model_dir)
  dirs = workdir_lib.resolve(fn_args.model_run_dir, environ={},
                             saved_model=fn_args.serving_model_dir)
  train.train_and_evaluate(config, fn_args.model_run_dir, dirs)
