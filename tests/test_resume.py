"""Resuming a workdir honestly: the changed-settings guard (`validation.check_resumable`), the
checkpoints (`trainer.checkpoints`) and the run files (`trainer.run_files`) of an earlier run.

The kill -9 and SIGTERM loops are in test_recovery_slow.py.
"""

import json
import os

import pytest
import tensorflow as tf

from configs import test as test_config
from input_pipeline import data_source
from trainer import checkpoints
from trainer import errors
from trainer import train
from trainer import train_state
from trainer import validation
from trainer import workdir as workdir_lib
from trainer import run_files
from tests import helpers


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
  """A workdir trained for 8 steps with the test config: (workdir, config)."""
  workdir = str(tmp_path_factory.mktemp("short") / "workdir")
  config = test_config.get_config()
  config.train.max_steps = 8
  train.train_and_evaluate(config, workdir)
  return workdir, config


@pytest.mark.parametrize("change, message", [
    (lambda c: setattr(c.train, "learning_rate", 0.01),
     "other settings \\(train.learning_rate=0.001 -> 0.01\\).*--allow_config_change"),
    (lambda c: setattr(c.noise, "factor", 0.5), "noise.factor=0.4 -> 0.5"),
    (lambda c: setattr(c, "seed", 3), "seed=0 -> 3"),
    (lambda c: setattr(c.train, "batch_size", 32),
     "other train.batch_size=64 -> 32; its checkpoints cannot be resumed"),
    (lambda c: setattr(c.model, "latent_dim", 32), "other model.latent_dim=64 -> 32"),
    (lambda c: setattr(c, "train_split", "train[:1024]"), "other train_split="),
])
def test_a_rerun_with_changed_settings_is_refused_naming_them(short_run, tmp_path, change,
                                                             message):
  workdir = helpers.copy_workdir(short_run[0], tmp_path)
  before = helpers.snapshot(workdir)
  config = test_config.get_config()
  change(config)
  with pytest.raises(errors.ConfigError, match=message) as error:
    train.train_and_evaluate(config, workdir)
  assert "\n" not in str(error.value)
  assert helpers.snapshot(workdir) == before


def test_model_and_batch_changes_are_refused_even_with_the_opt_in(short_run):
  config = test_config.get_config()
  config.train.batch_size = 32
  with pytest.raises(errors.ConfigError, match="train.batch_size=64 -> 32"):
    train.train_and_evaluate(config, short_run[0], allow_config_change=True)


def test_settings_that_cannot_change_the_result_need_no_opt_in(short_run):
  earlier = run_files.read_config(short_run[0])
  config = test_config.get_config()
  config.train.num_epochs = 5
  config.train.checkpoints_to_keep = 1
  config.train.steps_per_loop = 4
  config.runtime.jit_compile = True
  changes = validation.check_resumable(config, earlier)
  assert changes == ["runtime.jit_compile=False -> True", "train.checkpoints_to_keep=3 -> 1",
                     "train.max_steps=8 -> 0", "train.num_epochs=1 -> 5",
                     "train.steps_per_loop=8 -> 4"]


@pytest.mark.slow  # Two runs or a trainer process: CI runs it in make test-slow.
def test_with_the_opt_in_the_new_learning_rate_takes_effect_and_is_recorded(short_run, tmp_path):
  workdir = helpers.copy_workdir(short_run[0], tmp_path)
  config = test_config.get_config()
  config.train.max_steps = 16
  config.train.learning_rate = 0.01
  train.train_and_evaluate(config, workdir, allow_config_change=True)
  stretches = json.loads((tmp_path / "workdir" / "config_history.json").read_text())
  assert [stretch["from_step"] for stretch in stretches] == [0, 8]
  assert "train.learning_rate=0.001 -> 0.01" in stretches[1]["changes"]
  assert stretches[1]["config"]["train"]["learning_rate"] == 0.01
  # After a restore, the optimizer's learning rate is the config's, not the checkpoint's.
  data = data_source.create_data_source(config)
  state = train_state.create_train_state(
      config, data, workdir_lib.resolve(workdir, environ={}).checkpoints,
      tf.distribute.get_strategy(), train.total_steps(config, data))
  assert state.step == 16
  assert float(state.optimizer.learning_rate) == pytest.approx(0.01)


