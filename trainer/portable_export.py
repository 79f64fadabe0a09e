"""The trained denoiser as ONNX and LiteRT (TFLite) files, for runtimes outside TensorFlow.

`export_formats(model, saved_model_path, formats)` writes, next to the
SavedModel's directory and named after it (`saved_model.onnx`,
`saved_model.tflite` in a workdir):

- `onnx`: through Keras's own exporter (`model.export(..., format="onnx")`,
  which runs tf2onnx on the model's forward pass);
- `litert`: through Keras's LiteRT exporter (TensorFlow's TFLite converter),
  restricted to LiteRT's builtin ops, so the file runs in the plain LiteRT
  interpreter (`ai-edge-litert`) without TensorFlow's Select ops.

Both take one input, `images` float32 [N, 28, 28, 1] with values in [0, 1], N
any batch size (ONNX: a dynamic first dimension; LiteRT: shape [1, 28, 28, 1]
with signature [-1, 28, 28, 1], resized by the client), and give the denoised
images, float32 [N, 28, 28, 1]. Only the denoiser (the SavedModel's
`serving_default`) is exported: not `encode`, not `serving_uint8`.

The SavedModel's signatures cannot be converted as they are: their unknown-rank
input, in-graph asserts and slicing loop (trainer/export.py) are what these
converters reject or drop. So the files are converted from the Keras model
itself, with a static signature: what a client must check itself is in
docs/reliability.md ("ONNX and LiteRT").

`export_workdir(workdir, formats)` does the same for a finished workdir: the
model is rebuilt from its config.json and given the SavedModel's own weights,
checked against the fingerprint recorded in the export.
"""

import importlib.util
import os
import tempfile

from absl import logging
import keras
import ml_collections
import tensorflow as tf

from input_pipeline import data_source
from trainer import checkpoints
from trainer import errors
from trainer import export
from trainer import models
from trainer import run_files

# Format name -> the file suffix appended to the SavedModel's path.
SUFFIXES = {"onnx": ".onnx", "litert": ".tflite"}
# What each format's converter needs beyond TensorFlow and Keras (pip package, module).
_CONVERTERS = {"onnx": ("tf2onnx", "tf2onnx")}
INPUT_NAME = "images"
# Written first, then renamed into place (the workdir's stale-temporary suffix).
_TEMPORARY_SUFFIX = ".tmp"


def parse_formats(value, name_in_errors: str = "export.formats") -> tuple[str, ...]:
  """`export.formats` ('onnx,litert', a list, or '' for none) as a tuple of format names.

  `name_in_errors` is what the errors call the value (a config field or a flag).

  Raises:
    errors.ConfigError: an unknown format, or one whose converter is not installed.
  """
  names = value.split(",") if isinstance(value, str) else list(value or ())
  formats = tuple(dict.fromkeys(name.strip() for name in names if name.strip()))
  unknown = [name for name in formats if name not in SUFFIXES]
  if unknown:
    raise errors.ConfigError(
        f"unknown export format(s) {', '.join(map(repr, unknown))} in "
        f"{name_in_errors}={value!r}; choose from "
        f"{', '.join(SUFFIXES)}, comma-separated (e.g. onnx,litert), or nothing for none.")
  for name in formats:
    package, module = _CONVERTERS.get(name, (None, None))
    if module and importlib.util.find_spec(module) is None:
      raise errors.ConfigError(
          f"the {name} export needs the {package} package, which is not installed; "
          "pip install '.[export]' (or drop it from the formats).")
  return formats


def output_paths(saved_model_path: str, formats) -> dict[str, str]:
  """{format: file path}: beside the SavedModel's directory, named after it."""
  base = saved_model_path.rstrip("/")
  return {name: base + SUFFIXES[name] for name in formats}


def _convert(model: keras.Model, name: str, local_path: str) -> None:
  signature = [tf.TensorSpec([None, *model.input_shape[1:]], tf.float32, name=INPUT_NAME)]
  if name == "onnx":
    model.export(local_path, format="onnx", input_signature=signature, verbose=False)
  else:
    # Builtin ops only: Keras's default also allows Select TF ops, which the
    # plain LiteRT interpreter cannot run.
    model.export(local_path, format="litert", input_signature=signature, verbose=False,
                 target_spec={"supported_ops": [tf.lite.OpsSet.TFLITE_BUILTINS]})


def export_formats(model: keras.Model, saved_model_path: str, formats) -> dict[str, str]:
  """Writes `model` (float32, from `models.create_model`) in each format; returns the paths.

  A file of another format left beside the SavedModel by an earlier export is
  now older than the SavedModel: a warning names it.

  Each file is converted locally, then copied to a temporary name beside its
  destination and renamed into place, so `gs://` works and a destination holds
  either the previous complete file or the new one.
  """
  paths = output_paths(saved_model_path, formats)
  for name, path in paths.items():
    with tempfile.TemporaryDirectory() as local_dir:
      local_path = os.path.join(local_dir, "model" + SUFFIXES[name])
      _convert(model, name, local_path)
      temporary = path + _TEMPORARY_SUFFIX
      tf.io.gfile.copy(local_path, temporary, overwrite=True)
      tf.io.gfile.rename(temporary, path, overwrite=True)
    logging.info("Exported the model as %s to %s.", name, path)
  for name, path in output_paths(saved_model_path, SUFFIXES).items():
    if name not in formats and tf.io.gfile.exists(path):
      logging.warning("%s is from an earlier model than %s; rewrite it with python -m "
                      "trainer.export_formats --workdir=... --formats=%s, or delete it.",
                      path, saved_model_path, name)
  return paths


def load_workdir_model(workdir: str) -> tuple[keras.Model, dict]:
  """The workdir's exported model as a Keras model, and its export record (may be {}).

  Raises:
    errors.ConfigError: no config.json or SavedModel, or weights that do not fit.
  """
  saved_model_path = os.path.join(workdir, "saved_model")
  config = run_files.read_config(workdir)
  if config is None or not tf.io.gfile.exists(saved_model_path):
    raise errors.ConfigError(
        f"{workdir} has no config.json and saved_model/ of a finished run; train it first "
        f"(python -m trainer.main --config=configs/default.py --workdir={workdir}).")
  model = models.create_model(ml_collections.ConfigDict(config["model"]),
                              data_source.IMAGE_SHAPE, config.get("seed", 0))
  info = export.read_export_info(saved_model_path) or {}
  weights = [variable.numpy() for variable in tf.saved_model.load(saved_model_path).variables]
  try:
    model.set_weights(weights)
  except ValueError as error:
    raise errors.ConfigError(
        f"the SavedModel at {saved_model_path} does not hold the weights of the model in "
        f"{workdir}/config.json ({' '.join(str(error).split())[:200]}); export it again with "
        "trainer.main.") from error
  recorded = info.get("weights_fingerprint")
  if recorded and checkpoints.weights_fingerprint(model) != recorded:
    raise errors.ConfigError(
        f"the weights loaded from {saved_model_path} are not the ones its "
        f"{export.EXPORT_INFO_PATH} records ({recorded}); export it again with trainer.main.")
  return model, info


def export_workdir(workdir: str, formats) -> tuple[dict[str, str], dict]:
  """`export_formats` for the SavedModel of a finished workdir.

  Returns ({format: path}, the SavedModel's export record: step and weights).
  """
  workdir = workdir.rstrip("/")
  model, info = load_workdir_model(workdir)
  return export_formats(model, os.path.join(workdir, "saved_model"), formats), info
