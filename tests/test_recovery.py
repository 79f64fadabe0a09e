"""Reliability, in process: honest resume, corrupt files, bad input in one line, nothing written early.

The subprocess checks (kill -9 loops, SIGTERM) are in test_recovery_slow.py.
"""

import errno
import json
import os
import re
import signal
import time
import shutil
import subprocess
import sys

import pytest
import tensorflow as tf

from configs import test as test_config
from input_pipeline import data_source
from input_pipeline import storage
from trainer import checkpoints
from trainer import cli
from trainer import errors
from trainer import steps as steps_lib
from trainer import train
from trainer import train_state
from trainer import validation
from trainer import workdir_lock
from trainer import fileio
from trainer import workdir as workdir_lib
from trainer import run_files
from tests import helpers
from tests.helpers import REPO_ROOT



def _snapshot(directory):
  """Every file under `directory` with its size and modification time."""
  found = {}
  for parent, _, files in os.walk(directory):
    for name in files:
      if parent == str(directory) and name == workdir_lib.LOCK_FILENAME:
        continue  # The lock's own file: each run writes its PID there, not a result.
      path = os.path.join(parent, name)
      found[os.path.relpath(path, directory)] = (os.path.getsize(path), os.stat(path).st_mtime_ns)
  return found


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
  """A workdir trained for 8 steps with the test config: (workdir, config)."""
  workdir = str(tmp_path_factory.mktemp("short") / "workdir")
  config = test_config.get_config()
  config.train.max_steps = 8
  train.train_and_evaluate(config, workdir)
  return workdir, config


def _copy(workdir, tmp_path):
  copy = str(tmp_path / "workdir")
  shutil.copytree(workdir, copy)
  return copy


def _bad_mnist_copy(tmp_path, damage):
  data_dir = tmp_path / "tfds"
  shutil.copytree(os.path.join(data_source.BUNDLED_DATA_DIR, "mnist"), data_dir / "mnist")
  damage(data_dir / "mnist" / "3.0.1")
  return str(data_dir)


def _truncate(path, size=100_000):
  with open(path, "r+b") as file:
    file.truncate(size)


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
  workdir = _copy(short_run[0], tmp_path)
  before = _snapshot(workdir)
  config = test_config.get_config()
  change(config)
  with pytest.raises(errors.ConfigError, match=message) as error:
    train.train_and_evaluate(config, workdir)
  assert "\n" not in str(error.value)
  assert _snapshot(workdir) == before


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
  workdir = _copy(short_run[0], tmp_path)
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
  workdir = _copy(short_run[0], tmp_path)
  config = test_config.get_config()
  config.train.max_steps = 4
  with pytest.raises(errors.ConfigError, match="ends at step 4, but .* is already "
                                                   "trained to step 8"):
    train.train_and_evaluate(config, workdir)


@pytest.mark.slow  # Two runs or a trainer process: CI runs it in make test-slow.
def test_a_truncated_latest_checkpoint_falls_back_to_the_one_before(short_run, tmp_path, caplog):
  workdir = _copy(short_run[0], tmp_path)
  config = test_config.get_config()
  config.train.max_steps = 16
  train.train_and_evaluate(config, workdir)
  _truncate(os.path.join(workdir, "checkpoints", "ckpt-16.data-00000-of-00001"), 100)
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
  workdir = _copy(short_run[0], tmp_path)
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
  workdir = _copy(short_run[0], tmp_path)
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
  workdir = _copy(short_run[0], tmp_path)
  _truncate(os.path.join(workdir, "checkpoints", "ckpt-8.data-00000-of-00001"), 100)
  with pytest.raises(errors.ConfigError, match="no readable checkpoint in .*ckpt-8.*; "
                                                   "delete that directory"):
    train.train_and_evaluate(test_config.get_config(), workdir)


@pytest.mark.slow  # Two runs or a trainer process: CI runs it in make test-slow.
def test_stale_temporaries_are_removed_on_start(short_run, tmp_path):
  workdir = _copy(short_run[0], tmp_path)
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


