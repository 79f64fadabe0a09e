"""ONNX and LiteRT exports: written at the end of training and from a finished workdir, run by
onnxruntime and the LiteRT interpreter, and equal to the SavedModel on noisy MNIST test images."""

import os
import shutil
import subprocess
import sys

from ai_edge_litert import interpreter as litert_interpreter
import numpy as np
import onnxruntime
import pytest
import tensorflow as tf

from configs import test as test_config
from configs import unet_s2d as unet_s2d_config
from input_pipeline import data_source
from input_pipeline import pipeline
from trainer import errors
from trainer import export
from trainer import models
from trainer import portable_export
from trainer import train
from tests.helpers import REPO_ROOT

# 300 images: one request above the SavedModel's slices of 256 (export.SERVING_CHUNK_SIZE).
_NUM_IMAGES = 300
_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def noisy_images():
  """The first 300 noisy MNIST test images, with the evaluation's own noise (float32 in [0, 1])."""
  config = test_config.get_config()
  config.eval_split = f"test[:{_NUM_IMAGES}]"
  noisy, _ = pipeline.first_eval_examples(data_source.create_data_source(config), config,
                                          _NUM_IMAGES)
  return noisy.numpy()


# The conv model's run and conversion: in make test-slow.
@pytest.fixture(scope="module", params=["dense", pytest.param("conv", marks=pytest.mark.slow)])
def exported_run(request, tmp_path_factory):
  """configs/test.py trained with export.formats=onnx,litert: (model type, workdir)."""
  config = test_config.get_config()
  config.model.type = request.param
  if request.param == "conv":
    config.train.max_steps = 8  # One chunk: the conversion, not the training, is tested.
  config.export.formats = "onnx,litert"
  workdir = str(tmp_path_factory.mktemp(request.param) / "workdir")
  train.train_and_evaluate(config, workdir)
  return request.param, workdir


def _saved_model_output(workdir, images):
  serving = tf.saved_model.load(os.path.join(workdir, "saved_model")).signatures[
      export.SERVING_ENDPOINT]
  return serving(images=tf.constant(images))["denoised"].numpy()


def _onnx_output(path, images):
  session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
  (model_input,) = session.get_inputs()
  assert model_input.name == portable_export.INPUT_NAME
  assert model_input.shape[1:] == [28, 28, 1] and model_input.type == "tensor(float)"
  return session.run(None, {model_input.name: images})[0]


def _litert_output(path, images):
  interpreter = litert_interpreter.Interpreter(model_path=path)
  (details,) = interpreter.get_input_details()
  assert list(details["shape_signature"]) == [-1, 28, 28, 1]
  assert details["dtype"] == np.float32
  interpreter.resize_tensor_input(details["index"], images.shape)
  interpreter.allocate_tensors()
  interpreter.set_tensor(details["index"], images)
  interpreter.invoke()
  return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


@pytest.mark.parametrize("batch_size", [100, _NUM_IMAGES])
def test_onnx_and_litert_match_the_saved_model(exported_run, noisy_images, batch_size):
  _, workdir = exported_run
  images = noisy_images[:batch_size]
  expected = _saved_model_output(workdir, images)
  base = os.path.join(workdir, "saved_model")
  for name, run in (("onnx", _onnx_output), ("litert", _litert_output)):
    denoised = run(base + portable_export.SUFFIXES[name], images)
    assert denoised.shape == (batch_size, 28, 28, 1), name
    difference = np.max(np.abs(denoised - expected))
    assert difference <= _TOLERANCE, f"{name}: max abs diff {difference}"
  # The outputs spread far wider than the tolerance, so matching within it means something.
  assert np.ptp(expected) > 1000 * _TOLERANCE


