"""Command-line entry point: `python -m trainer.main --config=configs/default.py --workdir=DIR`.

The only module that defines flags. Any config field can be overridden, e.g.
`--config.train.num_epochs=5 --config.noise.type=masking`.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags
import tensorflow as tf

from input_pipeline import data_source
from trainer import strategy as strategy_lib
from trainer import train
from trainer import validation

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory (local or gs://) for checkpoints, summaries and reports.")
config_flags.DEFINE_config_file(
    "config", None, "Training configuration file, e.g. configs/default.py.",
    lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def parse_flags(argv: list[str]) -> list[str]:
  """Parses flags; a config override naming a field that does not exist exits with one line."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    raise SystemExit(f"FATAL Flags parsing error: {error}\n"
                     "Pass --helpshort or --helpfull to see help on flags.") from error
  except (AttributeError, KeyError) as error:
    # config_flags reports an unknown `--config.a.b` key this way.
    message = str(error).replace("\\n", ". ").replace("\\'", "").strip("'\" ")
    raise SystemExit(
        f"dae-trainer: unknown config key in a --config.* override: {message} "
        "Valid keys are the fields of configs/default.py.") from error


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  logging.info("TensorFlow %s, config:\n%s", tf.__version__, flags.FLAGS.config)
  try:
    train.train_and_evaluate(flags.FLAGS.config, _WORKDIR.value)
  except (validation.ConfigError, data_source.DatasetUnavailableError) as error:
    # Bad input, found before training starts: one line, no traceback.
    raise SystemExit(f"dae-trainer: {error}") from error
  except (strategy_lib.PeerLostError, FloatingPointError) as error:
    # The message already says what happened and what to do; the traceback
    # would only bury it.
    raise SystemExit(f"dae-trainer: {error}") from error


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
