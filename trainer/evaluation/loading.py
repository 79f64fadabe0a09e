"""What the evaluation scores: the SavedModels (by name) and the clean test and tuning images.

Models are loaded through their serving signatures only, never training code,
so the evaluation scores exactly what is served. What trained a model comes
from the record inside its export (trainer/export.py), checked against the
weights actually loaded; only an export without one falls back to the
metrics.json and config.json next to saved_model/ (`training_run`).

A workdir may be in training while it is evaluated (its trainer holds
trainer.lock): its last complete export is scored, and the load is retried if
the trainer swaps in a new export meanwhile, so a model is never a mix of two.
"""

import dataclasses
import os
import re
import time

from absl import logging
import ml_collections
import numpy as np
import tensorflow as tf

from input_pipeline import data_source
from input_pipeline import pipeline
from trainer import checkpoints
from trainer import errors
from trainer.evaluation import baselines
from trainer.evaluation import scoring
from trainer import export
from trainer import workdir_lock
from trainer import fileio
from trainer import workdir as workdir_lib


# The default output directory inside the first workdir.
DEFAULT_OUTPUT_DIRNAME = "eval"



_MODEL_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


# While a trainer holds the workdir, its export can change during a load (it
# swaps in a new one with two renames, milliseconds apart): loads are tried
# this many times, this far apart, until the weights match the export's record.
_LOAD_ATTEMPTS = 5
_RETRY_SECONDS = 0.5


def model_paths(workdirs, saved_models) -> dict[str, str]:
  """{model name: SavedModel path} from the --workdir and --saved_model values, in order.

  A workdir's model is its `saved_model/`, named after the workdir. A
  --saved_model value is `NAME=PATH` or a plain path, named after its last
  folder (after its parent's for a path ending in `saved_model`).
  """
  named = []
  for workdir in workdirs or ():
    workdir = workdir.rstrip("/")
    named.append((os.path.basename(workdir),
                  os.path.join(workdir, workdir_lib.SAVED_MODEL_DIRNAME), workdir))
  for value in saved_models or ():
    name, separator, path = value.partition("=")
    if not separator or "/" in name:
      path = value.rstrip("/")
      name = os.path.basename(path)
      if name == workdir_lib.SAVED_MODEL_DIRNAME:
        name = os.path.basename(os.path.dirname(path)) or name
    named.append((name, path.rstrip("/"), value))
  if not named:
    raise errors.EvaluationError("No model to evaluate; pass --workdir=DIR (a workdir trained by "
                                 "trainer.main) or --saved_model=[NAME=]PATH, either repeatable.")
  paths = {}
  for name, path, given in named:
    check_model_name(name, given)
    if name in paths:
      raise errors.EvaluationError(
          f"Two models are named {name!r} ({paths[name]} and {path}); name them with "
          "--saved_model=NAME=PATH.")
    paths[name] = path
  return paths


def check_model_name(name: str, given: str | None = None) -> None:
  """Raises EvaluationError unless `name` can name a model (a report row, a TensorBoard run)."""
  if name in baselines.BASELINE_NAMES or name == scoring.RAW_PIXELS:
    problem = f"reserved (a baseline or {scoring.RAW_PIXELS})"
  elif not _MODEL_NAME.match(name):
    problem = "not made of letters, digits, _ . -"
  else:
    return
  raise errors.EvaluationError(
      f"{given or name!r} gives the model name {name!r}, which is {problem}; "
                        "choose another name with --saved_model=NAME=PATH.")


def default_output_dir(workdirs) -> str:
  """`<first workdir>/eval`; EvaluationError when there is no workdir to put it in.

  Not `<workdir>/eval`: trainer.main writes its TensorBoard eval run there.
  """
  if not workdirs:
    raise errors.EvaluationError("Pass --output_dir=DIR: without a --workdir there is no default "
                                 f"(<first workdir>/{DEFAULT_OUTPUT_DIRNAME}).")
  return os.path.join(workdirs[0].rstrip("/"), DEFAULT_OUTPUT_DIRNAME)


