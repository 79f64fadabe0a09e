"""tf.data service: an in-process dispatcher and two workers on localhost feed a run that
learns, one epoch through the service holds every training image once, and a dead
dispatcher is a one-line config error, not a hang."""

import gc
import json
import os
import socket
import time

import numpy as np
import pytest
import tensorflow as tf

from input_pipeline import data_source
from input_pipeline import pipeline
from trainer import errors
from trainer import train
from trainer import workdir as workdir_lib


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
