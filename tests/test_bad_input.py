"""Bad input in one line, nothing written early: `trainer.cli`, `trainer.workdir`,
`input_pipeline.storage` and `input_pipeline.data_source` refuse it before any work.
"""

import errno
import json
import os
import time
import shutil
import subprocess

import pytest
import tensorflow as tf

from configs import test as test_config
from input_pipeline import data_source
from input_pipeline import storage
from trainer import cli
from trainer import errors
from trainer import train
from trainer import fileio
from trainer import workdir as workdir_lib
from trainer import run_files
from tests import helpers
from tests.helpers import REPO_ROOT


def _bad_mnist_copy(tmp_path, damage):
  data_dir = tmp_path / "tfds"
  shutil.copytree(os.path.join(data_source.BUNDLED_DATA_DIR, "mnist"), data_dir / "mnist")
  damage(data_dir / "mnist" / "3.0.1")
  return str(data_dir)


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
      helpers.truncate(version_dir / "mnist-train.tfrecord-00000-of-00001")
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


@pytest.mark.parametrize("config_text, message", [
    # Trainer processes: CI runs them in make test-slow (test_validation.py keeps one
    # one-line failure of trainer.main in make test).
    pytest.param(None, "cannot load the config file .*missing.py \\(OSError",
                 marks=pytest.mark.slow),
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
  result = helpers.run_in(tmp_path, f"--config={path}")
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
  result = helpers.run_in(tmp_path, "--config=configs/test.py", "--config.train.learning_rate=1e30")
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
    result = helpers.run_in(small, "--config=configs/test.py")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("dae-trainer: the disk is full") and "ckpt-32_temp" in last
    assert not os.path.exists(small / "w" / "checkpoints" / "ckpt-32.index")
    moved = tmp_path / "w"
    shutil.copytree(small / "w", moved)
  finally:
    subprocess.run(["umount", str(small)], check=False)
  # With room again the same command resumes: the unfinished temporaries go, the epoch reruns.
  result = helpers.run_in(tmp_path, "--config=configs/test.py")
  assert result.returncode == 0, result.stderr[-2000:]
  assert not os.path.exists(moved / "checkpoints" / "ckpt-32_temp")
  assert [entry["step"] for entry in run_files.load_history(str(moved))] == [32]