@dataclasses.dataclass(frozen=True)
class Model:
  """An exported model: `denoise` (serving_default) and `encode` on numpy batches.

  `training_run`: what trained the weights loaded (see `load_model`), or None.
  """
  name: str
  path: str
  loaded: object
  training_run: dict | None = None

  def _call(self, endpoint: str, output: str, images: np.ndarray,
            batch_size: int) -> np.ndarray:
    """The signature's `output` on `images`, in batches; EvaluationError unless all finite."""
    signature = self.loaded.signatures[endpoint]
    batches = []
    for start in range(0, len(images), batch_size):
      outputs = signature(images=tf.constant(images[start:start + batch_size]))
      if output not in outputs:
        raise errors.EvaluationError(
            f"The SavedModel at {self.path} (model {self.name!r}) returns {sorted(outputs)} from "
            f"its {endpoint} signature, not {output!r}; evaluate a model exported by "
            "trainer.main (trainer/export.py).")
      batches.append(outputs[output].numpy())
    values = np.concatenate(batches)
    # A NaN scores as "n/a" and an infinity breaks the probes: the model is unusable.
    bad = values.size - np.count_nonzero(np.isfinite(values))
    if bad:
      raise errors.EvaluationError(
          f"The SavedModel at {self.path} (model {self.name!r}) returned {bad} non-finite values "
          f"(NaN or infinity) of {values.size} from its {endpoint} signature, so it cannot be "
          "scored; check its training run (e.g. a non-finite loss) and export it again.")
    return values

  def denoise(self, images: np.ndarray, batch_size: int) -> np.ndarray:
    return self._call(export.SERVING_ENDPOINT, "denoised", images, batch_size)

  def encode(self, images: np.ndarray, batch_size: int) -> np.ndarray:
    return self._call(export.ENCODE_ENDPOINT, "latent", images, batch_size)


def training_run(saved_model_path: str) -> dict | None:
  """What trained a SavedModel, from the workdir around it (None if it is not in one).

  {"model_type", "num_parameters", "epochs", "step", "noise"}, read from the
  metrics.json and config.json that `trainer.main` writes next to saved_model/.
  """
  workdir = os.path.dirname(saved_model_path.rstrip("/"))
  paths = [os.path.join(workdir, name) for name in (workdir_lib.METRICS_FILENAME,
                                                      workdir_lib.CONFIG_FILENAME)]
  if not all(tf.io.gfile.exists(path) for path in paths):
    return None
  try:
    metrics, config = (fileio.read_json(path) for path in paths)
  except ValueError:  # Including errors.CorruptFileError: report without it.
    return None
  return {"model_type": config.get("model", {}).get("type"),
          "num_parameters": metrics.get("num_parameters"),
          "epochs": metrics.get("epochs"), "step": metrics.get("step"),
          "noise": config.get("noise")}


class _ExportChanged(errors.EvaluationError):
  """The export was missing, unloadable or not the one its record describes, maybe for a moment."""


