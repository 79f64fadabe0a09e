"""Recovery end to end, in real processes: kill -9 at random moments, SIGTERM mid-epoch.

Marked slow: `make test-slow` (and CI) runs them, `make test` does not.
"""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest

from trainer.cloud import local_cluster
from tests.helpers import REPO_ROOT

# configs/test.py for 6 epochs: 192 steps of 32 per epoch.
_FLAGS = ("--config=configs/test.py", "--config.train.num_epochs=6")
_FINISHED = re.compile(r"finished at step (\d+): .*; weights fingerprint (\w+)")

pytestmark = pytest.mark.slow


def _start(workdir, log_path, flags=_FLAGS):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
  log = open(log_path, "w")  # pylint: disable=consider-using-with
  return subprocess.Popen([sys.executable, "-m", "trainer.main", f"--workdir={workdir}",
                           *flags], cwd=REPO_ROOT, env=env, stdout=log,
                          stderr=subprocess.STDOUT)


def _run_to_the_end(workdir, log_path, flags=_FLAGS):
  process = _start(workdir, log_path, flags)
  assert process.wait(timeout=300) == 0, log_path.read_text()[-3000:]
  return _FINISHED.search(log_path.read_text()).groups()


def _outcome(workdir):
  """What a finished run leaves, minus wall times and memory: history and metrics."""
  history = json.loads((workdir / "history.json").read_text())
  for entry in history:
    del entry["elapsed_seconds"], entry["rss_mb"]
  return history, json.loads((workdir / "metrics.json").read_text())


def test_kill_9_at_random_moments_then_rerun_ends_like_an_uninterrupted_run(tmp_path):
  reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
  reference = _run_to_the_end(reference_dir, tmp_path / "reference.log")

  rng = random.Random(20261129)
  kills = attempts = 0
  while kills < 10:
    attempts += 1
    assert attempts <= 40, f"only {kills} kills landed in {attempts - 1} attempts"
    log_path = tmp_path / f"attempt{attempts}.log"
    process = _start(killed_dir, log_path)
    # From start-up (about 4 s) into training, checkpointing, history writing and,
    # once all steps are done, the final evaluation and export.
    time.sleep(rng.uniform(2.0, 8.0))
    if process.poll() is not None:  # It finished first: the next attempt reruns a done run.
      assert process.returncode == 0, log_path.read_text()[-3000:]
      continue
    process.send_signal(signal.SIGKILL)
    process.wait()
    kills += 1
    # Whatever the moment, every file the run left parses.
    for name in ("config.json", "config_history.json", "history.json", "metrics.json"):
      if (killed_dir / name).exists():
        json.loads((killed_dir / name).read_text())
  resumed = _run_to_the_end(killed_dir, tmp_path / "final.log")

  assert resumed == reference  # Same final step, identical weights.
  assert _outcome(killed_dir) == _outcome(reference_dir)
  assert (killed_dir / "saved_model" / "saved_model.pb").exists()
  assert not [name for name in os.listdir(killed_dir) if ".tmp" in name]


def test_sigterm_mid_epoch_saves_at_the_step_and_a_rerun_ends_like_an_uninterrupted_run(
    tmp_path):
  # 256 steps per epoch: an epoch of 32 steps could end (in about 50 ms) before
  # the signal that followed its predecessor's log line arrived.
  flags = (*_FLAGS, "--config.train_split=train[:16384]")
  reference = _run_to_the_end(tmp_path / "reference", tmp_path / "reference.log", flags)
  workdir, log_path = tmp_path / "preempted", tmp_path / "preempted.log"
  process = _start(workdir, log_path, flags)
  deadline = time.time() + 180
  while "epoch 1/6" not in log_path.read_text():
    assert time.time() < deadline and process.poll() is None, log_path.read_text()[-3000:]
    time.sleep(0.05)
  process.send_signal(signal.SIGTERM)
  assert process.wait(timeout=120) == 75
  last_line = log_path.read_text().strip().splitlines()[-1]
  match = re.match(r"dae-trainer: the only task stopped on SIGTERM's request at step (\d+) "
                   r"\(epoch 2\) and saved a checkpoint there; rerun the same command", last_line)
  assert match, last_line
  step = int(match.group(1))
  assert 256 < step < 512  # Mid-epoch 2: steps_per_loop is 8, an epoch 256 steps.
  assert (workdir / "checkpoints" / f"ckpt-{step}.index").exists()

  resumed = _run_to_the_end(workdir, tmp_path / "resumed.log", flags)
  assert f"resumed from {workdir / 'checkpoints' / f'ckpt-{step}'}" in (
      tmp_path / "resumed.log").read_text()
  assert resumed == reference


def test_sigterm_to_one_worker_stops_every_task_at_the_same_step(tmp_path):
  """A Vertex AI-style cluster (chief + worker): SIGTERM reaches the worker only."""
  workdir = tmp_path / "workdir"
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", TMPDIR=str(tmp_path))
  processes, logs = [], []
  for index, tf_config in enumerate(local_cluster.tf_configs(2, chief_task=True)):
    logs.append(tmp_path / f"task{index}.log")
    processes.append(subprocess.Popen(
        [sys.executable, "-m", "trainer.main", f"--workdir={workdir}", *_FLAGS,
         "--config.runtime.strategy=multi_worker_mirrored"], cwd=REPO_ROOT,
        env=dict(env, TF_CONFIG=tf_config), stdout=open(logs[-1], "w"),
        stderr=subprocess.STDOUT))
  chief, worker = processes
  try:
    deadline = time.time() + 180
    while "epoch 1/6" not in logs[0].read_text():
      assert time.time() < deadline and chief.poll() is None, logs[0].read_text()[-3000:]
      time.sleep(0.05)
    worker.send_signal(signal.SIGTERM)
    codes = [process.wait(timeout=120) for process in processes]
  finally:
    for process in processes:
      process.kill()
  assert codes == [75, 75], [log.read_text()[-2000:] for log in logs]
  # The trainer's own last line, not the log's: with TF_CPP_MIN_LOG_LEVEL=2 the
  # chief's coordination service may log "The tasks have crashed" after it, when
  # the worker's process exits first (seen in CI under load).
  last_lines = [[line for line in log.read_text().splitlines()
                 if line.startswith("dae-trainer:")][-1] for log in logs]
  chief_stop = re.match(r"dae-trainer: chief 0 stopped on another task's request at step (\d+)",
                        last_lines[0])
  worker_stop = re.match(r"dae-trainer: worker 0 stopped on SIGTERM's request at step (\d+)",
                         last_lines[1])
  assert chief_stop and worker_stop, last_lines
  step = int(chief_stop.group(1))
  assert step == int(worker_stop.group(1)) and 32 < step < 64
  assert (workdir / "checkpoints" / f"ckpt-{step}.index").exists()
  assert not [name for name in os.listdir(tmp_path) if name.startswith("dae-trainer-")]
