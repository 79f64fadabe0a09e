"""Every path of a run, in one place: its directories, the file names in its workdir, their checks.

`resolve(workdir)` gives a run's `OutputDirs`: the workdir, unless the platform
names its own directories. Vertex AI custom jobs with a base output directory
set AIP_MODEL_DIR, AIP_CHECKPOINT_DIR and AIP_TENSORBOARD_LOG_DIR
(`<base>/model/`, `<base>/checkpoints/`, `<base>/logs/`); Vertex then finds the
SavedModel, the checkpoints and the TensorBoard events where it expects them.
Everything else (config.json, history.json, metrics.json, plots/) stays in the
workdir. `check_workdir` and `check_output_paths` refuse, before any work, a
workdir or an output path the run could not write.
"""

import dataclasses
import os
from typing import Mapping

import tensorflow as tf

from input_pipeline import storage
from trainer import checkpoints
from trainer import errors
from trainer import fileio

CHECKPOINT_DIRNAME = "checkpoints"
SAVED_MODEL_DIRNAME = "saved_model"
PLOTS_DIRNAME = "plots"
# The TensorBoard root's subdirectories: the scalars of each phase, and the eval images.
TRAIN_SUBDIRECTORY = "train"
EVAL_SUBDIRECTORY = "eval"
TENSORBOARD_SUBDIRECTORIES = (TRAIN_SUBDIRECTORY, EVAL_SUBDIRECTORY)
CONFIG_FILENAME = "config.json"
CONFIG_HISTORY_FILENAME = "config_history.json"
HISTORY_FILENAME = "history.json"
METRICS_FILENAME = "metrics.json"
LOSS_PLOT_FILENAME = "loss.png"
DENOISED_PLOT_FILENAME = "denoised.png"
# The chief's lock (a local workdir) and run marker (an object store's).
LOCK_FILENAME = "trainer.lock"
MARKER_FILENAME = "trainer.marker.json"

MODEL_DIR_VARIABLE = "AIP_MODEL_DIR"
CHECKPOINT_DIR_VARIABLE = "AIP_CHECKPOINT_DIR"
TENSORBOARD_DIR_VARIABLE = "AIP_TENSORBOARD_LOG_DIR"


@dataclasses.dataclass(frozen=True)
class OutputDirs:
  """The directories of one run, and the paths of the files it writes.

  Attributes:
    workdir: config.json, history.json, metrics.json and plots/.
    checkpoints: the chief's checkpoints, which every task restores from.
    tensorboard: TensorBoard root: hparams and config text here, scalars and
      images in its train/ and eval/ subdirectories.
    saved_model: the exported SavedModel (saved_model.pb directly inside).
  """
  workdir: str
  checkpoints: str
  tensorboard: str
  saved_model: str

  def file(self, name: str) -> str:
    """The path of the workdir's file `name` (one of the *_FILENAME constants)."""
    return os.path.join(self.workdir, name)

  @property
  def plots(self) -> str:
    return os.path.join(self.workdir, PLOTS_DIRNAME)

  def tensorboard_subdirectory(self, name: str) -> str:
    return os.path.join(self.tensorboard, name)

  def report_paths(self) -> list[str]:
    """The workdir's run files (config, history, metrics, plots), with their temporary names."""
    names = [CONFIG_FILENAME, CONFIG_HISTORY_FILENAME, HISTORY_FILENAME, METRICS_FILENAME,
             os.path.join(PLOTS_DIRNAME, LOSS_PLOT_FILENAME),
             os.path.join(PLOTS_DIRNAME, DENOISED_PLOT_FILENAME)]
    return [os.path.join(self.workdir, name + suffix) for name in names
            for suffix in ("", fileio.TEMPORARY_SUFFIX)]


def resolve(workdir: str, environ: Mapping[str, str] | None = None,
            saved_model: str | None = None) -> OutputDirs:
  """The run's directories: `workdir`'s own, or the AIP_* ones where set.

  Args:
    workdir: the --workdir.
    environ: environment to read (os.environ by default).
    saved_model: explicit SavedModel directory (e.g. TFX's serving_model_dir);
      wins over AIP_MODEL_DIR.
  """
  environ = os.environ if environ is None else environ
  return OutputDirs(
      workdir=workdir,
      checkpoints=(environ.get(CHECKPOINT_DIR_VARIABLE)
                   or os.path.join(workdir, CHECKPOINT_DIRNAME)),
      tensorboard=environ.get(TENSORBOARD_DIR_VARIABLE) or workdir,
      saved_model=(saved_model or environ.get(MODEL_DIR_VARIABLE)
                   or os.path.join(workdir, SAVED_MODEL_DIRNAME)),
  )