def test_lowering_num_epochs_below_the_trained_steps_is_refused(short_run, tmp_path):
  workdir = helpers.copy_workdir(short_run[0], tmp_path)
  config = test_config.get_config()
  config.train.max_steps = 4
  with pytest.raises(errors.ConfigError, match="ends at step 4, but .* is already "
                                                   "trained to step 8"):
    train.train_and_evaluate(config, workdir)


@pytest.mark.slow  # Two runs or a trainer process: CI runs it in make test-slow.
def test_a_truncated_latest_checkpoint_falls_back_to_the_one_before(short_run, tmp_path, caplog):
  workdir = helpers.copy_workdir(short_run[0], tmp_path)
  config = test_config.get_config()
  config.train.max_steps = 16
  train.train_and_evaluate(config, workdir)
  helpers.truncate(os.path.join(workdir, "checkpoints", "ckpt-16.data-00000-of-00001"), 100)
  config.train.max_steps = 24
  train.train_and_evaluate(config, workdir)
  assert any("ckpt-16 is unreadable" in record.getMessage() for record in caplog.records)
  history = run_files.load_history(workdir)
  # Resumed at step 8: the entry of the lost step 16 is dropped, 9..24 are one stretch.
  assert [entry["step"] for entry in history] == [8, 24]
  assert os.path.exists(os.path.join(workdir, "checkpoints", "ckpt-24.index"))


@pytest.mark.parametrize("damage", [
    pytest.param(lambda text: "x" + text, id="garbled"),  # Not a CheckpointState text proto.
    # Empty: get_checkpoint_state raises ValueError. The same fallback: CI runs it in test-slow.
    pytest.param(lambda text: "", id="empty", marks=pytest.mark.slow),
])
def test_a_damaged_checkpoint_state_file_resumes_from_the_checkpoint_files(
    short_run, tmp_path, caplog, damage):
  workdir = helpers.copy_workdir(short_run[0], tmp_path)
  state_path = os.path.join(workdir, "checkpoints", "checkpoint")
  with open(state_path) as file:
    text = file.read()
  with open(state_path, "w") as file:
    file.write(damage(text))
  kept = os.stat(os.path.join(workdir, "checkpoints", "ckpt-8.index")).st_mtime_ns
  config = test_config.get_config()
  config.train.max_steps = 16
  train.train_and_evaluate(config, workdir)
  assert any("rewriting it from the files" in record.getMessage() for record in caplog.records)
  # Resumed at step 8 (not retrained from 0 over ckpt-8), and the manager knows both.
  assert [entry["step"] for entry in run_files.load_history(workdir)] == [8, 16]
  assert os.stat(os.path.join(workdir, "checkpoints", "ckpt-8.index")).st_mtime_ns == kept
  state = tf.train.get_checkpoint_state(os.path.join(workdir, "checkpoints"))
  assert [os.path.basename(path) for path in state.all_model_checkpoint_paths] == [
      "ckpt-8", "ckpt-16"]


def test_the_checkpoint_manager_keeps_counting_after_a_repaired_state_file(short_run, tmp_path):
  workdir = helpers.copy_workdir(short_run[0], tmp_path)
  directory = os.path.join(workdir, "checkpoints")
  os.remove(os.path.join(directory, "checkpoint"))
  checkpoint = tf.train.Checkpoint(step=tf.Variable(0, dtype=tf.int64))
  checkpointer = checkpoints.Checkpointer(checkpoint, directory, is_chief=True, max_to_keep=2,
                                          task_name="chief")
  for number in (9, 10):
    checkpointer.save(number)
  # max_to_keep=2 counts the pre-existing ckpt-8: it is deleted, not forgotten.
  assert [os.path.basename(path) for path in checkpoints.find_checkpoints(directory)] == [
      "ckpt-9", "ckpt-10"]


def test_no_readable_checkpoint_is_one_line_naming_the_fix(short_run, tmp_path):
  workdir = helpers.copy_workdir(short_run[0], tmp_path)
  helpers.truncate(os.path.join(workdir, "checkpoints", "ckpt-8.data-00000-of-00001"), 100)
  with pytest.raises(errors.ConfigError, match="no readable checkpoint in .*ckpt-8.*; "
                                                   "delete that directory"):
    train.train_and_evaluate(test_config.get_config(), workdir)


