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
status 1, with no traceback unless --verbosity=1, and writes nothing. A stop
signal (SIGTERM, Ctrl-C's SIGINT, SIGHUP) ends its worker processes and the
evaluation with one line and exit status 128 + the signal's number (143, 130,
129); the workers also end if it is killed (kill -9).
"""

import os
import sys

from trainer import logs

if __name__ == "__mp_main__":
  # A worker process: spawn starts it by importing this module under this name. It ends with
  # its parent from here on, and imports nothing more of this module (TensorFlow least of
  # all: seconds of CPU and hundreds of MiB per worker).
  from trainer.evaluation import parallel as worker_lifeline  # pylint: disable=g-import-not-at-top
  worker_lifeline.die_with_parent(os.getppid())

# pylint: disable=wrong-import-position
from absl import flags
from ml_collections import config_flags

import configs

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
# on a misspelled key. `cli.run` passes _DEFAULT_CONFIG instead.
config_flags.DEFINE_config_file(
    "config", None, "Evaluation configuration file; default configs/evaluate.py.",
    lock_config=True)
_DEFAULT_CONFIG = os.path.join(os.path.dirname(configs.__file__), "evaluate.py")


def main(argv):
  del argv  # `cli.run` refuses positional arguments.
  logs.configure_python_logging()
  parallel.stop_on_signals()
  paths = loading.model_paths(_WORKDIR.value, _SAVED_MODEL.value)
  output_dir = _OUTPUT_DIR.value or loading.default_output_dir(_WORKDIR.value)
  runner.evaluate_and_report(flags.FLAGS.config, paths, output_dir, registry=_REGISTRY)


if __name__ == "__main__":
  # The evaluation's modules, TensorFlow with them, only here (not in the workers, see above).
  # Before TensorFlow is imported (it imports it): see trainer/logs.py.
  logs.silence_tensorflow_startup(sys.argv)
  # pylint: disable=g-import-not-at-top
  from trainer import cli
  try:
    from trainer.evaluation import loading
    from trainer.evaluation import parallel
    from trainer.evaluation import registry
    from trainer.evaluation import runner
    # The baselines and scorers the config picks from; imports their libraries now.
    _REGISTRY = registry.default_registry()
  except ModuleNotFoundError as missing:
    # scikit-learn, scipy, scikit-image, PyWavelets and bm3d come with the eval extra.
    sys.exit(f"dae-trainer evaluate: the evaluation needs {missing.name}, which is not installed; "
             "install the eval extra: pip install '.[eval]' (or 'dae-trainer[eval]').")
  cli.run(main, program="dae-trainer evaluate", default_config=_DEFAULT_CONFIG,
          config_fields="configs/evaluate.py", output_flag="--output_dir")
