"""Stop requests: SIGINT (Ctrl-C) and SIGHUP are handled like SIGTERM; a second Ctrl-C ends at once.

The in-process checks send signals to this process with `os.kill`; the
end-to-end ones (slow: `make test-slow`) start trainer processes.
"""

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from trainer import preemption
from tests import test_recovery_slow as recovery

from tests.helpers import REPO_ROOT


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_each_stop_signal_only_requests_a_stop(signum):
  # As in a terminal: a shell's background job starts with SIGINT ignored, which
  # StopSignal rightly keeps (test_a_signal_ignored_at_start_stays_ignored).
  previous = signal.signal(signum, signal.SIG_DFL)
  try:
    _check_only_requests_a_stop(signum)
  finally:
    signal.signal(signum, previous)


def _check_only_requests_a_stop(signum):
  with preemption.StopSignal() as stop:
    os.kill(os.getpid(), signum)
    time.sleep(0.05)  # The handler runs at the next bytecode of the main thread.
    assert stop.requested and stop.received == signal.Signals(signum).name
    os.kill(os.getpid(), signum if signum != signal.SIGINT else signal.SIGTERM)
    time.sleep(0.05)
    assert stop.received == signal.Signals(signum).name  # The first one is reported.


_TWICE = """
import os, signal, time
from trainer import preemption
signal.signal(signal.SIGINT, signal.SIG_DFL)  # Not ignored, even when pytest runs in the background.
with preemption.StopSignal():
  os.kill(os.getpid(), signal.SIGINT)
  time.sleep(0.2)
  os.kill(os.getpid(), signal.SIGINT)
  time.sleep(10)
"""


def test_a_second_ctrl_c_ends_the_process_at_once_in_one_line():
  started = time.monotonic()
  result = subprocess.run([sys.executable, "-c", _TWICE],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
  assert result.returncode == preemption.INTERRUPTED_EXIT_CODE == 130, result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith(
      "dae-trainer: interrupted twice (Ctrl-C): stopped at once, without a new checkpoint")
  assert time.monotonic() - started < 8


def test_a_signal_ignored_at_start_stays_ignored():
  previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # As under nohup.
  try:
    with preemption.StopSignal():
      assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
      assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
  finally:
    signal.signal(signal.SIGHUP, previous)


_OUTSIDE_THE_LOOP = """
import os, signal, time
from trainer import preemption
preemption.exit_on_stop_requests()
try:
  os.kill(os.getpid(), signal.SIGHUP)
  time.sleep(10)
except Exception:  # As TFDS's builder lookup does: it must not swallow the stop.
  pass
time.sleep(10)
"""


def test_outside_the_training_loop_a_stop_signal_exits_75_at_once_in_one_line():
  started = time.monotonic()
  result = subprocess.run([sys.executable, "-c", _OUTSIDE_THE_LOOP], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=60)
  assert result.returncode == 75, result.stderr
  assert result.stderr.strip().splitlines()[-1].startswith(
      "dae-trainer: stopped on SIGHUP's request outside the training loop (starting up, or "
      "writing the final reports); no training step was lost: rerun the same command")
  assert time.monotonic() - started < 8


def test_a_wait_ends_early_on_a_stop_signal():
  done = threading.Event()
  timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGTERM))
  timer.start()
  started = time.monotonic()
  assert preemption.wait_for(done, timeout_seconds=30) == "SIGTERM"
  assert time.monotonic() - started < 5


# configs/test.py on 16,384 images: 256 steps of 64 per epoch (8 per chunk), so
# a signal sent at the first epoch's line lands mid-epoch 2.
_FLAGS = ("--config=configs/test.py", "--config.train.num_epochs=3",
          "--config.train_split=train[:16384]")


