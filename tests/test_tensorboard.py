"""A real TensorBoard server on a finished workdir lists the run's scalar and image tags."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import tensorflow as tf
from tensorboard.plugins.hparams import metadata as hparams_metadata

from trainer import config_lib
from trainer import summaries

_TIMEOUT_SECONDS = 120


def _free_port():
  with socket.socket() as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


@pytest.fixture(scope="module")  # Both tests only read from one server: started once.
def tensorboard_url(trained_run):
  workdir, _, _ = trained_run
  port = _free_port()
  tensorboard = os.path.join(os.path.dirname(sys.executable), "tensorboard")
  process = subprocess.Popen(
      [tensorboard, "--logdir", workdir, "--host", "127.0.0.1", "--port", str(port)],
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  yield f"http://127.0.0.1:{port}"
  process.terminate()
  process.wait(timeout=30)


def _get_json(url):
  with urllib.request.urlopen(url, timeout=10) as response:
    return json.load(response)


def _wait_for(url, ready):
  """Polls `url` until `ready(json)`; TensorBoard loads event files in the background."""
  deadline = time.time() + _TIMEOUT_SECONDS
  last = None
  while time.time() < deadline:
    try:
      last = _get_json(url)
      if ready(last):
        return last
    except (urllib.error.URLError, ConnectionError):
      pass
    time.sleep(1)
  raise AssertionError(f"{url} did not become ready in {_TIMEOUT_SECONDS} s; last answer: {last}")


def test_tensorboard_lists_scalar_and_image_tags(tensorboard_url):
  scalars = _wait_for(f"{tensorboard_url}/data/plugin/scalars/tags",
                      lambda tags: "train" in tags and "eval" in tags)
  assert {"loss", "psnr", "learning_rate", "examples_per_second"} <= set(scalars["train"])
  assert {"loss", "mse", "psnr", "ssim"} <= set(scalars["eval"])

  images = _get_json(f"{tensorboard_url}/data/plugin/images/tags")
  assert "denoising/original_noisy_denoised" in images["eval"]
  texts = _get_json(f"{tensorboard_url}/data/plugin/text/tags")
  assert "config" in texts["."]

  image_list = _get_json(f"{tensorboard_url}/data/plugin/images/images?"
                         "run=eval&tag=denoising/original_noisy_denoised&sample=0")
  assert image_list and image_list[0]["step"] == 32


def test_tensorboard_shows_the_hparams_session(tensorboard_url, trained_run):
  _wait_for(f"{tensorboard_url}/data/plugin/scalars/tags", lambda tags: "eval" in tags)
  listing = _get_json(f"{tensorboard_url}/data/plugins_listing")
  assert listing["hparams"]["enabled"]
  request = urllib.request.Request(
      f"{tensorboard_url}/data/plugin/hparams/experiment", data=b"{}",
      headers={"Content-Type": "application/json", "X-TensorBoard-Feature-Flags": "{}"})
  with urllib.request.urlopen(request, timeout=10) as response:
    experiment = json.load(response)
  hparam_names = [info["name"] for info in experiment["hparamInfos"]]
  # The tab ticks the first five columns the server returns: what tells runs apart.
  assert hparam_names[:5] == ["model.type", "noise.factor", "noise.factor_range", "noise.type",
                              "train.learning_rate"]
  assert len(hparam_names) == len(set(hparam_names)) > 30  # Every config field.
  metric_tags = {info["name"]["tag"] for info in experiment["metricInfos"]}
  assert {"loss", "psnr", "ssim"} <= metric_tags
  # The table shows the run's final eval metrics in those columns.
  workdir, _, _ = trained_run
  with open(os.path.join(workdir, "metrics.json")) as file:
    final = json.load(file)
  request = urllib.request.Request(
      f"{tensorboard_url}/data/plugin/hparams/session_groups", data=json.dumps({
          "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE",
                              "STATUS_RUNNING"],
          "colParams": [], "startIndex": 0, "sliceSize": 10}).encode(),
      headers={"Content-Type": "application/json", "X-TensorBoard-Feature-Flags": "{}"})
  with urllib.request.urlopen(request, timeout=10) as response:
    (group,) = json.load(response)["sessionGroups"]
  values = {value["name"]["tag"]: value["value"] for value in group["metricValues"]}
  assert values.keys() == {"loss", "psnr", "ssim"}
  assert values["psnr"] == pytest.approx(final["psnr"], rel=1e-6)


def _hparams_experiment(workdir):
  """The hparams plugin's experiment, as written into the workdir's own event file."""
  for path in tf.io.gfile.glob(os.path.join(workdir, "events.out.tfevents*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.tag == hparams_metadata.EXPERIMENT_TAG:
          return hparams_metadata.parse_experiment_plugin_data(
              value.metadata.plugin_data.content)
  raise AssertionError(f"no hparams experiment in {workdir}'s event files")


def test_the_hparams_table_opens_on_what_tells_runs_apart(trained_run):
  workdir, config, _ = trained_run
  experiment = _hparams_experiment(workdir)
  names = [info.name for info in experiment.hparam_infos]
  assert names[:4] == ["model.type", "noise.type", "noise.factor", "noise.factor_range"]
  assert names[:len(summaries.LEADING_HPARAMS)] == list(summaries.LEADING_HPARAMS)
  # Every other config field is still declared, once.
  assert sorted(names) == sorted(config_lib.flatten_config(config))
  metrics = {info.name.tag: (info.name.group, info.display_name)
             for info in experiment.metric_infos}
  assert metrics["psnr"] == ("", "eval PSNR (dB)")
  assert {"loss", "ssim"} <= set(metrics)
  assert {info.name for info in experiment.hparam_infos if info.differs} == set(
      summaries.OPENING_HPARAMS)
