"""What each pipeline step does, in plain Python: the components' bodies call these.

Each `*_step` takes the step's parameters (the config's overrides as JSON text:
a KFP dict parameter would turn every int into a float) and its KFP artifacts (anything with
`uri` and `metadata`; `log_metric` for metrics), does the work with the
project's own code, and writes its record twice: as the artifact's metadata
(what KFP's lineage and Vertex AI's console show) and as JSON at the
artifact's URI (exact numbers for the next step). Files are written through
`tf.io.gfile` at the URI, so an artifact on gs:// (Vertex AI) works as a
local one does.

- `data_step`: the dataset resolved and checked as training does
  (`data_source.create_data_source`), recorded with a digest of its files;
- `train_step`: `train.train_and_evaluate` in a workdir named by the config's
  hash under `workdir_root`, so a rerun with the same parameters resumes it;
- `evaluate_step`: the candidate and the model in service scored on the same
  fixed noisy test set, and the blessing rule (`blessing.decide`);
- `push_step`: reads the blessing itself; only a blessed model is pushed.
"""

import hashlib
import importlib.util
import json
import os
import sys

from trainer import errors
from trainer import logs

# Each step is a fresh process that starts here: TensorFlow's start-up notices
# would repeat in every step's output (a no-op where TensorFlow is loaded).
logs.silence_tensorflow_startup(sys.argv)

# pylint: disable=wrong-import-position
from absl import logging
import ml_collections
import tensorflow as tf

import configs
from input_pipeline import data_source
from trainer import config_lib
from trainer import export
from trainer import train
from trainer import validation
from trainer.pipeline import blessing
from trainer.pipeline import scores
from trainer.pipeline import serving
from trainer import workdir as workdir_lib
from trainer import fileio

# Under the workdir root: one training workdir per config (its hash's first characters).
_WORKDIR_HASH_LENGTH = 16
# Bytes read at a time when hashing the dataset's files.
_CHUNK_BYTES = 1 << 20


def resolve_config_path(path: str) -> str:
  """`path` if it exists, else the same file in the installed `configs` package.

  In the image and in a wheel install, configs/ is the installed package: a
  component started in another directory still finds configs/test.py.
  """
  if tf.io.gfile.exists(path):
    return path
  parts = os.path.normpath(path).split(os.sep)
  if parts[0] == "configs":
    installed = os.path.join(os.path.dirname(configs.__file__), *parts[1:])
    if os.path.exists(installed):
      return installed
  raise errors.ConfigError(
      f"config file {path} does not exist; pass a file of configs/, e.g. configs/default.py.")


