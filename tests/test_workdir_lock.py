"""One workdir, one trainer (`trainer.workdir_lock`): the lock of a local workdir, the run marker
of an object store's, on an injected clock.
"""

import json
import os
import re
import signal
import time
import subprocess
import sys

import pytest

from trainer import checkpoints
from trainer import errors
from trainer import workdir_lock
from trainer import workdir as workdir_lib
from tests import helpers
from tests.helpers import REPO_ROOT


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
    second = helpers.run_in(tmp_path, "--config=configs/test.py")
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
  rerun = helpers.run_in(tmp_path, "--config=configs/test.py")
  assert rerun.returncode == 0, rerun.stderr[-2000:]
  assert "in use by another trainer" not in rerun.stderr


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
