"""Command-line entry point: a finished workdir's model as ONNX and LiteRT files.

    python -m trainer.export_formats --workdir=workdir/default --formats=onnx,litert

writes `saved_model.onnx` and `saved_model.tflite` beside the workdir's
`saved_model/`, from the SavedModel's own weights (trainer/portable_export.py),
and prints one line per file. Input `images` float32 [N, 28, 28, 1] in [0, 1];
what a client must check itself is in docs/reliability.md ("ONNX and LiteRT").
A bad flag or workdir ends with one line starting "dae-trainer:" and exit status 1.
"""

import sys

from trainer import logs

logs.silence_tensorflow_startup(sys.argv)

from absl import flags
import tensorflow as tf

from trainer import cli
from trainer import errors
from trainer import portable_export

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "A workdir trained by trainer.main (local or gs://), with saved_model/.")
_FORMATS = flags.DEFINE_string(
    "formats", "onnx,litert",
    f"Comma-separated formats to write: {', '.join(portable_export.SUFFIXES)}.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  del argv  # `cli.run` refuses positional arguments.
  logs.configure_python_logging()
  formats = portable_export.parse_formats(_FORMATS.value, "--formats")
  if not formats:
    raise errors.ConfigError("--formats is empty; pass e.g. --formats=onnx,litert.")
  paths, info = portable_export.export_workdir(_WORKDIR.value, formats)
  step = info.get("training_run", {}).get("step", "unknown")
  for name, path in paths.items():
    print(f"{name}: {path} ({tf.io.gfile.stat(path).length:,} bytes; step {step}, weights "
          f"{info.get('weights_fingerprint', 'unrecorded')}; input {portable_export.INPUT_NAME} "
          f"float32 [N, 28, 28, 1] in [0, 1])")


if __name__ == "__main__":
  cli.run(main)
