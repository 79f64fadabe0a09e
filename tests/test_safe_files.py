"""Links planted in a workdir: the trainer never writes, truncates or deletes through one."""

import fcntl
import os

import pytest

from configs import test as test_config
from trainer import checkpoints
from trainer import errors
from trainer import export
from trainer import train
from trainer import workdir_lock
from trainer import workdir as workdir_lib
from trainer import fileio

_PRECIOUS = "precious data\n"


def _victim(tmp_path, name="victim"):
  """A file outside the workdir that a link planted in it points to."""
  path = tmp_path / name
  path.write_text(_PRECIOUS)
  return path


def _victim_directory(tmp_path):
  directory = tmp_path / "victim_dir"
  directory.mkdir(parents=True)
  (directory / "keep").write_text(_PRECIOUS)
  return directory


def test_a_symlinked_lock_is_refused_in_one_line_and_its_target_untouched(tmp_path):
  victim = _victim(tmp_path)
  workdir = tmp_path / "workdir"
  workdir.mkdir()
  (workdir / workdir_lib.LOCK_FILENAME).symlink_to(victim)
  with pytest.raises(errors.ConfigError, match="trainer.lock is a symbolic link .*remove the "
                                               "link, or choose another --workdir") as error:
    train.train_and_evaluate(test_config.get_config(), str(workdir))
  assert "\n" not in str(error.value)
  assert victim.read_text() == _PRECIOUS
  assert sorted(os.listdir(workdir)) == [workdir_lib.LOCK_FILENAME]  # Nothing written.


def test_a_hard_link_or_a_fifo_as_the_lock_is_refused(tmp_path):
  victim = _victim(tmp_path)
  hard = tmp_path / "hard"
  hard.mkdir()
  os.link(victim, hard / workdir_lib.LOCK_FILENAME)
  with pytest.raises(errors.ConfigError, match="is a hard link to another file"):
    workdir_lock.acquire(str(hard))
  assert victim.read_text() == _PRECIOUS
  fifo = tmp_path / "fifo"
  fifo.mkdir()
  os.mkfifo(fifo / workdir_lib.LOCK_FILENAME)
  with pytest.raises(errors.ConfigError, match="is not a regular file"):
    workdir_lock.acquire(str(fifo))  # Without O_NONBLOCK this would hang.


def test_the_evaluation_never_reads_a_lock_through_a_link(tmp_path):
  workdir = tmp_path / "workdir"
  workdir.mkdir()
  victim = _victim(tmp_path)
  (workdir / workdir_lib.LOCK_FILENAME).symlink_to(victim)
  with open(victim) as locked:  # Locked by its owner: read through the link, it would be
    fcntl.flock(locked.fileno(), fcntl.LOCK_EX)  # shown as a trainer's PID.
    assert workdir_lock.holder(str(workdir)) is None


@pytest.mark.parametrize("mode, message", [
    (0o777, "is writable by every user \\(mode drwxrwxrwx\\)"),
    (0o1777, "is writable by every user \\(mode drwxrwxrwt\\)"),
])
def test_a_workdir_every_user_can_write_is_refused(tmp_path, mode, message):
  workdir = tmp_path / "shared"
  workdir.mkdir()
  os.chmod(workdir, mode)
  with pytest.raises(errors.ConfigError, match=message):
    workdir_lock.acquire(str(workdir))
  assert not os.listdir(workdir)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")
def test_a_workdir_of_another_user_is_refused(tmp_path):
  workdir = tmp_path / "theirs"
  workdir.mkdir()
  os.chown(workdir, 12345, 12345)  # As an attacker's mkdir /tmp/w would leave it.
  with pytest.raises(errors.ConfigError, match="belongs to another user \\(uid 12345\\)"):
    workdir_lock.acquire(str(workdir))
  assert not os.listdir(workdir)


