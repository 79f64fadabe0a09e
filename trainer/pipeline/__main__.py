"""Command line of the pipeline: `python -m trainer.pipeline run|compile|submit ...`.

    # Locally, each step a subprocess (KFP's SubprocessRunner):
    python -m trainer.pipeline run --config=configs/test.py \\
        --pipeline_root=pipelines/root --serving_dir=serving/dae [--config.train.learning_rate=0]
    # The YAML that Vertex AI Pipelines runs, on the project's image:
    python -m trainer.pipeline compile --image=IMAGE --output=dae_pipeline.yaml
    # A Vertex AI PipelineJob (scripts/submit_pipeline.sh wraps this); --dry_run prints it:
    python -m trainer.pipeline submit --config=configs/default.py --image=IMAGE \\
        --project=P --pipeline_root=gs://B/pipeline --serving_dir=gs://B/serving/dae --dry_run

The only module of the pipeline that defines flags. The config and its
`--config.*` overrides are those of trainer.main; they become the pipeline's
parameters. Every expected failure ends with one line starting
"dae-trainer:" and exit status 1, before any step runs.
"""

import datetime
import json
import os
import re
import sys
import tempfile

from trainer import errors
from trainer import logs

logs.silence_tensorflow_startup(sys.argv)

# pylint: disable=wrong-import-position
from absl import flags
from ml_collections import config_flags

from trainer import cli
from trainer.pipeline import blessing
from trainer.pipeline import launch

COMMANDS = ("run", "compile", "submit")

config_flags.DEFINE_config_file(
    "config", None, "Training configuration file, e.g. configs/default.py.", lock_config=True)
_PIPELINE_ROOT = flags.DEFINE_string(
    "pipeline_root", None, "Where the steps' artifacts and the training workdirs go (run: a "
    "local directory; submit: gs://).")
_SERVING_DIR = flags.DEFINE_string(
    "serving_dir", None, "The model's base directory for TF Serving: pushes go to "
    "<serving_dir>/<version>/.")
_MIN_PSNR_DB = flags.DEFINE_float(
    "min_psnr_db", blessing.DEFAULT_MIN_PSNR_DB,
    "Blessing threshold: the candidate's PSNR (dB) on the noisy test set must reach it.")
_MAX_PSNR_DROP_DB = flags.DEFINE_float(
    "max_psnr_drop_db", blessing.DEFAULT_MAX_PSNR_DROP_DB,
    "Blessing tolerance: how far (dB) below the model in service the candidate may score.")
_EXTRA_LEVELS = flags.DEFINE_list(
    "extra_levels", [], "More noise levels (of the config's noise type) to score and record, "
    "e.g. 0.2,0.6; the blessing uses the config's own level.")
_IMAGE = flags.DEFINE_string("image", None, "compile, submit: the project's image (cloudbuild.yaml "
                             "builds it).")
_OUTPUT = flags.DEFINE_string("output", "dae_pipeline.yaml", "compile: the YAML file to write.")
_ACCELERATOR_TYPE = flags.DEFINE_string(
    "accelerator_type", "NVIDIA_TESLA_T4", "compile, submit: the train step's accelerator.")
_ACCELERATOR_COUNT = flags.DEFINE_integer(
    "accelerator_count", 1, "compile, submit: accelerators of the train step (0: CPUs only).")
_PROJECT = flags.DEFINE_string("project", "", "submit: the Google Cloud project.")
_REGION = flags.DEFINE_string("region", launch.DEFAULT_REGION, "submit: the Vertex AI region.")
_DISPLAY_NAME = flags.DEFINE_string("display_name", None, "submit: the PipelineJob's name "
                                    "(default dae-trainer-UTCTIME).")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "submit: print the PipelineJob; submit nothing.")


def _required(**values) -> None:
  for name, value in values.items():
    if not value:
      raise errors.ConfigError(f"--{name} is missing; see python -m trainer.pipeline --helpshort.")


