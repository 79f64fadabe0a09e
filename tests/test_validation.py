"""Bad configs fail before any training starts, with one line naming the value and the fix."""

import importlib
import json
import os
import pathlib
import subprocess
import sys
import time

import ml_collections
import pytest

from input_pipeline import data_source
from trainer import errors
from trainer import models
from trainer import strategy as strategy_lib
from trainer import train
from trainer import validation
from tests import helpers
from tests.helpers import REPO_ROOT



@pytest.mark.parametrize("overrides, message", [
    ({"noise.factor": -0.1}, "noise.factor=-0.1 is a negative standard deviation"),
    ({"noise.type": "masking", "noise.factor": -0.5}, "noise.factor=-0.5 is not a fraction"),
    ({"noise.type": "salt_and_pepper", "noise.factor": 1.5}, "noise.factor=1.5 is not a fraction"),
    ({"noise.type": "speckle"}, "Unknown noise.type 'speckle'"),
    ({"model.type": "vae"}, "Unknown model.type 'vae'"),
    ({"runtime.strategy": "horovod"}, "Unknown runtime.strategy 'horovod'; valid strategies "
                                      "are default, mirrored, multi_worker_mirrored, tpu"),
    ({"train.loss": "hinge"}, "Unknown train.loss 'hinge'"),
    ({"train.batch_size": 0}, "train.batch_size=0 must be > 0"),
    ({"train.num_epochs": -1}, "train.num_epochs=-1 must be > 0"),
    ({"train.learning_rate": float("inf")}, "train.learning_rate=inf must be a finite number"),
    ({"train.learning_rate": float("nan")}, "train.learning_rate=nan must be > 0"),
    ({"train.learning_rate": -0.001}, "train.learning_rate=-0.001 must be > 0"),
    ({"train.stop_at_eval_psnr": -1.0}, r"train.stop_at_eval_psnr=-1.0 must be a number of dB >= 0"),
    ({"train.stop_at_eval_psnr": float("nan")}, r"train.stop_at_eval_psnr=nan must be"),
])
def test_bad_config_is_rejected(config, overrides, message):
  for key, value in overrides.items():
    section, _, field = key.rpartition(".")
    (config[section] if section else config)[field] = value
  with pytest.raises(errors.ConfigError, match=message):
    validation.validate_config(config)


@pytest.mark.parametrize("overrides, message", [
    ({"dataset": "not_a_dataset"}, "Unknown TFDS dataset 'not_a_dataset'"),
    ({"dataset": "cifar10"}, r"images of shape \(32, 32, 3\)"),
    ({"train_split": "train[:10]"}, "has 10 examples, fewer than one batch of "
                                    "train.batch_size=64"),
    ({"eval_split": "validation"}, "eval_split='validation' is not a split"),
])
def test_bad_data_is_rejected_when_the_data_source_is_created(config, overrides, message):
  for key, value in overrides.items():
    config[key] = value
  validation.validate_config(config)  # Cheap checks pass: the data is checked once, here.
  with pytest.raises(ValueError, match=message):
    data_source.create_data_source(config)


def test_unknown_key_is_rejected(config):
  unlocked = ml_collections.ConfigDict(config.to_dict())
  unlocked.train.num_epoch = 3
  with pytest.raises(errors.ConfigError, match="Unknown config key.*train.num_epoch"):
    validation.validate_config(unlocked)


def test_locked_config_refuses_misspelled_fields(config):
  with pytest.raises(AttributeError, match="num_epochs"):
    config.train.num_epoch = 3


def test_batch_size_must_split_over_replicas(config):
  config.train.batch_size = 63
  with pytest.raises(errors.ConfigError, match="train.batch_size=63 is not divisible by "
                                                   "the 2 replicas"):
    validation.validate_batch_sizes(config, 2)
  validation.validate_batch_sizes(config, 1)


def _run_main(workdir, *flags):
  return helpers.run_trainer(workdir, "--config=configs/test.py", *flags)