@pytest.mark.parametrize("planted", ["metrics.json", "metrics.json.tmp"])
def test_a_link_at_a_report_file_or_its_temporary_name_is_replaced_never_followed(
    tmp_path, planted):
  victim = _victim(tmp_path)
  workdir = tmp_path / "workdir"
  workdir.mkdir()
  (workdir / planted).symlink_to(victim)
  fileio.write_json(str(workdir / "metrics.json"), {"psnr": 20.0})
  assert victim.read_text() == _PRECIOUS
  assert not (workdir / "metrics.json").is_symlink()
  assert (workdir / "metrics.json").read_text() == '{\n  "psnr": 20.0\n}\n'
  assert sorted(os.listdir(workdir)) == ["metrics.json"]


def test_a_link_planted_as_an_export_temporary_is_unlinked_not_emptied(tmp_path):
  # tf.io.gfile.rmtree, given a link to a directory, deletes what the target holds.
  victim_dir = _victim_directory(tmp_path)
  workdir = tmp_path / "workdir"
  workdir.mkdir()
  (workdir / "saved_model.tmp-12345").symlink_to(victim_dir)
  export._remove_temporaries(str(workdir / "saved_model"))  # pylint: disable=protected-access
  assert (victim_dir / "keep").read_text() == _PRECIOUS
  assert not os.path.lexists(workdir / "saved_model.tmp-12345")


def test_a_link_in_place_of_the_export_is_replaced_and_its_target_kept(tmp_path):
  victim_dir = _victim_directory(tmp_path)
  workdir = tmp_path / "workdir"
  (workdir / "new").mkdir(parents=True)
  (workdir / "new" / "saved_model.pb").write_text("new")
  (workdir / "saved_model").symlink_to(victim_dir)
  fileio.replace_directory(str(workdir / "new"), str(workdir / "saved_model"))
  assert (victim_dir / "keep").read_text() == _PRECIOUS
  assert os.listdir(workdir / "saved_model") == ["saved_model.pb"]


def test_links_inside_a_removed_directory_are_not_followed(tmp_path):
  victim_dir = _victim_directory(tmp_path)
  stale = tmp_path / "checkpoints" / "ckpt-9_temp"
  stale.mkdir(parents=True)
  (stale / "inner").symlink_to(victim_dir)
  (tmp_path / "checkpoints" / "ckpt-8_temp").symlink_to(victim_dir)
  checkpointer = checkpoints.Checkpointer.__new__(checkpoints.Checkpointer)
  checkpointer.directory, checkpointer._is_chief = str(tmp_path / "checkpoints"), True  # pylint: disable=protected-access
  checkpointer.remove_stale_temporaries()
  assert (victim_dir / "keep").read_text() == _PRECIOUS
  assert os.listdir(tmp_path / "checkpoints") == []


def test_a_run_with_links_planted_in_its_workdir_leaves_their_targets_untouched(tmp_path):
  """End to end: a short run over links planted where it writes, and where it cleans up."""
  workdir = tmp_path / "workdir"
  (workdir / "checkpoints").mkdir(parents=True)
  files = {name: _victim(tmp_path, f"victim_{name}") for name in ("metrics.json", "config.json.tmp")}
  directories = {name: _victim_directory(tmp_path / name.replace("/", "_"))
                 for name in ("saved_model.tmp-1", "checkpoints/ckpt-5_temp", "plots")}
  for name, target in {**files, **directories}.items():
    (workdir / name).symlink_to(target)
  config = test_config.get_config()
  config.train.max_steps = 8
  train.train_and_evaluate(config, str(workdir))
  for name, victim in files.items():
    assert victim.read_text() == _PRECIOUS, name
  for name, victim in directories.items():
    # Before, the export's and the checkpointer's clean-up emptied these through
    # the links. (A link at plots/ is the user's choice, e.g. another disk: written into.)
    assert (victim / "keep").read_text() == _PRECIOUS, name
  assert not os.path.lexists(workdir / "saved_model.tmp-1")
  assert not os.path.lexists(workdir / "checkpoints" / "ckpt-5_temp")
  assert (workdir / "metrics.json").is_file() and not (workdir / "metrics.json").is_symlink()
