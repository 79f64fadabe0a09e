"""Runs a hyperparameter tuning study on this machine: `python scripts/tune.py --study=FILE --root=DIR`.

  python scripts/tune.py --study=studies/dense_lr_latent.yaml --root=tuning/dense [--parallel=2]

The study file (studies/*.yaml; fields as a Vertex AI HyperparameterTuningJob's,
see trainer/tuning/study.py) is checked first: an unknown parameter id, a range
of the wrong type or a metric the trainer does not produce ends the command
with one line before any trial starts. Then each trial is a `trainer.main`
process in ROOT/trials/<id>/, up to --parallel at once (the study's
parallelTrialCount by default). Rerunning the same command resumes the study:
finished trials are kept. The table of trials and the best one go to
ROOT/study.md and ROOT/study.json (and are printed), HParams to ROOT/tensorboard/.
The same file runs on Vertex AI with `scripts/submit_vertex.sh --study=FILE`.
"""

import os
import signal
import sys

# The checkout this script is in, ahead of whichever the environment installed.
_REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPOSITORY)

# pylint: disable=wrong-import-position
from absl import app
from absl import flags

from trainer import errors
from trainer import logs
from trainer.tuning import study as study_lib

_STUDY = flags.DEFINE_string("study", None, "The study file (YAML).")
_ROOT = flags.DEFINE_string("root", None, "Directory of the study: trials, table, HParams.")
_PARALLEL = flags.DEFINE_integer("parallel", None,
                                 "Trials at once; default: the study's parallelTrialCount.")
_CHECK_ONLY = flags.DEFINE_bool("check_only", False, "Check the study file; run nothing.")
flags.mark_flags_as_required(["study", "root"])


def _stop(signal_number, frame):
  del frame
  raise KeyboardInterrupt(signal.Signals(signal_number).name)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  if _PARALLEL.value is not None and _PARALLEL.value < 1:
    sys.exit(f"tune: --parallel={_PARALLEL.value} must be >= 1")
  try:
    study = study_lib.load_study(_STUDY.value)
    # The values' checks import TensorFlow: quietly, and only for a well-formed study.
    logs.silence_tensorflow_startup(sys.argv)
    study_lib.check_against_config(study, _REPOSITORY)
    if _CHECK_ONLY.value:
      print(f"{_STUDY.value}: {len(study.parameters)} parameters, up to "
            f"{study.max_trial_count} trials; OK")
      return
    # Imported after the checks: Optuna and the trials are not needed to refuse a bad file.
    from trainer.tuning import local  # pylint: disable=import-outside-toplevel
    from trainer.tuning import report  # pylint: disable=import-outside-toplevel
    # SIGTERM as Ctrl-C: the running trials are stopped (they checkpoint) before the exit.
    signal.signal(signal.SIGTERM, _stop)
    study_report = local.run_study(study, os.path.abspath(_ROOT.value), _REPOSITORY,
                                   _PARALLEL.value)
  except errors.StudyError as error:
    sys.exit(f"tune: {error}")
  except KeyboardInterrupt:
    sys.exit("tune: stopped; the running trials saved checkpoints. Rerun the same command to "
             "continue the study.")
  print(report.markdown(study, study_report), end="")


if __name__ == "__main__":
  app.run(main)
