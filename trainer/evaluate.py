"""Command-line entry point: `python -m trainer.evaluate --workdir=DIR` (or `--saved_model=PATH`).

Scores exported SavedModels against classical baselines under several noise
types and levels (trainer/evaluation/) and writes report.json, report.md,
plots and TensorBoard events to --output_dir (default
`<first workdir>/eval`).
The only module of the evaluation that defines flags; the config is
configs/evaluate.py, any field overridable, e.g. `--config.num_examples=1000`.
The classical baselines run in one worker process per core
(`--config.num_workers`) and their results are cached for the next
evaluation in ~/.cache/dae-trainer/evaluation (`--config.cache_dir`;
`--config.use_cache=false` ignores the cache): see docs/evaluation.md.

Every expected failure (a bad flag, config or SavedModel, unusable data or
output directory) ends with one line starting "dae-trainer evaluate:" and exit
status 1, with no traceback unless --verbosity=1, and writes nothing.
"""

import os
import re
import sys

from trainer import logs

# Before TensorFlow is imported: see trainer/logs.py.
logs.silence_tensorflow_startup(sys.argv)

# pylint: disable=wrong-import-position
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags
import tensorflow as tf

import configs
from input_pipeline import data_source

try:
  # pylint: disable=g-import-not-at-top
  from trainer.evaluation import loading
  from trainer.evaluation import runner
  from trainer.evaluation import settings
except ModuleNotFoundError as missing:
  # scikit-learn, scipy, scikit-image, PyWavelets and bm3d come with the eval extra.
  sys.exit(f"dae-trainer evaluate: the evaluation needs {missing.name}, which is not installed; "
           "install the eval extra: pip install '.[eval]' (or 'dae-trainer[eval]').")

_WORKDIR = flags.DEFINE_multi_string(
    "workdir", [], "A workdir trained by trainer.main; its saved_model/ is evaluated, named "
    "after the workdir. Repeatable.")
_SAVED_MODEL = flags.DEFINE_multi_string(
    "saved_model", [], "A SavedModel to evaluate, as NAME=PATH or PATH (named after its "
    "folder). Repeatable.")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", None,
    "Where the report goes (local or gs://); default <first workdir>/eval.")
# No default here: config_flags would load a default file, and apply the
# --config.* overrides, when this module is imported, failing with a traceback
# on a misspelled key. `parse_flags` passes _DEFAULT_CONFIG instead.
config_flags.DEFINE_config_file(
    "config", None, "Evaluation configuration file; default configs/evaluate.py.",
    lock_config=True)
_DEFAULT_CONFIG = os.path.join(os.path.dirname(configs.__file__), "evaluate.py")

_PREFIX = "dae-trainer evaluate"


def _fail(message: str):
  """Ends the process with `message` as its last line; the traceback only at --verbosity>=1."""
  if logging.get_verbosity() >= logging.DEBUG:
    logging.exception("%s failed:", _PREFIX)
  print(f"{_PREFIX}: {' '.join(message.split())}", file=sys.stderr, flush=True)
  sys.exit(1)


def parse_flags(argv: list[str]) -> list[str]:
  """Parses flags and loads the config (default configs/evaluate.py); errors exit in one line."""
  if not any(argument == "--config" or argument.startswith("--config=") for argument in argv):
    argv = [argv[0], f"--config={_DEFAULT_CONFIG}", *argv[1:]]
  try:
    remaining = flags.FLAGS(argv)
    flags.FLAGS.config.lock()  # Loads the file now, if loading was deferred.
  except flags.Error as error:
    _fail(f"{error}. Pass --helpshort to see the flags.")
  except (AttributeError, KeyError) as error:
    # config_flags reports an unknown --config.* key this way.
    text = re.sub(r"[\\'\"]", "", re.sub(r"\\n|\n", ". ", str(error)))
    _fail(f"unknown config key in a --config.* override ({text}); valid keys are the fields "
          "of configs/evaluate.py.")
  except Exception as error:  # pylint: disable=broad-except
    # A config file runs arbitrary Python: any error in it is the user's to fix.
    _fail(f"cannot load the config ({type(error).__name__}: {error}); check the --config path "
          "and that its get_config() runs.")
  return remaining


def main(argv):
  if len(argv) > 1:
    _fail(f"unexpected arguments {' '.join(argv[1:])}; every setting is a --flag.")
  logs.configure_python_logging()
  try:
    paths = loading.model_paths(_WORKDIR.value, _SAVED_MODEL.value)
    output_dir = _OUTPUT_DIR.value or loading.default_output_dir(_WORKDIR.value)
    runner.evaluate_and_report(flags.FLAGS.config, paths, output_dir)
  except (settings.EvaluationError, data_source.DatasetUnavailableError) as error:
    _fail(str(error))
  except (PermissionError, tf.errors.PermissionDeniedError) as error:
    _fail(f"cannot write the report ({type(error).__name__}: {error}); choose another "
          "--output_dir or fix its permissions.")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