@pytest.mark.slow  # Two runs or a trainer process: CI runs it in make test-slow.
def test_stale_temporaries_are_removed_on_start(short_run, tmp_path):
  workdir = helpers.copy_workdir(short_run[0], tmp_path)
  stale = [os.path.join(workdir, "history.json.tmp"),
           os.path.join(workdir, "plots", "loss.png.tmp"),
           os.path.join(workdir, "checkpoints", "ckpt-9_temp", "part-00000")]
  for path in stale:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "w").close()
  config = test_config.get_config()
  config.train.max_steps = 8
  train.train_and_evaluate(config, workdir)
  assert not any(os.path.exists(path) for path in stale)
  assert not os.path.exists(os.path.join(workdir, "checkpoints", "ckpt-9_temp"))


_NO_CONFIG = "is missing, empty or not a JSON object.*--allow_config_change"


@pytest.mark.parametrize("config_text, history_text, message", [
    (None, None, _NO_CONFIG),
    ("{}", None, _NO_CONFIG),
    ("[1, 2]", "[]", _NO_CONFIG),
    ('"a string"', '{"config": 1}', _NO_CONFIG),
    # config_history.json's last stretch stands in: the guard still names the change.
    (None, "keep", "other settings \\(train.learning_rate=0.001 -> 0.01\\)"),
    ("{}", "keep", "other settings \\(train.learning_rate=0.001 -> 0.01\\)"),
])
def test_checkpoints_without_a_usable_config_json_keep_the_changed_settings_guard(
    short_run, tmp_path, config_text, history_text, message):
  workdir = helpers.copy_workdir(short_run[0], tmp_path)
  for name, text in (("config.json", config_text), ("config_history.json", history_text)):
    path = os.path.join(workdir, name)
    if text is None:
      os.remove(path)
    elif text != "keep":
      with open(path, "w") as file:
        file.write(text)
  before = helpers.snapshot(workdir)
  config = test_config.get_config()
  config.train.learning_rate = 0.01
  with pytest.raises(errors.ConfigError, match=message) as error:
    train.train_and_evaluate(config, workdir)
  assert "\n" not in str(error.value)
  assert helpers.snapshot(workdir) == before


@pytest.mark.slow  # Two runs or a trainer process: CI runs it in make test-slow.
def test_with_the_opt_in_checkpoints_without_a_config_resume_and_record_it(short_run,
                                                                           tmp_path):
  workdir = helpers.copy_workdir(short_run[0], tmp_path)
  os.remove(os.path.join(workdir, "config.json"))
  os.remove(os.path.join(workdir, "config_history.json"))
  config = test_config.get_config()
  config.train.max_steps = 16
  train.train_and_evaluate(config, workdir, allow_config_change=True)
  assert [entry["step"] for entry in run_files.load_history(workdir)] == [8, 16]
  assert run_files.read_config(workdir)["train"]["max_steps"] == 16


def test_a_corrupt_history_is_one_line_and_nothing_is_rewritten(short_run, tmp_path):
  workdir = helpers.copy_workdir(short_run[0], tmp_path)
  with open(os.path.join(workdir, "history.json"), "r+") as file:
    file.truncate(20)
  before = helpers.snapshot(workdir)
  config = test_config.get_config()
  with pytest.raises(errors.CorruptFileError, match="history.json is corrupt"):
    train.train_and_evaluate(config, workdir)
  assert helpers.snapshot(workdir) == before


@pytest.mark.parametrize("history_text", [
    '{"step": 8}',  # An object, not a list.
    "[1, 2]",
    '[{"epoch": 1, "step": "8", "train_loss": 0.1}]',  # A string step.
    '[{"epoch": 1, "step": 8, "train_loss": "low"}]',  # A non-number loss.
])
def test_a_history_of_the_wrong_type_is_one_line_and_nothing_is_rewritten(
    short_run, tmp_path, history_text):
  workdir = helpers.copy_workdir(short_run[0], tmp_path)
  with open(os.path.join(workdir, "history.json"), "w") as file:
    file.write(history_text)
  before = helpers.snapshot(workdir)
  with pytest.raises(errors.CorruptFileError,
                     match="history.json is not a list of epoch entries") as error:
    train.train_and_evaluate(test_config.get_config(), workdir)
  assert "\n" not in str(error.value)
  assert helpers.snapshot(workdir) == before


def test_metrics_json_is_written_after_the_saved_model(short_run):
  workdir = short_run[0]
  saved_model = max(os.stat(os.path.join(parent, name)).st_mtime_ns
                    for parent, _, names in os.walk(os.path.join(workdir, "saved_model"))
                    for name in names)
  assert os.stat(os.path.join(workdir, "metrics.json")).st_mtime_ns >= saved_model
