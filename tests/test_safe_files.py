"""Links planted in a workdir: the trainer never writes, truncates or deletes through one."""

import os

import pytest

from configs import test as test_config
from trainer import checkpoints
from trainer import errors
from trainer import export
from trainer import reports
from trainer import safe_files
from trainer import train
from trainer import workdir_lock

_PRECIOUS = "precious data\n"


def _victim(tmp_path, name="victim"):
  """A file outside the workdir that a link planted in it points to."""
  path = tmp_path / name
  path.write_text(_PRECIOUS)
  return path


def _victim_directory(tmp_path):
  directory = tmp_path / "victim_dir"
  directory.mkdir()
  (directory / "keep").write_text(_PRECIOUS)
  return directory


def test_a_symlinked_lock_is_refused_in_one_line_and_its_target_untouched(tmp_path):
  victim = _victim(tmp_path)
  workdir = tmp_path / "workdir"
  workdir.mkdir()
  (workdir / workdir_lock.LOCK_FILENAME).symlink_to(victim)
  with pytest.raises(errors.ConfigError, match="trainer.lock is a symbolic link .*remove the "
                                               "link, or choose another --workdir") as error:
    train.train_and_evaluate(test_config.get_config(), str(workdir))
  assert "\n" not in str(error.value)
  assert victim.read_text() == _PRECIOUS
  assert sorted(os.listdir(workdir)) == [workdir_lock.LOCK_FILENAME]  # Nothing written.


def test_a_hard_link_or_a_fifo_as_the_lock_is_refused(tmp_path):
  victim = _victim(tmp_path)
  hard = tmp_path / "hard"
  hard.mkdir()
  os.link(victim, hard / workdir_lock.LOCK_FILENAME)
  with pytest.raises(errors.ConfigError, match="is a hard link to another file"):
    workdir_lock.acquire(str(hard))
  assert victim.read_text() == _PRECIOUS
  fifo = tmp_path / "fifo"
  fifo.mkdir()
  os.mkfifo(fifo / workdir_lock.LOCK_FILENAME)
  with pytest.raises(errors.ConfigError, match="is not a regular file"):
    workdir_lock.acquire(str(fifo))  # Without O_NONBLOCK this would hang.


def test_the_evaluation_never_reads_a_lock_through_a_link(tmp_path):
  workdir = tmp_path / "workdir"
  workdir.mkdir()
  (workdir / workdir_lock.LOCK_FILENAME).symlink_to(_victim(tmp_path))
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
  reports.write_json(str(workdir / "metrics.json"), {"psnr": 20.0})
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
  reports.replace_directory(str(workdir / "new"), str(workdir / "saved_model"))
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


def test_a_run_with_links_planted_at_its_report_files_leaves_their_targets_untouched(tmp_path):
  """End to end: a short run writes history.json, config files and metrics.json over planted links."""
  workdir = tmp_path / "workdir"
  workdir.mkdir()
  victims = {}
  for name in ("history.json.tmp", "config_history.json.tmp", "metrics.json", "plots"):
    victims[name] = _victim(tmp_path, f"victim_{name}") if name != "plots" else (
        _victim_directory(tmp_path))
    (workdir / name).symlink_to(victims[name])
  config = test_config.get_config()
  config.train.max_steps = 8
  train.train_and_evaluate(config, str(workdir))
  for name, victim in victims.items():
    if name == "plots":
      # A directory link is the user's choice (e.g. another disk): written into, never emptied.
      assert (victim / "keep").read_text() == _PRECIOUS
    else:
      assert victim.read_text() == _PRECIOUS, name
  assert not (workdir / "metrics.json").is_symlink()
  assert (workdir / "metrics.json").is_file() and (workdir / "history.json").is_file()
