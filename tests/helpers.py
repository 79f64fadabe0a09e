"""What many test modules share: the repository's root, running the trainer as a process, and
looking at or copying a workdir."""

import os
import pathlib
import shutil
import subprocess
import sys

from trainer import workdir as workdir_lib

REPO_ROOT = str(pathlib.Path(__file__).resolve().parents[1])
# Long enough for a configs/test.py run on a busy 2-core machine; a hung run still ends.
TRAINER_TIMEOUT_SECONDS = 300


def trainer_command(workdir, *flags) -> list[str]:
  """`python -m trainer.main --workdir=... FLAGS` with this interpreter."""
  return [sys.executable, "-m", "trainer.main", f"--workdir={workdir}", *flags]


def quiet_environment(**variables) -> dict[str, str]:
  """This process's environment with TensorFlow's C++ logs silenced, plus `variables`."""
  return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **variables)


def run_trainer(workdir, *flags, timeout: float = TRAINER_TIMEOUT_SECONDS,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
  """Runs the trainer to its end in a subprocess from the repository root; output captured."""
  return subprocess.run(trainer_command(workdir, *flags), cwd=REPO_ROOT,
                        env=env or quiet_environment(), capture_output=True, text=True,
                        timeout=timeout)


def skip_unless_ci(reason: str) -> None:
  """Skips on a developer's machine that lacks what the test needs; fails in CI, which has it.

  CI runs as root on a machine that can mount a tmpfs and create network
  namespaces: there, a missing capability is a broken check, not a reason to
  pass silently.
  """
  import pytest  # pylint: disable=import-outside-toplevel
  if os.environ.get("CI"):
    pytest.fail(f"{reason}, but CI must run this test")
  pytest.skip(reason)


def snapshot(directory):
  """Every file under `directory` with its size and modification time."""
  found = {}
  for parent, _, files in os.walk(directory):
    for name in files:
      if parent == str(directory) and name == workdir_lib.LOCK_FILENAME:
        continue  # The lock's own file: each run writes its PID there, not a result.
      path = os.path.join(parent, name)
      found[os.path.relpath(path, directory)] = (os.path.getsize(path), os.stat(path).st_mtime_ns)
  return found


def copy_workdir(workdir, tmp_path) -> str:
  """A copy of `workdir` as tmp_path/workdir, for a test that changes it."""
  copy = str(tmp_path / "workdir")
  shutil.copytree(workdir, copy)
  return copy


def truncate(path, size=100_000) -> None:
  with open(path, "r+b") as file:
    file.truncate(size)


def run_in(tmp_path, *flags) -> subprocess.CompletedProcess:
  """The trainer on tmp_path/w to its end, as a process (output captured)."""
  return run_trainer(pathlib.Path(tmp_path) / "w", *flags, timeout=120)
