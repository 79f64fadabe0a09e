"""What a run prints (trainer/logs.py): a short log by default, the detail at --verbosity=1."""

import os
import re
import subprocess
import sys

from absl import logging
import pytest
import tensorflow as tf

from trainer import logs
from tests.helpers import REPO_ROOT

# TensorFlow's C++ notices, XLA's assert notices and checkpoint-sharding timings.
_NOISE = re.compile(r"cudart_stub|cuInit|cpu_feature_guard|oneDNN|absl::InitializeLog|"
                    r"Ignoring Assert|Sharding callback|Constructing tf.data.Dataset|"
                    r"INFO:tensorflow|!!python/tuple")
# TensorFlow 2.20 only: XLA's first compile logs through absl's C++ logging
# before TensorFlow initialises it, ignoring TF_CPP_MIN_LOG_LEVEL (2.21 does not
# print these). Exactly these two lines are let through there, nothing else.
_TF_2_20_XLA_LINES = re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called "
                                r"are written to STDERR$|\] Compiled cluster using XLA!  This line is "
                                r"logged at most once for the lifetime of the process\.$")


def _without_tensorflow_2_20_xla_lines(lines):
  if not tf.__version__.startswith("2.20."):
    return lines
  return [line for line in lines if not _TF_2_20_XLA_LINES.search(line)]


def _train(tmp_path, *flags):
  environment = dict(os.environ)
  # As on a user's machine: no TF_CPP_MIN_LOG_LEVEL of the test session's.
  environment.pop("TF_CPP_MIN_LOG_LEVEL", None)
  result = subprocess.run(
      [sys.executable, "-m", "trainer.main", "--config=configs/test.py",
       f"--workdir={tmp_path / 'w'}", *flags],
      cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return (result.stdout + result.stderr).splitlines()


@pytest.mark.slow  # A trainer process with XLA: CI runs it in make test-slow.
def test_a_two_epoch_run_prints_a_short_log(tmp_path):
  lines = _train(tmp_path, "--config.train.num_epochs=2", "--config.runtime.jit_compile=true")
  assert len(lines) <= 15, "\n".join(lines)
  assert not [line for line in _without_tensorflow_2_20_xla_lines(lines) if _NOISE.search(line)], (
      "\n".join(lines))
  text = "\n".join(lines)
  assert "config configs/test.py, runtime.jit_compile=True, train.num_epochs=2" in text
  assert "training dense_denoising_autoencoder (484,944 parameters): epochs 1..2" in text
  assert len([line for line in lines if re.search(r"\] epoch [12]/2: train loss", line)]) == 2
  assert re.search(r"finished at step 64: eval loss .*; SavedModel in .*saved_model", text)


@pytest.mark.slow  # A trainer process: CI runs it in make test-slow.
def test_verbosity_1_brings_the_detail_back(tmp_path):
  lines = _train(tmp_path, "--verbosity=1")
  text = "\n".join(lines)
  assert "Sharding callback" in text  # TensorFlow's Python INFO records.
  assert re.search(r"cudart_stub|oneDNN|cpu_feature_guard", text)  # Its C++ notices.
  assert "] epoch 1/1: train loss" in text


@pytest.mark.parametrize("argv, expected", [
    (["main"], 0),
    (["main", "--verbosity=1"], 1),
    (["main", "-v", "2"], 2),
    (["main", "--v=1", "--verbosity=0"], 0),
    (["main", "--verbosity=x"], 0),
    (["main", "--verbose_name=3"], 0),
])
def test_verbosity_from_argv(argv, expected):
  assert logs.verbosity_from_argv(argv) == expected


class _Clock:

  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def test_progress_writes_scalars_at_each_boundary_and_a_line_at_most_every_10_s(monkeypatch):
  clock = _Clock()
  written, lines = [], []
  monkeypatch.setattr(logging, "info", lambda message, *args: lines.append(message % args))
  progress = logs.Progress(steps_per_epoch=400, last_step=1200, batch_size=10,
                           log_every_steps=100, write_scalars=lambda scalars, step: written.append(
                               (step, scalars)), clock=clock)
  running = {"loss": 0.5, "psnr": 12.0}
  progress.before_chunk(0, 50)
  for steps_done, now in ((50, 2.0), (100, 4.0), (150, 6.0), (200, 11.0), (300, 12.0),
                          (400, 25.0)):
    clock.now = now
    progress.after_chunk(steps_done, running)
  assert [step for step, _ in written] == [100, 200, 300, 400]
  assert written[0][1] == {"step/loss": 0.5, "step/psnr": 12.0, "step/examples_per_second": 250.0}
  # 10 s after the epoch began (step 200), then 10 s after that line (step 400).
  assert len(lines) == 2 and "step 200 (200 of 400)" in lines[0], lines
  assert "step 400 (400 of 400)" in lines[1]


def test_progress_starts_counting_boundaries_at_a_resumed_step():
  written = []
  progress = logs.Progress(steps_per_epoch=100, last_step=200, batch_size=1,
                           log_every_steps=100,
                           write_scalars=lambda scalars, step: written.append(step))
  progress.before_chunk(150, 40)
  progress.after_chunk(190, {"loss": 1.0, "psnr": 1.0})  # No boundary passed.
  progress.before_chunk(190, 10)
  progress.after_chunk(200, {"loss": 1.0, "psnr": 1.0})
  assert written == [200]


def test_progress_is_off_at_log_every_steps_0():
  written = []
  progress = logs.Progress(steps_per_epoch=10, last_step=10, batch_size=1,
                           log_every_steps=0, write_scalars=lambda *args: written.append(args))
  progress.before_chunk(0, 10)
  progress.after_chunk(10, {"loss": 1.0, "psnr": 1.0})
  assert not written
