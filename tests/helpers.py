"""What many test modules share: the repository's root and running the trainer as a process."""

import os
import pathlib
import subprocess
import sys

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