def _config_and_overrides() -> tuple[str, dict]:
  _required(config=flags.FLAGS["config"].present)
  path = config_flags.get_config_filename(flags.FLAGS["config"])
  return path, dict(config_flags.get_override_values(flags.FLAGS["config"]))


def _levels() -> list[float]:
  try:
    return [float(level) for level in _EXTRA_LEVELS.value]
  except ValueError as error:
    raise errors.ConfigError(f"--extra_levels={','.join(_EXTRA_LEVELS.value)}: {error}; pass numbers, "
                             "e.g. --extra_levels=0.2,0.6.") from error


def _run() -> None:
  config_path, overrides = _config_and_overrides()
  _required(pipeline_root=_PIPELINE_ROOT.value, serving_dir=_SERVING_DIR.value)
  record = launch.run_locally(config_path, overrides, _PIPELINE_ROOT.value, _SERVING_DIR.value,
                              _MIN_PSNR_DB.value, _MAX_PSNR_DROP_DB.value, _levels())
  print(f"dae-trainer pipeline: {record['reason']}", flush=True)
  if record["pushed"]:
    print(f"dae-trainer pipeline: serving {record['path']}", flush=True)


def _compile() -> None:
  _required(image=_IMAGE.value)
  launch.compile_pipeline(_OUTPUT.value, _IMAGE.value, _ACCELERATOR_TYPE.value,
                          _ACCELERATOR_COUNT.value)
  print(f"dae-trainer pipeline: wrote {_OUTPUT.value}", flush=True)


def _submit() -> None:
  config_path, overrides = _config_and_overrides()
  _required(image=_IMAGE.value, project=_PROJECT.value, pipeline_root=_PIPELINE_ROOT.value,
            serving_dir=_SERVING_DIR.value)
  launch.check_cloud_inputs(config_path, overrides, _PIPELINE_ROOT.value, _SERVING_DIR.value,
                            _PROJECT.value, _MAX_PSNR_DROP_DB.value, reach=not _DRY_RUN.value)
  display_name = _DISPLAY_NAME.value or datetime.datetime.now(datetime.timezone.utc).strftime(
      "dae-trainer-%Y%m%d-%H%M%S")
  values = launch.parameters(config_path, overrides, _PIPELINE_ROOT.value, _SERVING_DIR.value,
                             _MIN_PSNR_DB.value, _MAX_PSNR_DROP_DB.value, _levels())
  with tempfile.TemporaryDirectory() as directory:
    template = os.path.join(directory, "dae_pipeline.yaml")
    launch.compile_pipeline(template, _IMAGE.value, _ACCELERATOR_TYPE.value,
                            _ACCELERATOR_COUNT.value)
    credentials = None
    if _DRY_RUN.value:
      # Anonymous credentials: the job is built and checked without a network call.
      import google.auth.credentials  # pylint: disable=import-outside-toplevel
      credentials = google.auth.credentials.AnonymousCredentials()
    job = launch.pipeline_job(template, display_name, _PIPELINE_ROOT.value, values,
                              _PROJECT.value, _REGION.value, credentials)
    if _DRY_RUN.value:
      print(json.dumps(job.to_dict(), indent=2, sort_keys=True), flush=True)
      return
    job.submit()
  print(f"dae-trainer pipeline: submitted {job.resource_name}", flush=True)


def main(argv):
  if len(argv) != 2 or argv[1] not in COMMANDS:
    raise errors.ConfigError(f"pass one command, {' | '.join(COMMANDS)}; got "
                             f"{' '.join(argv[1:])!r}.")
  logs.configure_python_logging()
  try:
    {"run": _run, "compile": _compile, "submit": _submit}[argv[1]]()
  except RuntimeError as error:  # A step failed; KFP printed its output above.
    # KFP colours the task names for a terminal.
    message = re.sub(r"\x1b\[[0-9;]*m", "", errors.describe(error))
    raise errors.UserError(
        f"the pipeline failed ({message}); the failing step's output is above.") from error


if __name__ == "__main__":
  # The command is the one positional argument; --config is optional (compile needs none).
  cli.run(main, positional_arguments=1)