def test_a_chunk_passes_the_stop_request_in_and_returns_the_answer():
  calls = []

  def fake_train_steps(iterator, num_steps, stop_requested):
    del iterator
    calls.append((int(num_steps), float(stop_requested)))
    return {"loss": tf.constant(0.5), "psnr": tf.constant(10.0), "stop": stop_requested}

  chunk = steps_lib.run_chunk(fake_train_steps, None, first_step=0, num_steps=8, epoch=0,
                              stop_requested=True)
  assert calls == [(8, 1.0)] and chunk == {"loss": 0.5, "psnr": 10.0, "stop": 1.0}
  chunk = steps_lib.run_chunk(fake_train_steps, None, first_step=8, num_steps=4, epoch=0,
                              stop_requested=False)
  assert calls[-1] == (4, 0.0) and chunk["stop"] == 0.0


def test_non_finite_values_never_reach_a_json_file(tmp_path):
  path = str(tmp_path / "metrics.json")
  fileio.write_json(path, {"psnr": float("inf"), "loss": float("nan"), "ok": [1.5, float("-inf")]})
  assert json.loads((tmp_path / "metrics.json").read_text()) == {
      "psnr": None, "loss": None, "ok": [1.5, None]}
  assert "Infinity" not in (tmp_path / "metrics.json").read_text()


def _corrupt_tfds(what):
  def damage(version_dir):
    if what == "dataset_info":
      (version_dir / "dataset_info.json").write_text("garbage{")
    elif what == "not_tfrecord":
      (version_dir / "mnist-test.tfrecord-00000-of-00001").write_bytes(b"not a TFRecord" * 99)
    else:
      _truncate(version_dir / "mnist-train.tfrecord-00000-of-00001")
  return damage


def _listing(directory):
  """Every path under `directory` (files and directories), or None if it does not exist."""
  if not os.path.exists(directory):
    return None
  return sorted(os.path.relpath(os.path.join(parent, name), directory)
                for parent, subdirectories, files in os.walk(directory)
                for name in subdirectories + files)


def _workdir_with(kind, relative_path):
  """A setup: a workdir holding a file or a directory at `relative_path`; returns its path."""
  def setup(config, tmp_path):
    del config
    path = tmp_path / "workdir" / relative_path
    if kind == "dir":
      path.mkdir(parents=True)
    else:
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_text("the user's file")
    return str(tmp_path / "workdir")
  return setup


def _long_workdir(component_bytes, depth=1):
  return lambda c, t: str(t.joinpath("workdir", *["a" * component_bytes] * depth))


