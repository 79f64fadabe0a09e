"""Data source: bundled offline MNIST, TFDS_DATA_DIR first, clear errors for bad or missing datasets."""

import os
import shutil
import subprocess
import sys

import pytest
import requests
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download import downloader as tfds_downloader

from input_pipeline import data_source
from trainer import errors
from tests.helpers import REPO_ROOT



def test_bundled_mnist_is_prepared_and_complete():
  builder = tfds.builder("mnist", data_dir=data_source.BUNDLED_DATA_DIR)
  assert builder.is_prepared()
  assert str(builder.version) == "3.0.1"
  assert builder.info.splits["train"].num_examples == 60_000
  assert builder.info.splits["test"].num_examples == 10_000


def _builder_data_dir_in_subprocess(env_data_dir, config_data_dir=None):
  """Resolves mnist in a fresh process: TFDS reads TFDS_DATA_DIR at import."""
  env = dict(os.environ)
  env.pop("TFDS_DATA_DIR", None)
  if env_data_dir:
    env["TFDS_DATA_DIR"] = env_data_dir
  code = ("from input_pipeline import data_source; "
          f"print(data_source.get_builder('mnist', {config_data_dir!r}).data_dir)")
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=True)
  return result.stdout.strip().splitlines()[-1]


def test_empty_tfds_data_dir_falls_back_to_the_bundled_copy(tmp_path):
  data_dir = _builder_data_dir_in_subprocess(str(tmp_path / "empty"))
  assert data_dir.startswith(data_source.BUNDLED_DATA_DIR)


@pytest.mark.slow  # A fresh Python process: CI runs it in make test-slow.
def test_prepared_tfds_data_dir_takes_precedence_over_the_bundle(tmp_path):
  prepared = tmp_path / "tfds"
  shutil.copytree(os.path.join(data_source.BUNDLED_DATA_DIR, "mnist"), prepared / "mnist")
  assert _builder_data_dir_in_subprocess(str(prepared)).startswith(str(prepared))


@pytest.mark.slow  # A fresh Python process: CI runs it in make test-slow.
def test_config_data_dir_is_used_as_given(tmp_path):
  prepared = tmp_path / "tfds"
  shutil.copytree(os.path.join(data_source.BUNDLED_DATA_DIR, "mnist"), prepared / "mnist")
  data_dir = _builder_data_dir_in_subprocess(None, config_data_dir=str(prepared))
  assert data_dir.startswith(str(prepared))


def test_unknown_dataset_is_rejected():
  with pytest.raises(ValueError, match="Unknown TFDS dataset 'not_a_dataset'"):
    data_source.get_builder("not_a_dataset", None)


def test_other_image_shapes_are_rejected_with_the_shape(tmp_path):
  with pytest.raises(ValueError, match=r"images of shape \(32, 32, 3\)"):
    data_source.get_builder("cifar10", str(tmp_path))


def test_other_28x28x1_datasets_are_accepted(tmp_path):
  for name in ("fashion_mnist", "kmnist", "emnist/digits"):
    builder = data_source.get_builder(name, str(tmp_path))
    assert builder.info.features["image"].shape == (28, 28, 1)


def test_unavailable_dataset_error_says_how_to_fix_it(tmp_path, monkeypatch):
  # A real failed download takes minutes of retries here (no internet), so the
  # download itself is replaced by the error it ends with.
  retries_during_download = []

  def offline_download(self, *args, **kwargs):
    del self, args, kwargs
    retries_during_download.append(tfds_downloader.MAX_RETRIES)
    # What a failed download leaves behind, to be cleaned up.
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / "train-images.tmp.123").write_bytes(b"partial")
    (tmp_path / "fashion_mnist" / "3.0.1.incomplete7").mkdir(parents=True)
    raise requests.exceptions.ConnectionError(
        "Max retries exceeded with url: /train-images-idx3-ubyte.gz")

  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline_download)
  builder = data_source.get_builder("fashion_mnist", str(tmp_path))
  with pytest.raises(errors.DatasetUnavailableError) as error:
    data_source.ensure_prepared(builder)
  # Few retries (TFDS's own 10 take about 3.5 minutes offline), restored after.
  assert retries_during_download == [2] and tfds_downloader.MAX_RETRIES == 10
  assert not (tmp_path / "downloads" / "train-images.tmp.123").exists()
  assert not (tmp_path / "fashion_mnist" / "3.0.1.incomplete7").exists()
  message = str(error.value)
  assert "'fashion_mnist' is not prepared in" in message and str(tmp_path) in message
  assert "ConnectionError" in message
  assert "tfds build fashion_mnist --data_dir=DIR" in message
  assert "downloads/manual" in message
  assert "\n" not in message


def test_an_unprepared_dataset_is_prepared_before_its_splits_are_read(tmp_path, monkeypatch,
                                                                      config):
  """Its metadata has no splits until prepared: the download must come first."""
  def offline_download(self, *args, **kwargs):
    del self, args, kwargs
    raise requests.exceptions.ConnectionError("Max retries exceeded")

  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", offline_download)
  config.dataset, config.data_dir = "fashion_mnist", str(tmp_path)
  with pytest.raises(errors.DatasetUnavailableError, match="'fashion_mnist' is not "
                                                                "prepared in"):
    data_source.create_data_source(config)
