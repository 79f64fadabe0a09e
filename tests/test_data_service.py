"""tf.data service: an in-process dispatcher and two workers on localhost feed a run that
learns, one epoch through the service holds every training image once, and a dead
dispatcher is a one-line config error, not a hang, and so is an address that accepts
connections but never serves (within input.data_service_timeout_seconds, a stop signal
honoured meanwhile)."""

import gc
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from input_pipeline import data_service
from input_pipeline import data_source
from input_pipeline import pipeline
from trainer import errors
from trainer import train
from trainer import workdir as workdir_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def service():
  """A dispatcher and two workers, in this process, on localhost."""
  dispatcher = tf.data.experimental.service.DispatchServer(
      tf.data.experimental.service.DispatcherConfig(port=0))
  dispatcher_address = dispatcher.target.split("://")[1]
  workers = [tf.data.experimental.service.WorkerServer(
      tf.data.experimental.service.WorkerConfig(dispatcher_address=dispatcher_address))
             for _ in range(2)]
  yield dispatcher.target
  # Iterators of the tests' datasets still hold service clients: released
  # first, they end their jobs at once instead of retrying a stopped dispatcher.
  gc.collect()
  for server in (*workers, dispatcher):
    server.stop()


def _sorted_images(batches):
  images = np.concatenate([clean.numpy() for _, clean in batches]).reshape(-1, 784)
  return images[np.lexsort(images.T[::-1])]


def test_one_epoch_through_the_service_holds_every_training_image_once(config, service):
  data = data_source.create_data_source(config)
  local = list(pipeline.create_dataset(data, config, "train"))
  config.input.data_service_address = service
  served = list(pipeline.create_dataset(data, config, "train"))
  assert len(served) == len(local) == data.steps_per_epoch
  np.testing.assert_array_equal(_sorted_images(served), _sorted_images(local))


def test_a_run_fed_by_the_service_learns(config, service, tmp_path):
  config.train.num_epochs = 2
  config.input.data_service_address = service
  config.input.data_service_job_name = "test-run"
  workdir = str(tmp_path / "workdir")
  train.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, workdir_lib.HISTORY_FILENAME)) as history_file:
    history = json.load(history_file)
  assert [entry["epoch"] for entry in history] == [1, 2]
  assert history[1]["train_loss"] < history[0]["train_loss"]


def test_a_dead_dispatcher_is_one_line_before_training(config, tmp_path):
  with socket.socket() as unused:  # A port where, once closed, nothing listens.
    unused.bind(("localhost", 0))
    port = unused.getsockname()[1]
  config.input.data_service_address = f"grpc://localhost:{port}"
  start = time.time()
  with pytest.raises(errors.ConfigError, match="no tf.data service dispatcher") as error:
    train.train_and_evaluate(config, str(tmp_path / "workdir"))
  assert time.time() - start < 60
  assert "\n" not in str(error.value) and f"localhost:{port}" in str(error.value)


@pytest.fixture
def silent_listener():
  """A TCP listener on 127.0.0.1 that accepts connections and never answers: its address."""
  with socket.socket() as listener:
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield f"grpc://127.0.0.1:{listener.getsockname()[1]}"


def test_an_address_that_never_serves_ends_the_run_in_bounded_time_in_one_line(
    config, tmp_path, silent_listener):
  config.input.data_service_address = silent_listener
  config.input.data_service_timeout_seconds = 2.0
  start = time.time()
  with pytest.raises(errors.ConfigError, match="accepts connections but served nothing in 2 s "
                                               "\\(input.data_service_timeout_seconds\\)") as error:
    train.train_and_evaluate(config, str(tmp_path / "workdir"))
  assert time.time() - start < 30
  assert "\n" not in str(error.value) and silent_listener in str(error.value)
  assert "--worker --dispatcher_address" in str(error.value)
  assert not (tmp_path / "workdir").exists()


def test_a_stop_signal_during_the_wait_for_the_service_is_preempted(silent_listener):
  timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
  timer.start()
  start = time.time()
  with pytest.raises(errors.Preempted, match="stopped on SIGTERM's request while waiting for "
                                             "the tf.data service") as error:
    data_service.check_serving(silent_listener, timeout_seconds=120)
  assert time.time() - start < 10 and error.value.exit_code == 75


def test_a_dispatcher_with_workers_passes_the_check_at_once(service):
  start = time.time()
  data_service.check_serving(service, timeout_seconds=60)
  assert time.time() - start < 30


@pytest.mark.parametrize("value", [0, -1.0, float("inf"), float("nan")])
def test_a_bad_service_timeout_is_one_line(config, value, tmp_path):
  config.input.data_service_timeout_seconds = value
  with pytest.raises(errors.ConfigError, match="input.data_service_timeout_seconds=.* must be a "
                                               "finite number of seconds > 0"):
    train.train_and_evaluate(config, str(tmp_path / "workdir"))


@pytest.mark.slow  # A trainer process.
def test_sigterm_while_a_trainer_waits_for_a_silent_service_exits_75(tmp_path, silent_listener):
  log_path = tmp_path / "trainer.log"
  with open(log_path, "w") as log:
    process = subprocess.Popen(
        [sys.executable, "-m", "trainer.main", "--config=configs/test.py",
         f"--workdir={tmp_path / 'workdir'}",
         f"--config.input.data_service_address={silent_listener}"],
        cwd=REPO_ROOT, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"), stdout=log,
        stderr=subprocess.STDOUT)
  try:
    deadline = time.time() + 120
    while "Waiting up to 120 s for the tf.data service" not in log_path.read_text():
      assert time.time() < deadline and process.poll() is None, log_path.read_text()[-3000:]
      time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 75
  finally:
    process.kill()
  assert re.match(f"dae-trainer: stopped on SIGTERM's request while waiting for the tf.data "
                  f"service at {silent_listener} to serve", log_path.read_text().splitlines()[-1])
  assert not (tmp_path / "workdir").exists()