@pytest.mark.parametrize("setup, message", [
    (lambda c, t: setattr(c, "eval_split", "nonexistent"),
     "eval_split='nonexistent' is not a split of TFDS dataset 'mnist'"),
    (lambda c, t: setattr(c.noise, "factor", float("inf")), "noise.factor=inf is not a finite"),
    (lambda c, t: setattr(c.noise, "factor", float("nan")), "noise.factor=nan is not a finite"),
    (lambda c, t: setattr(c, "data_dir", _bad_mnist_copy(t, _corrupt_tfds("dataset_info"))),
     "TFDS dataset 'mnist' in .* is unreadable \\(ParseError"),
    (lambda c, t: setattr(c, "data_dir", _bad_mnist_copy(t, _corrupt_tfds("not_tfrecord"))),
     "has a corrupt test file"),
    (lambda c, t: setattr(c, "data_dir", _bad_mnist_copy(t, _corrupt_tfds("truncated"))),
     "has a corrupt train file"),
    # A file where the run writes a directory, or the reverse: refused before any work,
    # also where it would show only after training (the first checkpoint, the final reports).
    (_workdir_with("file", "checkpoints"),
     "workdir/checkpoints is a file where the run writes a directory; move it away"),
    (_workdir_with("dir", "checkpoints/checkpoint"),
     "checkpoints/checkpoint is a directory where the run writes a file; move it away"),
    (_workdir_with("dir", "checkpoints/ckpt-32.index"),
     "checkpoints/ckpt-32.index is a directory where the run writes a file"),
    (_workdir_with("dir", "metrics.json"), "workdir/metrics.json is a directory where the run "
                                           "writes a file"),
    (_workdir_with("dir", "history.json"), "workdir/history.json is a directory"),
    (_workdir_with("file", "plots"), "workdir/plots is a file where the run writes a directory"),
    (_workdir_with("file", "saved_model"), "workdir/saved_model is a file where the run writes"),
    (_workdir_with("dir", "trainer.lock"), "workdir/trainer.lock is a directory"),
    # Names too long to create: refused before os.makedirs leaves a partial tree.
    (_long_workdir(300), "has a name of 300 bytes .*allows 255 bytes per name: choose a shorter "
                         "--workdir"),
    (_long_workdir(250, depth=17), "bytes long \\(absolute\\).* 4096-byte limit: choose a "
                                   "--workdir of at most 3936 bytes"),
    (lambda c, t: "gs://bucket/" + "a" * 900, "Cloud Storage names are at most 1024 bytes"),
    # Non-local directories are tried before anything starts.
    (lambda c, t: "nosuchfs://bucket/workdir",
     "--workdir=nosuchfs://bucket/workdir: TensorFlow has no filesystem for nosuchfs://"),
    (lambda c, t: setattr(c, "data_dir", "nosuchfs://bucket/tfds"),
     "--config.data_dir=nosuchfs://bucket/tfds: TensorFlow has no filesystem for nosuchfs://"),
    (lambda c, t: setattr(c, "data_dir", f"ram://{t}/no/such/tfds"),
     "--config.data_dir=ram://.*/no/such/tfds does not exist; fix --config.data_dir"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, setup, message):
  config = test_config.get_config()
  workdir = setup(config, tmp_path) or str(tmp_path / "workdir")
  before = _listing(tmp_path)
  with pytest.raises(errors.UserError, match=message) as error:
    train.train_and_evaluate(config, workdir)
  assert "\n" not in str(error.value)
  assert _listing(tmp_path) == before


def _raises(error_type, text):
  def fail(*args, **kwargs):
    del args, kwargs
    raise error_type(None, None, text)
  return fail


@pytest.mark.parametrize("writable, patch, message", [
    (True, ("exists", _raises(tf.errors.PermissionDeniedError, "403 Forbidden")),
     "--workdir=gs://b/w cannot be written with this machine's credentials \\("
     "PermissionDeniedError: 403 Forbidden\\); log in with gcloud auth application-default "
     "login"),
    (False, ("exists", _raises(tf.errors.UnauthenticatedError, "401")),
     "cannot be read with this machine's credentials"),
    (True, ("GFile", _raises(tf.errors.NotFoundError, "404 bucket b not found"),
            "exists", lambda path: False),
     "cannot be written \\(NotFoundError: 404 bucket b not found\\); check that the bucket "
     "exists"),
    (True, ("exists", _raises(tf.errors.UnavailableError, "libcurl code 6")),
     "cannot be reached \\(UnavailableError: libcurl code 6\\); check this machine's network "
     "and its Google Cloud credentials"),
    # TensorFlow's GCS client retrying for minutes: the check's own deadline ends it.
    (True, ("exists", lambda path: time.sleep(30)),
     "did not answer within 0.5 s .*; check this machine's network"),
])
def test_an_unusable_remote_directory_is_one_line_naming_the_fix(monkeypatch, writable, patch,
                                                                 message):
  for name, replacement in zip(patch[::2], patch[1::2]):
    monkeypatch.setattr(tf.io.gfile, name, replacement)
  start = time.monotonic()
  with pytest.raises(errors.UnreachableError, match=message) as error:
    storage.check_usable("gs://b/w", "--workdir", writable=writable, seconds=0.5)
  assert time.monotonic() - start < 5
  assert "\n" not in str(error.value)


def test_a_reachable_remote_workdir_passes_and_keeps_nothing_of_the_check():
  workdir_lib.check_workdir("ram://dae-check/workdir")
  assert not tf.io.gfile.exists("ram://dae-check/workdir")


def test_a_nonexistent_data_dir_is_one_line_and_is_not_created(tmp_path):
  config = test_config.get_config()
  config.data_dir = str(tmp_path / "no" / "such" / "tfds")
  with pytest.raises(errors.DatasetUnavailableError,
                     match="data_dir=.*/no/such/tfds does not exist; fix --config.data_dir"):
    train.train_and_evaluate(config, str(tmp_path / "workdir"))
  assert not (tmp_path / "no").exists() and not (tmp_path / "workdir").exists()


def test_workdir_that_is_a_file_or_under_a_file_is_one_line(tmp_path):
  (tmp_path / "file").write_text("x")
  for workdir, message in ((tmp_path / "file", "is a file, not a directory"),
                           (tmp_path / "file" / "run", "cannot be created: .* is a file")):
    with pytest.raises(errors.ConfigError, match=message):
      train.train_and_evaluate(test_config.get_config(), str(workdir))
  assert (tmp_path / "file").read_text() == "x"


def test_an_empty_workdir_flag_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  with pytest.raises(errors.ConfigError, match="--workdir='' is empty; name a directory"):
    train.train_and_evaluate(test_config.get_config(), "")
  assert not os.listdir(tmp_path)


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
  workdir = _copy(short_run[0], tmp_path)
  for name, text in (("config.json", config_text), ("config_history.json", history_text)):
    path = os.path.join(workdir, name)
    if text is None:
      os.remove(path)
    elif text != "keep":
      with open(path, "w") as file:
        file.write(text)
  before = _snapshot(workdir)
  config = test_config.get_config()
  config.train.learning_rate = 0.01
  with pytest.raises(errors.ConfigError, match=message) as error:
    train.train_and_evaluate(config, workdir)
  assert "\n" not in str(error.value)
  assert _snapshot(workdir) == before


@pytest.mark.slow  # Two runs or a trainer process: CI runs it in make test-slow.
def test_with_the_opt_in_checkpoints_without_a_config_resume_and_record_it(short_run,
                                                                           tmp_path):
  workdir = _copy(short_run[0], tmp_path)
  os.remove(os.path.join(workdir, "config.json"))
  os.remove(os.path.join(workdir, "config_history.json"))
  config = test_config.get_config()
  config.train.max_steps = 16
  train.train_and_evaluate(config, workdir, allow_config_change=True)
  assert [entry["step"] for entry in run_files.load_history(workdir)] == [8, 16]
  assert run_files.read_config(workdir)["train"]["max_steps"] == 16


def test_a_corrupt_history_is_one_line_and_nothing_is_rewritten(short_run, tmp_path):
  workdir = _copy(short_run[0], tmp_path)
  with open(os.path.join(workdir, "history.json"), "r+") as file:
    file.truncate(20)
  before = _snapshot(workdir)
  config = test_config.get_config()
  with pytest.raises(errors.CorruptFileError, match="history.json is corrupt"):
    train.train_and_evaluate(config, workdir)
  assert _snapshot(workdir) == before


@pytest.mark.parametrize("history_text", [
    '{"step": 8}',  # An object, not a list.
    "[1, 2]",
    '[{"epoch": 1, "step": "8", "train_loss": 0.1}]',  # A string step.
    '[{"epoch": 1, "step": 8, "train_loss": "low"}]',  # A non-number loss.
])
def test_a_history_of_the_wrong_type_is_one_line_and_nothing_is_rewritten(
    short_run, tmp_path, history_text):
  workdir = _copy(short_run[0], tmp_path)
  with open(os.path.join(workdir, "history.json"), "w") as file:
    file.write(history_text)
  before = _snapshot(workdir)
  with pytest.raises(errors.CorruptFileError,
                     match="history.json is not a list of epoch entries") as error:
    train.train_and_evaluate(test_config.get_config(), workdir)
  assert "\n" not in str(error.value)
  assert _snapshot(workdir) == before


def test_metrics_json_is_written_after_the_saved_model(short_run):
  workdir = short_run[0]
  saved_model = max(os.stat(os.path.join(parent, name)).st_mtime_ns
                    for parent, _, names in os.walk(os.path.join(workdir, "saved_model"))
                    for name in names)
  assert os.stat(os.path.join(workdir, "metrics.json")).st_mtime_ns >= saved_model


def _run_main(tmp_path, *flags):
  return helpers.run_trainer(tmp_path / "w", *flags, timeout=120)


def _start_main(tmp_path):
  """A trainer on tmp_path/w, started once it holds the workdir lock: its Popen."""
  process = subprocess.Popen(
      [sys.executable, "-m", "trainer.main", "--config=configs/test.py",
       f"--workdir={tmp_path / 'w'}"], cwd=REPO_ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  lock_file = tmp_path / "w" / workdir_lib.LOCK_FILENAME
  deadline = time.monotonic() + 120
  while not (lock_file.exists() and lock_file.read_text().strip() == str(process.pid)):
    assert process.poll() is None and time.monotonic() < deadline, "the trainer never locked"
    time.sleep(0.1)
  return process


@pytest.mark.slow  # Two trainer processes: about a minute.
def test_a_second_trainer_on_a_locked_workdir_stops_at_once_naming_the_holder(tmp_path,
                                                                             trained_run):
  first = _start_main(tmp_path)
  # Paused while holding the lock, so that it cannot finish its short run before
  # the second trainer has started (on an idle machine it would).
  os.kill(first.pid, signal.SIGSTOP)
  try:
    started = time.monotonic()
    second = _run_main(tmp_path, "--config=configs/test.py")
    assert first.poll() is None, "the first trainer ended before the second was refused"
    assert time.monotonic() - started < 60
  finally:
    os.kill(first.pid, signal.SIGCONT)
  assert second.returncode == 1 and "Traceback" not in second.stderr
  assert re.search(f"^dae-trainer: --workdir=.* is in use by another trainer \\(PID {first.pid} "
                   "holds", second.stderr.strip().splitlines()[-1])
  _, stderr = first.communicate(timeout=300)
  assert first.returncode == 0, stderr
  # The first run is unchanged: it ends with an unbroken run's weights.
  assert re.search("weights fingerprint (\\w+)", stderr).group(1) == (
      checkpoints.weights_fingerprint(trained_run[2]))


@pytest.mark.slow  # Two trainer processes: about a minute.
def test_a_killed_holders_lock_does_not_block_the_rerun(tmp_path):
  first = _start_main(tmp_path)
  os.kill(first.pid, signal.SIGKILL)
  first.wait(timeout=30)
  rerun = _run_main(tmp_path, "--config=configs/test.py")
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  assert "in use by another trainer" not in rerun.stderr


@pytest.mark.parametrize("config_text, message", [
    (None, "cannot load the config file .*missing.py \\(OSError"),
    # The other two are trainer processes as well: CI runs them in make test-slow.
    pytest.param("def get_config(:\n", "cannot load the config file .*broken.py \\(SyntaxError",
                 marks=pytest.mark.slow),
    pytest.param("from configs import default\ndef get_config():\n  c = default.get_config()\n"
                 "  c.train.num_epoch = 3\n  return c\n",
                 "cannot load the config file .*broken.py \\(AttributeError",
                 marks=pytest.mark.slow),
])
def test_a_config_file_that_cannot_load_is_one_line(tmp_path, config_text, message):
  path = tmp_path / ("missing.py" if config_text is None else "broken.py")
  if config_text is not None:
    path.write_text(config_text)
  result = _run_main(tmp_path, f"--config={path}")
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  assert lines[-1].startswith("dae-trainer: ") and __import__("re").search(message, lines[-1])
  assert not (tmp_path / "w").exists()


def test_preempted_exit_code_is_documented():
  assert errors.PREEMPTED_EXIT_CODE == 75


def test_make_train_quotes_a_workdir_with_spaces():
  # Under `make test` this runs inside make: no "Entering directory" lines.
  env = {name: value for name, value in os.environ.items()
         if name not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
  result = subprocess.run(["make", "-n", "--no-print-directory", "train", "WORKDIR=my runs/a b",
                           "VENV_PYTHON=python"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=30, env=env)
  assert result.returncode == 0, result.stderr
  train_command = [line for line in result.stdout.splitlines() if "trainer.main" in line]
  assert len(train_command) == 1 and '--workdir="my runs/a b"' in train_command[0]


@pytest.mark.slow  # Two runs or a trainer process: CI runs it in make test-slow.
def test_a_loss_that_becomes_nan_stops_with_one_line_naming_the_steps(tmp_path):
  result = _run_main(tmp_path, "--config=configs/test.py", "--config.train.learning_rate=1e30")
  assert result.returncode == 1
  assert "Traceback" not in result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith(
      "dae-trainer: Training loss became nan between steps 0 and 7 (epoch 1); lower "
      "train.learning_rate")


@pytest.mark.parametrize("error, names", [
    (OSError(errno.ENOSPC, "No space left on device", "/w/history.json.tmp"),
     "writing /w/history.json.tmp"),
    (OSError(errno.EDQUOT, "Disk quota exceeded", "/w/plots/loss.png.tmp"), "loss.png.tmp"),
    (tf.errors.ResourceExhaustedError(
        None, None, "/w/checkpoints/ckpt-32_temp/part-00000; No space left on device"),
     "ckpt-32_temp"),
])
def test_a_full_disk_is_one_line_naming_the_file_and_the_rerun(error, names):
  message = cli.disk_full_message(error)
  assert message.startswith("the disk is full") and names in message and "\n" not in message
  assert "rerun the same command: it resumes from the last complete checkpoint" in message


@pytest.mark.parametrize("error", [
    OSError(errno.EIO, "Input/output error", "/w/x"),
    tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[...]"),
])
def test_other_write_and_memory_failures_are_not_called_a_full_disk(error):
  assert cli.disk_full_message(error) is None


def test_a_tensor_too_large_for_memory_is_one_line_naming_what_to_lower():
  error = tf.errors.ResourceExhaustedError(
      None, None, "OOM when allocating tensor with shape[128,1000000000] and type float")
  message = cli.out_of_memory_message(error)
  assert message.startswith("out of memory (ResourceExhaustedError: OOM when allocating tensor")
  assert "lower train.batch_size" in message and "\n" not in message
  assert cli.out_of_memory_message(OSError(errno.ENOSPC, "No space left on device")) is None


@pytest.mark.slow  # Trainer processes on a small tmpfs (needs root to mount).
def test_a_disk_that_fills_during_the_first_checkpoint_is_one_line_and_a_rerun_continues(
    tmp_path):
  small = tmp_path / "small"
  small.mkdir()
  if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(small)],
                    capture_output=True, check=False).returncode != 0:
    helpers.skip_unless_ci("cannot mount a tmpfs here (not root)")
  try:
    result = _run_main(small, "--config=configs/test.py")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("dae-trainer: the disk is full") and "ckpt-32_temp" in last
    assert not os.path.exists(small / "w" / "checkpoints" / "ckpt-32.index")
    moved = tmp_path / "w"
    shutil.copytree(small / "w", moved)
  finally:
    subprocess.run(["umount", str(small)], check=False)
  # With room again the same command resumes: the unfinished temporaries go, the epoch reruns.
  result = _run_main(tmp_path, "--config=configs/test.py")
  assert result.returncode == 0, result.stderr[-2000:]
  assert not os.path.exists(moved / "checkpoints" / "ckpt-32_temp")
  assert [entry["step"] for entry in run_files.load_history(str(moved))] == [32]


_BEAT = 20.0  # Seconds between a marker's renewals: only the fake clock's seconds pass.


class _FakeClock:
  """Time that passes only when `claim_marker` sleeps; `on_sleep` runs at each sleep."""

  def __init__(self, on_sleep=lambda: None):
    self.now, self.on_sleep = 0.0, on_sleep

  def monotonic(self):
    return self.now

  def sleep(self, seconds):
    self.now += seconds
    self.on_sleep()


def _claim(tmp_path, clock=None, **options):
  return workdir_lock.claim_marker(str(tmp_path), heartbeat_seconds=_BEAT,
                                   clock=clock or _FakeClock(), **options)


def test_a_run_marker_is_renewed_while_held_and_removed_on_release(tmp_path):
  marker = workdir_lock.claim_marker(str(tmp_path), heartbeat_seconds=0.05, clock=_FakeClock())
  path = tmp_path / workdir_lib.MARKER_FILENAME
  first = json.loads(path.read_text())
  assert first["pid"] == os.getpid() and first["owner"] == marker.owner
  # The renewal thread beats every 0.05 s: wait for a renewal, however busy the machine.
  deadline = time.monotonic() + 60
  while json.loads(path.read_text())["heartbeat"] == first["heartbeat"]:
    assert time.monotonic() < deadline, "the marker was never renewed"
    time.sleep(0.05)
  marker.release()
  assert not path.exists()


def test_a_second_trainer_stops_at_a_live_run_marker_naming_its_owner(tmp_path):
  owner = _claim(tmp_path)
  try:
    # While the second trainer watches, the owner renews as a live one does.
    clock = _FakeClock(on_sleep=owner.renew_once)
    with pytest.raises(errors.ConfigError, match=rf"is in use by another trainer \(host "
                       rf".*, PID {os.getpid()} renews trainer.marker.json there\).*"
                       r"ignore_run_marker=true"):
      _claim(tmp_path, clock)
    assert clock.now <= workdir_lock.STALE_AFTER_HEARTBEATS * _BEAT
    # The owner's marker is untouched, and the check can be skipped.
    assert json.loads((tmp_path / workdir_lib.MARKER_FILENAME).read_text())["owner"] == (
        owner.owner)
    _claim(tmp_path, ignore_marker=True).release()
  finally:
    owner.release()


@pytest.mark.parametrize("left_behind", [
    '{"owner": "gone", "host": "lost-machine", "pid": 7, "heartbeat": 12}',  # kill -9, lost VM
    "{not json",  # A torn or foreign file.
])
def test_a_marker_that_is_not_renewed_is_taken_over(tmp_path, caplog, left_behind):
  (tmp_path / workdir_lib.MARKER_FILENAME).write_text(left_behind)
  clock = _FakeClock()
  marker = _claim(tmp_path, clock)
  try:
    content = json.loads((tmp_path / workdir_lib.MARKER_FILENAME).read_text())
    assert content["owner"] == marker.owner
    assert any("Taking over" in record.getMessage() or "is not a run marker" in record.getMessage()
               for record in caplog.records)
  finally:
    marker.release()


def test_of_two_trainers_claiming_at_once_only_the_last_writer_gets_the_workdir(tmp_path):
  rivals = []
  # While the first claimant settles, a second one writes its marker over it.
  first_clock = _FakeClock(on_sleep=lambda: rivals.append(_claim(tmp_path)) if not rivals else None)
  with pytest.raises(errors.ConfigError, match="is in use by another trainer"):
    _claim(tmp_path, first_clock)
  assert len(rivals) == 1
  content = json.loads((tmp_path / workdir_lib.MARKER_FILENAME).read_text())
  assert content["owner"] == rivals[0].owner
  rivals[0].release()
