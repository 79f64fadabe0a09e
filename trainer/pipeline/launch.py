"""Launching the pipeline: locally with KFP's SubprocessRunner, compiled for Vertex AI, submitted.

- `run_locally`: `kfp.local.init(runner=SubprocessRunner(use_venv=False))` and
  a call of the pipeline; each step runs as a subprocess of this interpreter
  (no cluster, no Docker), its artifacts under the pipeline root.
- `compile_pipeline`: the YAML (KFP's PipelineSpec) that Vertex AI Pipelines
  runs, every step on the project's image, training on an accelerator.
- `pipeline_job`: the `google.cloud.aiplatform.PipelineJob` of that YAML, built
  without a network call when given credentials (the dry run's anonymous ones).

Every input is checked here, before any step runs: a bad value ends the
command with one line and nothing written to the serving directory.
"""

import json
import os

from input_pipeline import storage
from trainer.pipeline import definition
from trainer.pipeline import serving
from trainer.pipeline import tasks
from trainer import errors
from trainer import workdir as workdir_lib

# Under the pipeline root: the training workdirs, one per config (see tasks.workdir_for).
WORKDIRS_DIRNAME = "workdirs"
# Vertex AI's region when none is given.
DEFAULT_REGION = "us-central1"


def parameters(config_path: str, overrides: dict, pipeline_root: str, serving_dir: str,
               min_psnr_db: float, max_psnr_drop_db: float, extra_levels) -> dict:
  """The pipeline's parameter values; the overrides as JSON text (exact ints and floats)."""
  return {"config": config_path, "overrides": json.dumps(overrides, sort_keys=True),
          "workdir_root": os.path.join(pipeline_root, WORKDIRS_DIRNAME),
          "serving_dir": serving_dir, "min_psnr_db": float(min_psnr_db),
          "max_psnr_drop_db": float(max_psnr_drop_db),
          "extra_levels": [float(level) for level in extra_levels]}


def _check_thresholds(max_psnr_drop_db: float) -> None:
  if max_psnr_drop_db < 0:
    raise errors.ConfigError(f"--max_psnr_drop_db={max_psnr_drop_db} is negative; pass 0 to push only a "
                             "model at least as good as the one in service, or a tolerance in dB.")


def run_locally(config_path: str, overrides: dict, pipeline_root: str, serving_dir: str,
                min_psnr_db: float, max_psnr_drop_db: float, extra_levels=()) -> dict:
  """Runs the pipeline here; returns the push step's record (pushed, version, path, reason).

  Raises:
    errors.ConfigError: a bad input, before any step.
    RuntimeError: a step failed (its output, printed above, says why).
  """
  tasks.load_config(config_path, overrides)
  _check_thresholds(max_psnr_drop_db)
  workdir_lib.check_workdir(pipeline_root, "--pipeline_root")
  if storage.is_remote(pipeline_root):
    raise errors.ConfigError(f"--pipeline_root={pipeline_root}: the local runner keeps its artifacts on "
                             "this machine; pass a local directory (gs:// roots are for Vertex AI: "
                             "scripts/submit_pipeline.sh).")
  serving.check_serving_dir(serving_dir)
  # Imported here: only a local run needs the runner.
  from kfp import local  # pylint: disable=import-outside-toplevel
  pipeline_root = os.path.abspath(pipeline_root)
  if not storage.is_remote(serving_dir):
    serving_dir = os.path.abspath(serving_dir)
  local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=pipeline_root)
  pipeline = definition.create_pipeline()
  task = pipeline(**parameters(os.path.abspath(tasks.resolve_config_path(config_path)),
                               overrides, pipeline_root, serving_dir, min_psnr_db,
                               max_psnr_drop_db, extra_levels))
  return tasks.read_record(task.output.uri)


def compile_pipeline(output_path: str, image: str, accelerator_type: str,
                     accelerator_count: int) -> None:
  """Writes the pipeline's YAML for Vertex AI Pipelines to `output_path`."""
  if not image.strip():
    raise errors.ConfigError("--image is empty; pass the image cloudbuild.yaml builds, e.g. "
                             "us-central1-docker.pkg.dev/PROJECT/dae-trainer/dae-trainer:latest")
  if accelerator_count < 0:
    raise errors.ConfigError(f"--accelerator_count={accelerator_count} is negative; pass 0 to train on "
                             "CPUs or the number of accelerators.")
  if accelerator_count and not accelerator_type:
    raise errors.ConfigError(f"--accelerator_count={accelerator_count} needs --accelerator_type, e.g. "
                             "NVIDIA_TESLA_T4.")
  from kfp import compiler  # pylint: disable=import-outside-toplevel
  compiler.Compiler().compile(
      definition.create_pipeline(image, accelerator_type, accelerator_count), output_path)


def check_cloud_inputs(config_path: str, overrides: dict, pipeline_root: str, serving_dir: str,
                       project: str, max_psnr_drop_db: float, reach: bool) -> None:
  """Raises errors.ConfigError naming the fix for a submission that cannot run; `reach`: try the buckets."""
  tasks.load_config(config_path, overrides)
  _check_thresholds(max_psnr_drop_db)
  if not project.strip():
    raise errors.ConfigError("--project is missing; pass --project=PROJECT_ID.")
  for flag, path in (("--pipeline_root", pipeline_root), ("--serving_dir", serving_dir)):
    if not path.startswith("gs://"):
      raise errors.ConfigError(f"{flag}={path!r} is not a Cloud Storage path; Vertex AI needs one like "
                               "gs://BUCKET/dae-trainer/pipeline.")
    if reach:
      workdir_lib.check_workdir(path, flag)


def pipeline_job(template_path: str, display_name: str, pipeline_root: str,
                 parameter_values: dict, project: str, region: str, credentials=None):
  """The aiplatform.PipelineJob of the compiled pipeline (caching left to each step's setting)."""
  from google.cloud import aiplatform  # pylint: disable=import-outside-toplevel
  return aiplatform.PipelineJob(
      display_name=display_name, template_path=template_path, pipeline_root=pipeline_root,
      parameter_values=parameter_values, project=project, location=region,
      credentials=credentials)
