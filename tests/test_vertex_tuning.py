"""The study file as a Vertex AI HyperparameterTuningJob (scripts/vertex_job.py --study,
submit_vertex.sh --study), checked offline against google-cloud-aiplatform's message types."""

import importlib.util
import json
import os
import pathlib
import shlex
import subprocess
import sys
import textwrap

from google.cloud.aiplatform_v1.types import HyperparameterTuningJob
from google.protobuf import json_format
import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent
STUDY = str(REPO / "studies" / "dense_lr_latent.yaml")
IMAGE = "us-central1-docker.pkg.dev/proj/dae-trainer/dae-trainer:v1"


def _load_vertex_job():
  spec = importlib.util.spec_from_file_location("vertex_job", REPO / "scripts" / "vertex_job.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


vertex_job = _load_vertex_job()


def _parse(spec):
  """The spec as the real message type; ParseDict rejects unknown fields and enum values."""
  return HyperparameterTuningJob.wrap(json_format.ParseDict(spec, HyperparameterTuningJob.pb()()))


def test_the_study_parses_as_a_hyperparameter_tuning_job():
  job = _parse(vertex_job.build_tuning_job_spec(STUDY, image=IMAGE, output_dir="gs://b/tune1"))
  assert job.display_name == "dense-lr-latent"
  assert (job.max_trial_count, job.parallel_trial_count, job.max_failed_trial_count) == (6, 2, 2)
  [metric] = job.study_spec.metrics
  assert metric.metric_id == "psnr" and metric.goal.name == "MAXIMIZE"
  assert job.study_spec.algorithm.name == "RANDOM_SEARCH"
  rate, latent = job.study_spec.parameters
  assert rate.parameter_id == "config.train.learning_rate"
  assert (rate.double_value_spec.min_value, rate.double_value_spec.max_value) == (0.0003, 0.01)
  assert rate.scale_type.name == "UNIT_LOG_SCALE"
  assert latent.parameter_id == "config.model.latent_dim"
  assert list(latent.discrete_value_spec.values) == [16, 32, 64, 128]


def test_its_trials_run_the_image_with_the_study_config_and_report_its_metric():
  spec = vertex_job.build_tuning_job_spec(STUDY, image=IMAGE, output_dir="gs://b/tune1",
                                          accelerator_count=0)
  trial = _parse(spec).trial_job_spec
  [pool] = trial.worker_pool_specs
  assert pool.container_spec.image_uri == IMAGE and pool.replica_count == 1
  assert list(pool.container_spec.args) == [
      "--config=configs/default.py", "--workdir=gs://b/tune1/workdir",
      "--config.train.num_epochs=2", "--config.train_split=train[:10000]",
      "--config.train.eval_batch_size=500", "--config.runtime.hypertune_metric=psnr"]
  assert trial.base_output_directory.output_uri_prefix == "gs://b/tune1"
  # The image runs the trainer's module with these args (Dockerfile ENTRYPOINT).
  dockerfile = (REPO / "Dockerfile").read_text()
  assert 'ENTRYPOINT ["python", "-m", "trainer.main"]' in dockerfile


@pytest.mark.slow  # A trainer process: CI runs it in make test-slow.
def test_a_trials_command_line_parses_into_the_trainers_config():
  """The args of the trial spec plus a parameter as Vertex AI appends it (`--id value`)."""
  spec = vertex_job.build_tuning_job_spec(STUDY, image=IMAGE, output_dir="gs://b/tune1")
  args = spec["trialJobSpec"]["workerPoolSpecs"][0]["containerSpec"]["args"]
  trial_args = [*args, "--config.train.learning_rate", "0.0012", "--config.model.latent_dim",
                "32.0"]
  # trainer.main's own flags and parser (cli.parse_flags), without importing TensorFlow.
  code = textwrap.dedent("""\
      import json, sys
      from absl import flags
      from ml_collections import config_flags
      from trainer import cli
      flags.DEFINE_string("workdir", None, "")
      config_flags.DEFINE_config_file("config", None, "", lock_config=True)
      cli.parse_flags(sys.argv)
      print(json.dumps({"workdir": flags.FLAGS.workdir, **flags.FLAGS.config.to_dict()}))
      """)
  result = subprocess.run([sys.executable, "-c", code, *trial_args], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  config = json.loads(result.stdout)
  assert config["train"]["learning_rate"] == 0.0012 and config["model"]["latent_dim"] == 32
  assert config["train"]["num_epochs"] == 2 and config["runtime"]["hypertune_metric"] == "psnr"
  assert config["workdir"] == "gs://b/tune1/workdir"


def _run(args):
  env = {**os.environ, "PYTHON": sys.executable}
  return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
                        check=False)


# The submit script checks the study in a process that imports TensorFlow: CI runs it in
# make test-slow.
@pytest.mark.slow
def test_submit_vertex_dry_run_creates_a_tuning_job(tmp_path):
  result = _run([str(REPO / "scripts" / "submit_vertex.sh"), "--project=proj",
                 f"--image={IMAGE}", "--output-dir=gs://b/tune1", f"--study={STUDY}",
                 "--display-name=tune1", "--dry-run"])
  assert result.returncode == 0, result.stderr
  command, _, *spec_lines = result.stdout.splitlines()
  assert shlex.split(command)[:7] == ["gcloud", "ai", "hp-tuning-jobs", "create",
                                      "--project=proj", "--region=us-central1",
                                      "--display-name=tune1"]
  spec = yaml.safe_load("\n".join(spec_lines))
  assert spec == vertex_job.build_tuning_job_spec(STUDY, image=IMAGE, output_dir="gs://b/tune1")
  _parse(spec)


def test_a_bad_study_is_one_line_before_anything_is_submitted(tmp_path):
  study = yaml.safe_load(pathlib.Path(STUDY).read_text())
  study["studySpec"]["metrics"][0]["metricId"] = "val_loss"
  bad = tmp_path / "bad.yaml"
  bad.write_text(yaml.safe_dump(study))
  result = _run([str(REPO / "scripts" / "submit_vertex.sh"), "--project=proj",
                 f"--image={IMAGE}", "--output-dir=gs://b/tune1", f"--study={bad}", "--dry-run"])
  assert result.returncode != 0 and result.stdout == ""
  assert result.stderr.strip().splitlines() == [
      "submit_vertex: studySpec.metrics[0]: metricId 'val_loss' is not an eval metric the "
      "trainer produces; use one of loss, mse, psnr, ssim"]
