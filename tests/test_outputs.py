"""Where a run writes: Vertex AI's AIP_* directories, and TFX's run_fn contract."""

import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from trainer.cloud import tfx_trainer
from trainer import errors
from trainer import train
from trainer import workdir as workdir_lib


def _event_files(directory):
  return [name for name in os.listdir(directory) if name.startswith("events.out.tfevents")]


def test_resolve_defaults_to_the_workdir_and_honours_each_aip_variable():
  assert workdir_lib.resolve("/w", environ={}) == workdir_lib.OutputDirs(
      workdir="/w", checkpoints="/w/checkpoints", tensorboard="/w", saved_model="/w/saved_model")
  dirs = workdir_lib.resolve("/w", environ={"AIP_MODEL_DIR": "gs://b/model/",
                                            "AIP_CHECKPOINT_DIR": "gs://b/checkpoints/",
                                            "AIP_TENSORBOARD_LOG_DIR": "gs://b/logs/"})
  assert dirs == workdir_lib.OutputDirs(workdir="/w", checkpoints="gs://b/checkpoints/",
                                        tensorboard="gs://b/logs/", saved_model="gs://b/model/")
  assert workdir_lib.resolve("/w", environ={"AIP_MODEL_DIR": "/m"},
                             saved_model="/tfx").saved_model == "/tfx"


def test_with_aip_variables_each_output_lands_in_its_directory(config, tmp_path, monkeypatch):
  for variable, name in (("AIP_MODEL_DIR", "model"), ("AIP_CHECKPOINT_DIR", "checkpoints"),
                         ("AIP_TENSORBOARD_LOG_DIR", "logs")):
    monkeypatch.setenv(variable, str(tmp_path / "vertex" / name))
  workdir = tmp_path / "workdir"
  config.train.max_steps = 8
  train.train_and_evaluate(config, str(workdir))

  vertex = tmp_path / "vertex"
  assert (vertex / "model" / "saved_model.pb").exists()
  assert (vertex / "checkpoints" / "ckpt-8.index").exists()
  assert _event_files(vertex / "logs")
  assert _event_files(vertex / "logs" / "train") and _event_files(vertex / "logs" / "eval")
  # The workdir keeps the rest, and only the rest (trainer.lock: the chief's
  # one-writer lock, which stays with the workdir it guards).
  assert set(os.listdir(workdir)) == {"config.json", "config_history.json", "history.json",
                                      "metrics.json", "plots", "trainer.lock"}


@dataclasses.dataclass
class FnArgs:
  """tfx 1.21's FnArgs fields (tfx/components/trainer/fn_args_utils.py), exactly.

  tfx itself cannot be installed here (it needs ml-metadata 1.21, which has no
  build for this platform, and absl-py < 2), so the test passes this stand-in.
  """
  working_dir: str | None = None
  train_files: list[str] | None = None
  eval_files: list[str] | None = None
  train_steps: int | None = None
  eval_steps: int | None = None
  schema_path: str | None = None
  transform_graph_path: str | None = None
  data_accessor: object = None
  serving_model_dir: str | None = None
  eval_model_dir: str | None = None
  model_run_dir: str | None = None
  base_model: str | None = None
  hyperparameters: dict | None = None
  custom_config: dict | None = None


def test_run_fn_trains_train_steps_and_writes_a_serving_model(tmp_path, monkeypatch):
  monkeypatch.setenv("AIP_MODEL_DIR", str(tmp_path / "not_used"))  # TFX's dirs win.
  run_dir, serving_dir = tmp_path / "model_run", tmp_path / "serving_model"
  fn_args = FnArgs(
      working_dir=str(tmp_path / "working"), train_files=[str(tmp_path / "Split-train/*")],
      eval_files=[str(tmp_path / "Split-eval/*")], train_steps=10, eval_steps=5,
      serving_model_dir=str(serving_dir), model_run_dir=str(run_dir),
      hyperparameters={"space": [], "values": {"train.learning_rate": 0.002}},
      custom_config={"config": "test", "overrides": {"train.num_epochs": 3,
                                                      "model.latent_dim": 16}})
  tfx_trainer.run_fn(fn_args)

  history = json.loads((run_dir / "history.json").read_text())
  assert [entry["step"] for entry in history] == [10]  # train_steps, mid-epoch.
  assert (run_dir / "checkpoints" / "ckpt-10.index").exists()
  assert _event_files(run_dir / "train")
  saved_config = json.loads((run_dir / "config.json").read_text())
  assert saved_config["train"]["learning_rate"] == 0.002
  assert saved_config["model"]["latent_dim"] == 16
  assert not (run_dir / "saved_model").exists() and not (tmp_path / "not_used").exists()

  loaded = tf.saved_model.load(str(serving_dir))
  images = tf.random.stateless_uniform((3, 28, 28, 1), seed=[1, 2])
  denoised = loaded.signatures["serving_default"](images=images)["denoised"].numpy()
  assert denoised.shape == (3, 28, 28, 1) and np.all(np.isfinite(denoised))
  latent = loaded.signatures["encode"](images=images)["latent"]
  assert latent.shape == (3, 16)


@pytest.mark.parametrize("custom_config, message", [
    ({"config": "nonexistent"}, "custom_config\\['config'\\]='nonexistent' is not a module"),
    ({"config": "test", "overrides": {"train.num_epoch": 3}},
     "cannot set config field 'train.num_epoch'"),
])
def test_run_fn_rejects_bad_custom_config_in_one_line(tmp_path, custom_config, message):
  fn_args = FnArgs(model_run_dir=str(tmp_path / "run"), custom_config=custom_config,
                   serving_model_dir=str(tmp_path / "serving"))
  with pytest.raises(errors.ConfigError, match=message) as error:
    tfx_trainer.run_fn(fn_args)
  assert "\n" not in str(error.value)
  assert not (tmp_path / "run").exists()
