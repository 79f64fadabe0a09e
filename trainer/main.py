"""Command-line entry point: `python -m trainer.main --config=configs/default.py --workdir=DIR`.

The only module that defines flags. Any config field can be overridden, e.g.
`--config.train.num_epochs=5 --config.noise.type=masking`.

Every expected failure (a bad config file, override or flag, unusable data or
workdir, a corrupt file of an earlier run, a full disk, a tensor too large for
memory, a lost worker, a non-finite loss)
ends with one line starting "dae-trainer:" and exit status 1, with no
traceback unless --verbosity=1. SIGTERM, SIGINT (Ctrl-C) and SIGHUP save a
checkpoint and exit with `errors.PREEMPTED_EXIT_CODE` (75); see
`trainer/preemption.py`. `cli.run` does the parsing and the one-line
failures, the same for every tool of the project.
"""

import sys

from trainer import logs
from trainer import preemption

if __name__ == "__main__":
  # SIGTERM, SIGINT and SIGHUP are stop requests from here on (exit 75), also
  # during the seconds TensorFlow takes to import; the training loop handles
  # them itself while it runs.
  preemption.exit_on_stop_requests()
# Before TensorFlow is imported (here, and by the imports below): its C++
# runtime reads TF_CPP_MIN_LOG_LEVEL once, at load time.
logs.silence_tensorflow_startup(sys.argv)

# pylint: disable=wrong-import-position
from absl import flags
from absl import logging
from ml_collections import config_flags
import tensorflow as tf

from trainer import cli
from trainer import train
from trainer.cloud import hypertune

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory (local or gs://) for checkpoints, summaries and reports.")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change", False,
    "Resume a workdir trained with other settings (learning rate, noise, ...); the new "
    "values take effect and the change is recorded in config_history.json.")
config_flags.DEFINE_config_file(
    "config", None, "Training configuration file, e.g. configs/default.py.",
    lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv  # `cli.run` refuses positional arguments.
  logs.configure_python_logging()
  logging.info("dae-trainer: TensorFlow %s, config %s, %s (the full config goes to "
               "config.json in the workdir).", tf.__version__,
               config_flags.get_config_filename(flags.FLAGS["config"]),
               logs.format_overrides(config_flags.get_override_values(flags.FLAGS["config"])))
  # A Vertex AI tuning trial trains in <workdir>/<trial id> (see hypertune.trial_workdir).
  train.train_and_evaluate(flags.FLAGS.config, hypertune.trial_workdir(_WORKDIR.value),
                           allow_config_change=_ALLOW_CONFIG_CHANGE.value)


if __name__ == "__main__":
  cli.run(main)