def _start_and_signal(tmp_path, name, signals, gap_seconds=0.3, flags=_FLAGS):
  """A trainer on tmp_path/name, sent `signals` once its first epoch is logged: (Popen, log)."""
  workdir, log_path = tmp_path / name, tmp_path / f"{name}.log"
  process = recovery._start(workdir, log_path, flags)  # pylint: disable=protected-access
  deadline = time.time() + 180
  while "epoch 1/3: train loss" not in log_path.read_text():  # The first epoch's end.
    assert time.time() < deadline and process.poll() is None, log_path.read_text()[-3000:]
    time.sleep(0.05)
  for index, signum in enumerate(signals):
    if index:
      time.sleep(gap_seconds)
    process.send_signal(signum)
  return process, workdir, log_path


def _stopped_step(log_path, signal_name):
  last_line = log_path.read_text().strip().splitlines()[-1]
  match = re.match(f"dae-trainer: the only task stopped on {signal_name}'s request at step "
                   r"(\d+) \(epoch 2\) and saved a checkpoint there; rerun the same command",
                   last_line)
  assert match, last_line
  return int(match.group(1))


@pytest.mark.slow  # Three trainer processes, about a minute on 2 cores.
def test_ctrl_c_mid_epoch_saves_at_the_step_and_a_rerun_ends_like_an_uninterrupted_run(tmp_path):
  reference = recovery._run_to_the_end(  # pylint: disable=protected-access
      tmp_path / "reference", tmp_path / "reference.log", _FLAGS)
  process, workdir, log_path = _start_and_signal(tmp_path, "interrupted", [signal.SIGINT])
  assert process.wait(timeout=120) == 75
  assert "Traceback" not in log_path.read_text() and "KeyboardInterrupt" not in (
      log_path.read_text())
  step = _stopped_step(log_path, "SIGINT")
  assert 256 < step < 512
  assert (workdir / "checkpoints" / f"ckpt-{step}.index").exists()
  resumed = recovery._run_to_the_end(  # pylint: disable=protected-access
      workdir, tmp_path / "resumed.log", _FLAGS)
  assert f"resumed from {workdir / 'checkpoints' / f'ckpt-{step}'}" in (
      tmp_path / "resumed.log").read_text()
  assert resumed == reference  # Same final step, identical weights fingerprint.


@pytest.mark.slow  # Trainer processes.
@pytest.mark.parametrize("signals, name", [
    ([signal.SIGHUP], "SIGHUP"),
    ([signal.SIGTERM, signal.SIGTERM], "SIGTERM"),  # 0.3 s apart: still one stop, exit 75.
])
def test_sighup_and_a_repeated_sigterm_save_a_checkpoint_and_exit_75(tmp_path, signals, name):
  process, workdir, log_path = _start_and_signal(tmp_path, "stopped", signals)
  assert process.wait(timeout=120) == 75, log_path.read_text()[-3000:]
  step = _stopped_step(log_path, name)
  assert (workdir / "checkpoints" / f"ckpt-{step}.index").exists()


@pytest.mark.slow  # A trainer process.
def test_a_second_ctrl_c_ends_a_trainer_inside_a_chunk_at_once(tmp_path):
  # A whole epoch (256 steps, seconds) per chunk: the main thread waits inside
  # TensorFlow, where Python runs no signal handler, when both arrive.
  process, _, log_path = _start_and_signal(
      tmp_path, "twice", [signal.SIGINT, signal.SIGINT],
      flags=(*_FLAGS, "--config.train.steps_per_loop=256"))
  started = time.monotonic()
  assert process.wait(timeout=60) == 130, log_path.read_text()[-3000:]
  assert time.monotonic() - started < 5
  assert log_path.read_text().strip().splitlines()[-1].startswith(
      "dae-trainer: interrupted twice (Ctrl-C): stopped at once")


def test_sigterm_while_the_trainer_imports_tensorflow_exits_75_in_one_line(tmp_path):
  process = subprocess.Popen(
      [sys.executable, "-m", "trainer.main", "--config=configs/test.py",
       f"--workdir={tmp_path / 'workdir'}"], cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  time.sleep(1.0)  # Importing TensorFlow takes several seconds.
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=60)
  assert process.returncode == 75, stderr[-2000:]
  assert stderr.strip().splitlines()[-1].startswith(
      "dae-trainer: stopped on SIGTERM's request outside the training loop")
  assert not (tmp_path / "workdir").exists()
