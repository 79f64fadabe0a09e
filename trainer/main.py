"""Command-line entry point: `python -m trainer.main --config=configs/default.py --workdir=DIR`.

The only module that defines flags. Any config field can be overridden, e.g.
`--config.train.num_epochs=5 --config.noise.type=masking`.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags
import tensorflow as tf

from trainer import train

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory (local or gs://) for checkpoints, summaries and reports.")
config_flags.DEFINE_config_file(
    "config", None, "Training configuration file, e.g. configs/default.py.",
    lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  logging.info("TensorFlow %s, config:\n%s", tf.__version__, flags.FLAGS.config)
  train.train_and_evaluate(flags.FLAGS.config, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