@pytest.mark.slow  # An export and two conversions: CI runs it in make test-slow.
def test_a_space_to_depth_unet_converts_with_its_pixel_blocks_in_place(noisy_images, tmp_path):
  """Its Reshape/Permute blocks survive both converters (configs/unet_s2d.py, untrained, narrow)."""
  config = unet_s2d_config.get_config()
  config.model.unet_filters = (8, 16)
  model = models.create_model(config.model, (28, 28, 1), seed=0)
  path = str(tmp_path / "saved_model")
  export.export_saved_model(model, path)
  paths = portable_export.export_formats(model, path, ("onnx", "litert"))
  images = noisy_images[:100]
  expected = _saved_model_output(str(tmp_path), images)
  np.testing.assert_allclose(expected, model(images), atol=_TOLERANCE)
  for name, run in (("onnx", _onnx_output), ("litert", _litert_output)):
    np.testing.assert_allclose(run(paths[name], images), expected, atol=_TOLERANCE, err_msg=name)


@pytest.mark.slow  # A training, an export and two conversions: CI runs it in make test-slow.
def test_a_finished_workdir_is_exported_from_its_saved_model(trained_run, noisy_images, tmp_path):
  workdir = str(tmp_path / "workdir")
  shutil.copytree(trained_run[0], workdir)
  paths, info = portable_export.export_workdir(workdir, ("onnx", "litert"))
  assert info["training_run"]["step"] == 32
  assert paths == {"onnx": os.path.join(workdir, "saved_model.onnx"),
                   "litert": os.path.join(workdir, "saved_model.tflite")}
  images = noisy_images[:100]
  expected = _saved_model_output(workdir, images)
  assert np.max(np.abs(_onnx_output(paths["onnx"], images) - expected)) <= _TOLERANCE
  assert np.max(np.abs(_litert_output(paths["litert"], images) - expected)) <= _TOLERANCE


@pytest.mark.slow  # A second TensorFlow process (about 10 s of CPU): CI runs it in make test-slow.
def test_the_command_exports_a_finished_workdir(trained_run, noisy_images, tmp_path):
  workdir = str(tmp_path / "workdir")
  shutil.copytree(trained_run[0], workdir)
  assert not os.path.exists(os.path.join(workdir, "saved_model.onnx"))
  result = subprocess.run(
      [sys.executable, "-m", "trainer.export_formats", f"--workdir={workdir}",
       "--formats=onnx,litert"],
      cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  lines = result.stdout.splitlines()
  assert [line.split(":")[0] for line in lines] == ["onnx", "litert"]
  assert "step 32" in lines[0]
  images = noisy_images[:100]
  expected = _saved_model_output(workdir, images)
  for name, run in (("onnx", _onnx_output), ("litert", _litert_output)):
    denoised = run(os.path.join(workdir, "saved_model" + portable_export.SUFFIXES[name]), images)
    assert np.max(np.abs(denoised - expected)) <= _TOLERANCE, name


def test_a_workdir_without_a_model_is_one_line(tmp_path):
  with pytest.raises(errors.ConfigError, match="train it first"):
    portable_export.export_workdir(str(tmp_path), ("onnx",))


@pytest.mark.parametrize("value, expected", [
    ("", ()), ("onnx", ("onnx",)), ("litert, onnx", ("litert", "onnx")),
    ("onnx,onnx", ("onnx",)), (("litert",), ("litert",))])
def test_parse_formats(value, expected):
  assert portable_export.parse_formats(value) == expected


def test_an_unknown_format_is_a_config_error_before_training(config, tmp_path):
  config.export.formats = "onnx,torchscript"
  with pytest.raises(errors.ConfigError, match="unknown export format.*'torchscript' in "
                     "export.formats='onnx,torchscript'"):
    train.train_and_evaluate(config, str(tmp_path / "workdir"))
  assert not os.path.exists(tmp_path / "workdir" / "config.json")


def test_a_missing_converter_names_the_extra(monkeypatch):
  monkeypatch.setattr(portable_export.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(errors.ConfigError, match=r"tf2onnx.*\.\[export\]"):
    portable_export.parse_formats("onnx")
  assert portable_export.parse_formats("litert") == ("litert",)