def _load_once(name: str, path: str, trainer: str | None):
  """(the loaded SavedModel, its export record or None); _ExportChanged if inconsistent."""
  workdir = os.path.dirname(path) or "."
  if not tf.saved_model.contains_saved_model(path):
    if trainer:
      raise _ExportChanged(
          f"No SavedModel at {path} (model {name!r}) yet: {workdir} is being trained (PID "
          f"{trainer} holds {workdir_lib.LOCK_FILENAME}), and its trainer exports at the end of "
          "its run; evaluate then, or pass --saved_model=PATH of another export.")
    raise errors.EvaluationError(
        f"No SavedModel at {path} (model {name!r}); train first (python -m trainer.main "
        f"--config=configs/default.py --workdir={workdir}) or pass --saved_model=PATH of an "
        "exported model.")
  try:
    info = export.read_export_info(path)
    loaded = tf.saved_model.load(path)
  except (tf.errors.OpError, ValueError, OSError) as error:
    message = (f"Cannot load the SavedModel at {path} ({type(error).__name__}: "
               f"{' '.join(str(error).split())[:300]}); export it again with trainer.main.")
    if trainer:
      raise _ExportChanged(message) from error
    raise errors.EvaluationError(message) from error
  recorded = (info or {}).get("weights_fingerprint")
  variables = getattr(loaded, "variables", None)
  if recorded and variables is not None:
    found = checkpoints.arrays_fingerprint(variable.numpy() for variable in variables)
    if found != recorded:
      raise _ExportChanged(
          f"The SavedModel at {path} holds weights {found}, but its "
          f"{export.EXPORT_INFO_PATH} records {recorded}: it changed while it was loaded, "
          "or another writer replaced part of it; evaluate it again, or export it again.")
  return loaded, info


def _check_outputs(model: Model) -> None:
  """Runs both signatures on two blank images: a model with unusable outputs fails before any work."""
  blank = np.zeros((2, *data_source.IMAGE_SHAPE), np.float32)
  try:
    model.denoise(blank, len(blank))
    model.encode(blank, len(blank))
  except errors.EvaluationError:
    raise  # Already the one line (another output, or non-finite values).
  except (tf.errors.OpError, ValueError, TypeError) as error:
    raise errors.EvaluationError(
        f"The SavedModel at {model.path} (model {model.name!r}) cannot denoise or encode "
        f"[N, {', '.join(map(str, data_source.IMAGE_SHAPE))}] float32 images "
        f"({errors.describe(error)}); evaluate a model exported by trainer.main.") from error


def load_model(name: str, path: str) -> Model:
  """Loads the SavedModel at `path`; EvaluationError naming the path and the fix if unusable.

  If a trainer holds the workdir around `path`, an export that is missing,
  unloadable or changes during the load is tried again, `_LOAD_ATTEMPTS` times
  in all; one warning says that the workdir is in training and which step its
  export is from.
  """
  path = path.rstrip("/")
  workdir = os.path.dirname(path) or "."
  trainer = workdir_lock.holder(workdir)
  for attempt in range(1, _LOAD_ATTEMPTS + 1):
    try:
      loaded, info = _load_once(name, path, trainer)
      break
    except _ExportChanged:
      if not trainer or attempt == _LOAD_ATTEMPTS:
        raise
      time.sleep(_RETRY_SECONDS)
  missing = [endpoint for endpoint in (export.SERVING_ENDPOINT, export.ENCODE_ENDPOINT)
             if endpoint not in loaded.signatures]
  if missing:
    raise errors.EvaluationError(
        f"The SavedModel at {path} lacks the signature(s) {', '.join(missing)}; evaluate a "
        "model exported by trainer.main (trainer/export.py).")
  _check_outputs(Model(name, path, loaded))
  if info is not None:
    run = {**(info.get("training_run") or {}),
           "weights_fingerprint": info.get("weights_fingerprint")}
  else:
    # An export from before the record: the workdir's files describe it only if
    # no trainer is rewriting them.
    run = None if trainer else training_run(path)
  if trainer:
    step = (run or {}).get("step")
    logging.warning(
        "%s is being trained (PID %s holds %s): evaluating its last complete export, %s.",
        workdir, trainer, workdir_lib.LOCK_FILENAME,
        f"from step {step} (weights {run['weights_fingerprint']})" if step is not None else
        "which records no step (exported before exports recorded theirs)")
    run = {**(run or {}), "trainer_pid": trainer}
  return Model(name, path, loaded, run)