@pytest.mark.parametrize("flags, message", [
    (["--config.train.num_epoch=3"],
     'dae-trainer: unknown config key in a --config.* override: num_epoch. '
     'Did you mean "num_epochs"'),
    # A trainer process each: CI runs the others in make test-slow.
    # The tuple parsed into names, and the field to fix named (not noise.type).
    pytest.param(["--config.noise.mixture_types=(bogus,)"],
                 "dae-trainer: Unknown noise.mixture_types entry 'bogus'; valid types are "
                 "gaussian, salt_and_pepper, masking (set e.g. "
                 "--config.noise.mixture_types='(gaussian,masking)'", marks=pytest.mark.slow),
    pytest.param(["--config.noise.type=masking", "--config.noise.factor=1.5"],
                 "dae-trainer: noise.factor=1.5 is not a fraction of pixels", marks=pytest.mark.slow),
    pytest.param(["--config.runtime.strategy=mirrored", "--config.runtime.num_cpu_devices=2",
                  "--config.runtime.devices=CPU:0,CPU:1", "--config.train.batch_size=63"],
                 "dae-trainer: train.batch_size=63 is not divisible by the 2 replicas",
                 marks=pytest.mark.slow),
    pytest.param(["--config.runtime.strategy=tpu"],
                 "dae-trainer: runtime.strategy=tpu: no TPU found at 'local'", marks=pytest.mark.slow),
    # This machine has no network: the bucket is unreachable (its GCS client could retry
    # for minutes; the check has its own deadline).
    pytest.param(["--workdir=gs://no-such-bucket-dae/x"],
                 "dae-trainer: --workdir=gs://no-such-bucket-dae/x cannot be reached (",
                 marks=pytest.mark.slow),
    pytest.param(["--config.data_dir=gs://no-such-bucket-dae/tfds"],
                 "dae-trainer: --config.data_dir=gs://no-such-bucket-dae/tfds cannot be reached (",
                 marks=pytest.mark.slow),
])
def test_main_fails_with_one_line_before_writing_anything(tmp_path, flags, message):
  workdir = tmp_path / "workdir"
  start = time.time()
  result = _run_main(workdir, *flags)
  assert time.time() - start < 30
  assert result.returncode != 0
  last_line = result.stderr.strip().splitlines()[-1]
  assert last_line.startswith(message), result.stderr[-2000:]
  assert "Traceback" not in result.stderr
  assert not workdir.exists()


@pytest.mark.slow  # A benchmark process each.
@pytest.mark.parametrize("flags, message", [
    (["--config=configs/missing.py"],
     "dae-trainer: cannot load the config file configs/missing.py (OSError"),
    (["--config=configs/test.py", "--config.train.num_epoch=3"],
     "dae-trainer: unknown config key in a --config.* override: num_epoch."),
    (["--config=configs/test.py", "--config.train.batch_size=0"],
     "dae-trainer: train.batch_size=0 must be > 0"),
])
def test_the_benchmark_fails_with_one_line_on_a_bad_config(flags, message):
  result = subprocess.run([sys.executable, "scripts/benchmark.py", *flags], cwd=REPO_ROOT,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith(message), result.stderr[-2000:]


def test_resuming_a_workdir_with_another_model_is_rejected(config):
  earlier = json.loads(json.dumps(config.to_dict()))
  validation.check_resumable(config, None)
  validation.check_resumable(config, earlier)
  config.train.num_epochs = 5  # Training longer is what resuming is for.
  validation.check_resumable(config, earlier)
  config.model.latent_dim = 32
  with pytest.raises(errors.ConfigError, match=r"model.latent_dim=64 -> 32"):
    validation.check_resumable(config, earlier)


def test_get_strategy_rejects_unknown_names_listing_valid_ones(config):
  config.runtime.strategy = "parameter_server"
  with pytest.raises(ValueError, match="'parameter_server'; valid strategies are default, "
                                       "mirrored, multi_worker_mirrored, tpu"):
    strategy_lib.get_strategy(config.runtime)


def test_get_strategy_default_is_one_replica(config):
  assert strategy_lib.get_strategy(config.runtime).num_replicas_in_sync == 1


def test_with_a_cosine_schedule_training_longer_changes_the_result(config):
  config.train.learning_rate_schedule = "cosine"
  earlier = json.loads(json.dumps(config.to_dict()))
  config.train.num_epochs = 5
  with pytest.raises(errors.ConfigError, match=r"train.num_epochs=1 -> 5"):
    validation.check_resumable(config, earlier)
  assert validation.check_resumable(config, earlier, allow_changes=True) == [
      "train.num_epochs=1 -> 5"]


@pytest.mark.parametrize("given", [("(gaussian,masking)",), ("gaussian, masking",),
                                   ("('gaussian', 'masking')",), ("gaussian", "masking")])
def test_mixture_types_from_a_command_line_become_a_tuple_of_names(config, given):
  # ml_collections hands an unquoted `--config.noise.mixture_types=(gaussian,masking)`
  # over as the one string '(gaussian,masking)'.
  config.noise.mixture_types = given
  validation.validate_config(config)
  assert config.noise.mixture_types == ("gaussian", "masking")


def test_a_profile_window_beyond_the_run_writes_nothing_not_even_the_lock(config, tmp_path):
  config.runtime.profile_steps = (1000, 2000)  # configs/test.py runs 32 steps.
  with pytest.raises(errors.ConfigError, match="runtime.profile_steps=.* ends after the run's "
                                               "last step 31"):
    train.train_and_evaluate(config, str(tmp_path / "workdir"))
  assert not (tmp_path / "workdir").exists()


@pytest.mark.parametrize("name", sorted(
    path.stem for path in (pathlib.Path(REPO_ROOT) / "configs").glob("*.py")
    if path.stem not in ("__init__", "evaluate")))  # evaluate.py configures trainer.evaluate.
def test_every_config_validates_and_builds_its_model(name):
  config = importlib.import_module(f"configs.{name}").get_config()
  validation.validate_config(config)
  model = models.create_model(config.model, (28, 28, 1), config.seed, config.runtime.dtype_policy)
  assert model.output_shape == (None, 28, 28, 1)
  if name == "unet_s2d":  # The parameter count its docstring gives.
    assert model.count_params() == 228_148