def check_workdir(workdir: str, flag: str = "--workdir") -> None:
  """Raises errors.ConfigError naming the fix if `workdir` cannot be a workdir.

  A local path: a file where the directory should be, or a directory (or its
  nearest existing parent) this process cannot write to. A non-local one
  (gs://...): it must take a small file within seconds (`storage.check_usable`).
  `flag` is the command-line flag that named the directory, for the message.
  """
  if not workdir.strip():
    # os.path.abspath("") is the current directory: the run would litter it.
    raise errors.ConfigError(
        f"{flag}={workdir!r} is empty; name a directory, e.g. {flag}=runs/dae.")
  if storage.is_remote(workdir):
    _check_object_name_length(workdir, flag)
    storage.check_usable(workdir, flag, writable=True)
    return
  path = os.path.abspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    raise errors.ConfigError(f"{flag}={workdir} is a file, not a directory; choose another {flag}.")
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  _check_path_length(workdir, path, existing, flag)
  if not os.path.isdir(existing):
    raise errors.ConfigError(f"{flag}={workdir} cannot be created: {existing} is a file; choose "
                             f"another {flag}.")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise errors.ConfigError(f"{flag}={workdir} cannot be written ({existing} is not writable by "
                             f"this user); choose another {flag} or fix its permissions.")


# Bytes of the longest path a run (or the evaluation) writes below its workdir,
# with room to spare: e.g. train/events.out.tfevents.<time>.<hostname, up to 64
# bytes>.<pid>.<n>.v2, or saved_model.tmp-<pid>-previous/variables/variables.data-00000-of-00001.
_LONGEST_PATH_BELOW_WORKDIR = 160
# Cloud Storage limits an object's name (the path after the bucket) to 1024 bytes.
_MAX_OBJECT_NAME_BYTES = 1024


def _check_path_length(workdir: str, path: str, existing: str, flag: str) -> None:
  """Raises errors.ConfigError if a name in `path` or a file below it would be too long to create.

  Checked before anything is created: os.makedirs would create the parents,
  then fail on the long name, leaving a partial tree.
  """
  name_max = os.pathconf(existing, "PC_NAME_MAX")
  for name in path.split(os.sep):
    if len(os.fsencode(name)) > name_max:
      raise errors.ConfigError(
          f"{flag}={workdir[:80]}... has a name of {len(os.fsencode(name))} bytes "
          f"({name[:40]}...); this filesystem allows {name_max} bytes per name: choose a "
          f"shorter {flag}.")
  path_max = os.pathconf(existing, "PC_PATH_MAX")
  if len(os.fsencode(path)) + _LONGEST_PATH_BELOW_WORKDIR > path_max:
    raise errors.ConfigError(
        f"{flag}={workdir[:80]}... is {len(os.fsencode(path))} bytes long (absolute); with "
        f"the files the run writes below it, paths would pass this system's {path_max}-byte "
        f"limit: choose a {flag} of at most {path_max - _LONGEST_PATH_BELOW_WORKDIR} bytes.")


def _check_object_name_length(workdir: str, flag: str) -> None:
  """Raises errors.ConfigError if objects below a gs:// workdir would have names too long for GCS."""
  if not workdir.startswith("gs://"):
    return
  object_name = workdir[len("gs://"):].partition("/")[2]
  limit = _MAX_OBJECT_NAME_BYTES - _LONGEST_PATH_BELOW_WORKDIR
  if len(object_name.encode()) > limit:
    raise errors.ConfigError(
        f"{flag}={workdir[:80]}...: its path after the bucket is {len(object_name.encode())} "
        f"bytes; Cloud Storage names are at most {_MAX_OBJECT_NAME_BYTES} bytes with the "
        f"files below it: choose a {flag} whose path is at most {limit} bytes.")


def check_path_kinds(directories, files, flag: str = "--workdir") -> None:
  """Raises errors.ConfigError naming the first of `directories` that is a file, or of `files`
  that is a directory.

  A run checks every path it will write before it starts: otherwise a
  metrics.json that is a directory shows only when the run ends, after all
  the training.
  """
  for path in directories:
    if tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path):
      raise errors.ConfigError(
          f"{path} is a file where the run writes a directory; move it away, or "
          f"choose another {flag}.")
  for path in files:
    if tf.io.gfile.isdir(path):
      raise errors.ConfigError(
          f"{path} is a directory where the run writes a file; move it away, or "
          f"choose another {flag}.")


def check_output_paths(dirs: OutputDirs) -> None:
  """Refuses a file where the run writes a directory, or the reverse, before any work.

  Each would otherwise show only when the run first writes there, for some
  after the training: the first checkpoint after an epoch, saved_model/,
  plots/ and metrics.json at the end.
  """
  check_path_kinds(
      directories=[dirs.checkpoints, dirs.saved_model, dirs.tensorboard, dirs.plots,
                   *(dirs.tensorboard_subdirectory(name) for name in TENSORBOARD_SUBDIRECTORIES)],
      files=[*dirs.report_paths(), *checkpoints.file_paths(dirs.checkpoints),
             dirs.file(LOCK_FILENAME)])