@dataclasses.dataclass(frozen=True)
class EvalData:
  """Clean images (float32 [N, 28, 28, 1] in [0, 1]) and labels of one evaluation.

  Attributes:
    test_images, test_labels: the images every method is scored on.
    tune_images: the training split's last examples, on which baselines are tuned.
    fit_images: the training examples just before those, for the Wiener filter.
    probe_images, probe_labels: the training split's first examples, for the
      representation probes.
    num_classes: label classes (k-means clusters); 0 when the dataset has no labels.
    splits: the TFDS split of each of the above.
    dataset_version: the TFDS dataset's version (part of the cached baselines' keys).
  """
  test_images: np.ndarray
  test_labels: np.ndarray | None
  tune_images: np.ndarray
  fit_images: np.ndarray
  probe_images: np.ndarray
  probe_labels: np.ndarray | None
  num_classes: int
  splits: dict[str, str]
  dataset_version: str = ""


def _read_split(builder, split: str, num_examples: int = 0):
  """(images float32 in [0, 1], labels or None) of `split`, its first `num_examples` if > 0."""
  dataset = builder.as_dataset(split=split, shuffle_files=False, read_config=pipeline.READ_CONFIG)
  if num_examples:
    dataset = dataset.take(num_examples)
  has_labels = "label" in builder.info.features
  images, labels = [], []
  for batch in dataset.batch(10_000).as_numpy_iterator():
    images.append(pipeline.scale_images(batch["image"]).numpy())
    if has_labels:
      labels.append(batch["label"])
  if not images:
    return np.zeros((0, *data_source.IMAGE_SHAPE), np.float32), None
  return np.concatenate(images), (np.concatenate(labels) if has_labels else None)


def load_data(config: ml_collections.ConfigDict) -> EvalData:
  """Reads the test images and the training examples for tuning, fitting and probing."""
  builder = data_source.get_builder(config.dataset, config.data_dir)
  data_source.ensure_prepared(builder)
  num_test = data_source.split_size(builder, config.split, "split")
  num_train = data_source.split_size(builder, config.train_split, "train_split")
  held_out = config.tuning_examples + config.wiener_fit_examples
  if held_out > num_train:
    raise errors.EvaluationError(
        f"tuning_examples + wiener_fit_examples = {held_out} exceeds the {num_train} examples "
        f"of train_split {config.train_split!r}; lower --config.tuning_examples or "
        "--config.wiener_fit_examples.")
  if num_test < 1:
    raise errors.EvaluationError(
        f"split {config.split!r} is empty; choose another --config.split.")
  num_examples = config.num_examples
  if num_examples > num_test:
    # Scored as the whole split, and reported as such (not as "first N").
    logging.warning("num_examples=%d is more than the %d images of split %r: scoring all %d.",
                    num_examples, num_test, config.split, num_test)
    num_examples = 0
  train = config.train_split
  tune_start = num_train - config.tuning_examples
  fit_start = tune_start - config.wiener_fit_examples
  probe_count = min(config.representation.train_examples, num_train)
  splits = {
      "test": config.split + (f" (first {num_examples})" if num_examples else ""),
      "tuning": f"{train}[{tune_start}:{num_train}]",
      "wiener_fit": f"{train}[{fit_start}:{tune_start}]",
      "representation_train": f"{train}[:{probe_count}]",
  }
  test_images, test_labels = _read_split(builder, config.split, num_examples)
  tune_images, _ = _read_split(builder, splits["tuning"])
  fit_images, _ = (_read_split(builder, splits["wiener_fit"]) if config.wiener_fit_examples
                   else (np.zeros((0, *data_source.IMAGE_SHAPE), np.float32), None))
  probe_images, probe_labels = (_read_split(builder, splits["representation_train"])
                                if probe_count else (test_images[:0], None))
  label = builder.info.features["label"] if "label" in builder.info.features else None
  return EvalData(test_images=test_images, test_labels=test_labels, tune_images=tune_images,
                  fit_images=fit_images, probe_images=probe_images, probe_labels=probe_labels,
                  num_classes=getattr(label, "num_classes", 0) or 0, splits=splits,
                  dataset_version=str(builder.info.version))