def load_config(path: str, overrides: dict | None = None) -> ml_collections.ConfigDict:
  """The config of `path`'s get_config() with the dotted `overrides` applied, checked.

  Raises:
    errors.ConfigError: no such file, a file that does not load, an
      override of an unknown field or of the wrong type, or a bad value.
  """
  path = resolve_config_path(path)
  try:
    spec = importlib.util.spec_from_file_location("pipeline_config", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
  except Exception as error:  # pylint: disable=broad-except
    # A config file runs arbitrary Python: any error in it is the user's to fix.
    raise errors.ConfigError(f"cannot load the config file {path} ({error!r}).") from error
  # Locked as trainer.main locks it: a misspelled override fails here, naming the field.
  config.lock()
  for dotted_name, value in sorted((overrides or {}).items()):
    if isinstance(value, list):  # JSON (a pipeline parameter) has no tuples.
      value = tuple(value)
    config_lib.set_field(config, dotted_name, value, source="the pipeline's overrides")
  validation.validate_config(config)
  return config


def _write_record(artifact, record: dict) -> None:
  """The record as the artifact's metadata and as JSON at its URI."""
  fileio.write_json(artifact.uri, record)
  artifact.metadata.update(json.loads(json.dumps(record)))


def read_record(uri: str) -> dict:
  """The JSON record an earlier step wrote at `uri`."""
  return fileio.read_json(uri)


def _files_digest(paths) -> str:
  """sha256 over the files' names and bytes, in sorted order."""
  digest = hashlib.sha256()
  for path in sorted(paths):
    digest.update(os.path.basename(path).encode() + b"\0")
    with tf.io.gfile.GFile(path, "rb") as file:
      while chunk := file.read(_CHUNK_BYTES):
        digest.update(chunk)
  return digest.hexdigest()


def data_step(config_path: str, overrides: str, dataset) -> dict:
  """Resolves and checks the config's dataset; records name, version, split sizes, digest."""
  config = load_config(config_path, json.loads(overrides))
  data = data_source.create_data_source(config)
  info = data.builder.info
  split_names = sorted({split.split("[")[0] for split in (data.train_split, data.eval_split)})
  paths = [os.fspath(path) for name in split_names for path in info.splits[name].filepaths]
  record = {
      "dataset": data.name, "version": str(info.version), "data_dir": data.builder.data_dir,
      "train_split": data.train_split, "eval_split": data.eval_split,
      "num_train_examples": data.num_train_examples,
      "num_eval_examples": data.num_eval_examples,
      "files": [os.path.basename(path) for path in sorted(paths)],
      "sha256": _files_digest(paths),
  }
  _write_record(dataset, record)
  return record


def workdir_for(config: ml_collections.ConfigDict, workdir_root: str) -> str:
  """The training workdir of `config` under `workdir_root`: the same for the same config."""
  text = json.dumps(config.to_dict(), sort_keys=True, default=str)
  return os.path.join(workdir_root, hashlib.sha256(text.encode()).hexdigest()[
      :_WORKDIR_HASH_LENGTH])


def _copy_events(workdir: str, destination: str) -> None:
  """Copies the TensorBoard event files below `workdir` (not its checkpoints) to `destination`."""
  for directory, _, files in tf.io.gfile.walk(workdir):
    for name in files:
      if name.startswith("events.out.tfevents"):
        target = os.path.join(destination, os.path.relpath(directory, workdir))
        tf.io.gfile.makedirs(target)
        tf.io.gfile.copy(os.path.join(directory, name), os.path.join(target, name),
                         overwrite=True)


def train_step(config_path: str, overrides: str, workdir_root: str, dataset, model,
               metrics, tensorboard) -> dict:
  """Trains (or resumes) in the config's stable workdir; the SavedModel goes to `model`."""
  logging.info("Training on %s", read_record(dataset.uri))
  config = load_config(config_path, json.loads(overrides))
  workdir = workdir_for(config, workdir_root)
  dirs = workdir_lib.resolve(workdir, environ={}, saved_model=model.uri)
  train.train_and_evaluate(config, workdir, dirs)
  final = fileio.read_json(os.path.join(workdir, workdir_lib.METRICS_FILENAME))
  _copy_events(workdir, tensorboard.uri)
  for name, value in final.items():
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      metrics.log_metric(name, value)
  record = {"workdir": workdir, "saved_model": model.uri, "step": final["step"],
            "metrics": final}
  # The model artifact is the SavedModel's directory: its record is metadata only.
  model.metadata.update({"workdir": workdir, "step": final["step"]})
  return record


def _fingerprint(path: str) -> str | None:
  """The weights fingerprint a SavedModel's export record holds, or None."""
  try:
    return (export.read_export_info(path) or {}).get("weights_fingerprint")
  except errors.CorruptFileError:  # No record to compare.
    return None


def evaluate_step(config_path: str, overrides: str, serving_dir: str, min_psnr_db: float,
                  max_psnr_drop_db: float, extra_levels: list, dataset, model,
                  blessing_artifact) -> dict:
  """Scores the candidate and the model in service alike; blesses the candidate or not."""
  config = load_config(config_path, json.loads(overrides))
  serving.check_serving_dir(serving_dir)
  noise_type, level = config.noise.type, float(config.noise.factor)
  levels = [level, *(float(extra) for extra in extra_levels if float(extra) != level)]
  clean = scores.read_test_images(config)
  candidate = scores.score(model.uri, clean, noise_type, levels)
  in_service = serving.serving_version(serving_dir)
  serving_scores = (scores.score(in_service.path, clean, noise_type, levels)
                    if in_service else None)
  key = repr(level)
  same_weights = bool(in_service and _fingerprint(model.uri) is not None
                      and _fingerprint(model.uri) == _fingerprint(in_service.path))
  decision = blessing.decide(
      candidate[key], serving_scores[key] if serving_scores else None,
      min_psnr_db=min_psnr_db, max_psnr_drop_db=max_psnr_drop_db, same_weights=same_weights,
      serving_version=in_service.number if in_service else None)
  record = {
      "blessed": decision.blessed, "reason": decision.reason,
      "metric": "psnr_mean_db", "noise_type": noise_type, "level": level,
      "split": config.eval_split, "num_examples": int(len(clean)),
      "dataset_sha256": read_record(dataset.uri)["sha256"],
      "min_psnr_db": min_psnr_db, "max_psnr_drop_db": max_psnr_drop_db,
      "candidate": {"path": model.uri, "psnr_db": candidate},
      "serving": ({"version": in_service.number, "path": in_service.path,
                   "psnr_db": serving_scores} if in_service else None),
  }
  _write_record(blessing_artifact, record)
  return record


def push_step(serving_dir: str, model, blessing_artifact, pushed) -> dict:
  """Pushes the model as the next version if, and only if, its blessing says so."""
  judged = read_record(blessing_artifact.uri)
  if not judged["blessed"]:
    record = {"pushed": False, "version": None, "path": None,
              "reason": f"Nothing pushed. {judged['reason']}"}
  else:
    serving.check_serving_dir(serving_dir)
    version = serving.push(model.uri, serving_dir)
    record = {"pushed": True, "version": version.number, "path": version.path,
              "reason": f"Pushed version {version.number}. {judged['reason']}"}
  _write_record(pushed, record)
  return record
