"""The pipeline of trainer/pipeline/: the blessing rule, the serving directory, local runs, Vertex AI.

The end-to-end test runs `python -m trainer.pipeline run` three times on
configs/test.py with KFP's SubprocessRunner (each step a subprocess) and
checks the serving directory after each. The Vertex AI path is checked
offline: the compiled YAML parsed as KFP's PipelineSpec, the dry run's
PipelineJob parsed by google-cloud-aiplatform's types.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

from absl import logging
import pytest

pytest.importorskip("kfp", reason="the [pipeline] extra (make install) installs kfp")

# pylint: disable=wrong-import-position
from google.cloud.aiplatform_v1.types import PipelineJob
import google.auth.credentials
from google.protobuf import json_format
from kfp.pipeline_spec import pipeline_spec_pb2
import numpy as np
import tensorflow as tf
import yaml

from trainer import errors
from trainer import export
from trainer.pipeline import blessing
from trainer.pipeline import launch
from trainer.pipeline import serving
from trainer.pipeline import tasks

REPO = pathlib.Path(__file__).resolve().parent.parent
IMAGE = "us-central1-docker.pkg.dev/proj/dae-trainer/dae-trainer:v1"


def _pipeline(*args, timeout=600):
  return subprocess.run([sys.executable, "-m", "trainer.pipeline", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout, check=False)


def _last_line(result) -> str:
  return result.stdout.strip().splitlines()[-1]


# --- The blessing rule -------------------------------------------------------


def test_first_model_is_judged_on_the_threshold_alone():
  assert blessing.decide(11.5, None, min_psnr_db=11.0, max_psnr_drop_db=0.0).blessed
  decision = blessing.decide(10.5, None, min_psnr_db=11.0, max_psnr_drop_db=0.0)
  assert not decision.blessed
  assert "10.500 dB is below the threshold 11.000 dB" in decision.reason


@pytest.mark.parametrize("candidate, tolerance, blessed", [
    (12.0, 0.0, True), (11.9, 0.0, False), (11.9, 0.2, True), (11.7, 0.2, False)])
def test_candidate_may_be_worse_than_the_serving_model_only_within_the_tolerance(
    candidate, tolerance, blessed):
  decision = blessing.decide(candidate, 12.0, min_psnr_db=11.0, max_psnr_drop_db=tolerance,
                             serving_version=3)
  assert decision.blessed == blessed, decision.reason
  if not blessed:
    assert "worse than version 3 in service (12.000 dB)" in decision.reason


def test_both_failures_are_named_and_nan_is_never_blessed():
  decision = blessing.decide(6.0, 12.0, min_psnr_db=11.0, max_psnr_drop_db=0.0)
  assert not decision.blessed
  assert "below the threshold" in decision.reason and "6.000 dB worse" in decision.reason
  assert not blessing.decide(float("nan"), None, min_psnr_db=11.0, max_psnr_drop_db=0.0).blessed


def test_the_serving_models_own_weights_are_not_pushed_again():
  decision = blessing.decide(12.0, 12.0, min_psnr_db=11.0, max_psnr_drop_db=0.0,
                             same_weights=True, serving_version=1)
  assert not decision.blessed and "same weights as version 1" in decision.reason


def test_negative_tolerance_is_refused():
  with pytest.raises(ValueError, match="max_psnr_drop_db=-1 is negative"):
    blessing.decide(12.0, 12.0, min_psnr_db=11.0, max_psnr_drop_db=-1)


# --- The serving directory ------------------------------------------------------


def _tiny_saved_model(path, scale=2.0):
  module = tf.Module()
  module.scale = tf.Variable(scale)
  module.f = tf.function(lambda x: x * module.scale,
                         input_signature=[tf.TensorSpec([None], tf.float32)])
  tf.saved_model.save(module, str(path))
  return str(path)


def test_corrupt_version_is_ignored_with_a_warning_and_its_number_not_reused(tmp_path):
  serving_dir = tmp_path / "serving"
  _tiny_saved_model(serving_dir / "1")
  (serving_dir / "2").mkdir()  # A numbered folder without a SavedModel.
  (serving_dir / "2" / "saved_model.pb").write_bytes(b"garbage")
  (serving_dir / "notes").mkdir()  # Not a number: not a version.
  warnings = []
  original = logging.warning
  logging.warning = lambda message, *args: warnings.append(message % args)
  try:
    in_service = serving.serving_version(str(serving_dir))
  finally:
    logging.warning = original
  assert in_service == serving.Version(1, str(serving_dir / "1"))
  assert any("version 2 holds no loadable SavedModel" in warning for warning in warnings)
  pushed = serving.push(_tiny_saved_model(tmp_path / "candidate", 3.0), str(serving_dir))
  assert pushed.number == 3
  loaded = tf.saved_model.load(pushed.path)
  assert loaded.f(tf.constant([1.0])).numpy().tolist() == [3.0]
  assert sorted(os.listdir(serving_dir)) == ["1", "2", "3", "notes"]


def test_a_push_that_fails_midway_leaves_no_version(tmp_path, monkeypatch):
  serving_dir = tmp_path / "serving"
  candidate = _tiny_saved_model(tmp_path / "candidate")
  copied = []

  def failing_copy(source, destination, overwrite=False):
    if copied:
      raise OSError("disk full")
    copied.append(destination)
    tf.io.gfile.GFile(destination, "wb").write(tf.io.gfile.GFile(source, "rb").read())

  monkeypatch.setattr(tf.io.gfile, "copy", failing_copy)
  with pytest.raises(OSError, match="disk full"):
    serving.push(candidate, str(serving_dir))
  assert copied and os.listdir(serving_dir) == []  # No version, no temporary left.
  assert serving.serving_version(str(serving_dir)) is None


def test_serving_dir_that_is_a_file_is_refused(tmp_path):
  path = tmp_path / "serving"
  path.write_text("")
  with pytest.raises(ValueError, match="is a file, not a directory"):
    serving.check_serving_dir(str(path))


# --- Inputs checked before any step ------------------------------------------------


@pytest.mark.parametrize("config, overrides, message", [
    ("configs/missing.py", {}, "config file configs/missing.py does not exist"),
    ("configs/test.py", {"train.num_epoch": 2}, "cannot set config field 'train.num_epoch'"),
    ("configs/test.py", {"train.learning_rate": 0.0}, "train.learning_rate=0.0 must be > 0"),
])
def test_bad_config_is_refused_in_one_line(config, overrides, message):
  with pytest.raises(errors.ConfigError, match=message):
    tasks.load_config(config, overrides)


def test_config_overrides_keep_their_types():
  config = tasks.load_config("configs/test.py", json.loads('{"train.num_epochs": 3}'))
  assert config.train.num_epochs == 3 and isinstance(config.train.num_epochs, int)


@pytest.mark.parametrize("make_bad, message", [
    (lambda tmp: {"serving_dir": str(_file(tmp / "s"))}, "--serving_dir="),
    (lambda tmp: {"pipeline_root": str(_file(tmp / "r"))}, "--pipeline_root="),
    (lambda tmp: {"max_psnr_drop_db": -0.5}, "--max_psnr_drop_db=-0.5 is negative"),
])
def test_bad_local_inputs_are_refused_before_any_step(tmp_path, make_bad, message):
  kwargs = {"config_path": "configs/test.py", "overrides": {},
            "pipeline_root": str(tmp_path / "root"), "serving_dir": str(tmp_path / "serving"),
            "min_psnr_db": 11.0, "max_psnr_drop_db": 0.0, **make_bad(tmp_path)}
  with pytest.raises(ValueError, match=message):
    launch.run_locally(**kwargs)
  assert not (tmp_path / "root").exists() and not (tmp_path / "serving").exists()


def _file(path):
  path.write_text("")
  return path


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_serving_dir_is_refused(tmp_path):
  path = tmp_path / "serving"
  path.mkdir()
  path.chmod(0o500)
  with pytest.raises(ValueError, match="cannot be written"):
    serving.check_serving_dir(str(path))


@pytest.mark.slow  # The bucket check waits for its deadline (up to 15 s) on this offline machine.
def test_unreachable_gs_pipeline_root_is_one_line(tmp_path):
  result = _pipeline("run", "--config=configs/test.py",
                     "--pipeline_root=gs://no-such-bucket-dae/pipeline",
                     f"--serving_dir={tmp_path / 'serving'}", timeout=120)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith(
      "dae-trainer: --pipeline_root=gs://no-such-bucket-dae/pipeline cannot be reached ("), \
      result.stderr[-1000:]
  assert not (tmp_path / "serving").exists()


# --- End to end, locally -----------------------------------------------------------


def _run_pipeline(root, serving_dir, *overrides):
  result = _pipeline("run", "--config=configs/test.py", f"--pipeline_root={root}",
                     f"--serving_dir={serving_dir}", *overrides)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  return result


def _blessing_of_last_run(root):
  runs = sorted(path for path in root.iterdir() if path.name.startswith("dae-trainer-"))
  return json.loads((runs[-1] / "evaluate" / "blessing").read_text()), runs[-1]


def _serves(path):
  loaded = tf.saved_model.load(str(path))
  images = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype(np.float32)
  denoised = loaded.signatures[export.SERVING_ENDPOINT](images=tf.constant(images))["denoised"]
  assert denoised.shape == (3, 28, 28, 1)
  return export.read_export_info(str(path))["weights_fingerprint"]


def _run_in_process(capfd, root, serving_dir, overrides, extra_levels=()):
  """One more run, in this process (no second TensorFlow start-up): (its record, its output)."""
  record = launch.run_locally("configs/test.py", overrides, str(root), str(serving_dir),
                              blessing.DEFAULT_MIN_PSNR_DB, blessing.DEFAULT_MAX_PSNR_DROP_DB,
                              extra_levels)
  return record, capfd.readouterr().out


# Four steps, each a process that imports TensorFlow, three times: minutes on 2 cores; CI
# runs it in make test-slow.
@pytest.mark.slow
def test_pipeline_pushes_blessed_models_only(tmp_path, capfd):
  """Version 1 into an empty directory; a worse model is not pushed; a better one is version 2."""
  root, serving_dir = tmp_path / "root", tmp_path / "serving"
  first = _run_pipeline(root, serving_dir)  # The command line, as a user runs it.
  assert "push: Pushed version 1. Blessed: nothing is in service" in first.stdout
  assert _last_line(first) == f"dae-trainer pipeline: serving {serving_dir / '1'}"
  assert sorted(os.listdir(serving_dir)) == ["1"]

  # A learning rate of 1e-7: the weights barely move from their initial values.
  record, output = _run_in_process(capfd, root, serving_dir, {"train.learning_rate": 1e-7},
                                   extra_levels=[0.2])
  assert "push: Nothing pushed. Not blessed:" in output
  assert sorted(os.listdir(serving_dir)) == ["1"]
  judged, run = _blessing_of_last_run(root)
  assert judged["blessed"] is False
  assert judged["serving"]["version"] == 1
  # The extra level is scored for both models, and recorded; the decision uses 0.4.
  assert set(judged["candidate"]["psnr_db"]) == set(judged["serving"]["psnr_db"]) == {"0.4", "0.2"}
  candidate_db, serving_db = judged["candidate"]["psnr_db"]["0.4"], judged["serving"]["psnr_db"][
      "0.4"]
  assert candidate_db < serving_db - 1.0
  assert f"{candidate_db:.3f} dB is below the threshold" in judged["reason"]
  assert f"worse than version 1 in service ({serving_db:.3f} dB)" in judged["reason"]
  assert record == json.loads((run / "push" / "pushed").read_text()) == {
      "pushed": False, "version": None, "path": None,
      "reason": f"Nothing pushed. {judged['reason']}"}

  # Three epochs instead of one.
  record, output = _run_in_process(capfd, root, serving_dir, {"train.num_epochs": 3})
  assert "push: Pushed version 2. Blessed:" in output
  assert record["pushed"] and record["version"] == 2
  judged, _ = _blessing_of_last_run(root)
  assert judged["candidate"]["psnr_db"]["0.4"] > judged["serving"]["psnr_db"]["0.4"]
  assert sorted(os.listdir(serving_dir)) == ["1", "2"]
  assert _serves(serving_dir / "1") != _serves(serving_dir / "2")


# --- Resuming -----------------------------------------------------------------------


@pytest.mark.slow  # Three pipeline runs of three epochs, one killed midway (about 3 minutes).
def test_killed_training_resumes_on_rerun_with_the_same_weights(tmp_path):
  args = ["--config=configs/test.py", "--config.train.num_epochs=3"]
  root = tmp_path / "root"
  process = subprocess.Popen(
      [sys.executable, "-m", "trainer.pipeline", "run", *args, f"--pipeline_root={root}",
       f"--serving_dir={tmp_path / 'serving'}"], cwd=REPO, stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL, start_new_session=True)
  deadline = time.time() + 300
  while not list(root.glob("workdirs/*/checkpoints/ckpt-*.index")):
    assert process.poll() is None and time.time() < deadline, "no checkpoint before the end"
    time.sleep(0.2)
  os.killpg(process.pid, signal.SIGKILL)  # The runner and its train step.
  process.wait()
  assert not (tmp_path / "serving").exists()
  saved = [int(path.name[len("ckpt-"):-len(".index")])
           for path in root.glob("workdirs/*/checkpoints/ckpt-*.index")]
  assert max(saved) < 96, saved  # Killed before the last of 3 x 32 steps.

  rerun = _run_pipeline(root, tmp_path / "serving", "--config.train.num_epochs=3")
  assert "resumed from" in rerun.stdout
  fresh = _run_pipeline(tmp_path / "fresh", tmp_path / "fresh_serving",
                        "--config.train.num_epochs=3")
  assert "resumed from" not in fresh.stdout
  assert _serves(tmp_path / "serving" / "1") == _serves(tmp_path / "fresh_serving" / "1")


# --- Vertex AI, offline ---------------------------------------------------------------


@pytest.fixture(name="compiled", scope="module")
def fixture_compiled(tmp_path_factory):
  path = tmp_path_factory.mktemp("compiled") / "dae_pipeline.yaml"
  launch.compile_pipeline(str(path), IMAGE, "NVIDIA_L4", 2)
  return path


def test_compiled_pipeline_parses_names_the_image_and_trains_on_the_accelerator(compiled):
  documents = list(yaml.safe_load_all(compiled.read_text()))
  assert len(documents) == 1
  spec = json_format.ParseDict(documents[0], pipeline_spec_pb2.PipelineSpec())
  deployment = json_format.ParseDict(
      json_format.MessageToDict(spec.deployment_spec), pipeline_spec_pb2.PipelineDeploymentConfig())
  executors = deployment.executors
  assert sorted(executors) == ["exec-data", "exec-evaluate", "exec-push", "exec-train"]
  for name, executor in executors.items():
    assert executor.container.image == IMAGE, name
    assert "kfp.dsl.executor_main" in " ".join(executor.container.command)
    assert "pip install" not in " ".join(executor.container.command)  # kfp is in the image.
  accelerator = executors["exec-train"].container.resources.accelerator
  assert (accelerator.resource_type, accelerator.resource_count) == ("NVIDIA_L4", "2")
  assert not executors["exec-evaluate"].container.resources.HasField("accelerator")
  tasks_spec = spec.root.dag.tasks
  assert [tasks_spec[name].caching_options.enable_cache for name in ("evaluate", "push")] == [
      False, False]
  assert sorted(spec.root.input_definitions.parameters) == [
      "config", "extra_levels", "max_psnr_drop_db", "min_psnr_db", "overrides", "serving_dir",
      "workdir_root"]


def test_pipeline_job_parses_with_aiplatform_types(compiled, monkeypatch):
  monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
  monkeypatch.delenv("CLOUD_ML_PROJECT_ID", raising=False)
  values = launch.parameters("configs/default.py", {"train.num_epochs": 5}, "gs://b/pipeline",
                             "gs://b/serving/dae", 11.0, 0.0, [0.2])
  job = launch.pipeline_job(str(compiled), "dae-trainer-test", "gs://b/pipeline", values, "p",
                            "us-central1", google.auth.credentials.AnonymousCredentials())
  parsed = PipelineJob.wrap(json_format.ParseDict(job.to_dict(), PipelineJob.pb()()))
  assert parsed.runtime_config.gcs_output_directory == "gs://b/pipeline"
  parameters = parsed.runtime_config.parameter_values
  assert parameters["workdir_root"] == "gs://b/pipeline/workdirs"
  assert json.loads(parameters["overrides"]) == {"train.num_epochs": 5}
  assert parsed.pipeline_spec["deploymentSpec"]["executors"]["exec-train"]["container"][
      "image"] == IMAGE


# The submit script compiles the pipeline in a process of its own: CI runs it in make test-slow.
@pytest.mark.slow
def test_submit_script_dry_run_prints_the_pipeline_job(tmp_path):
  result = subprocess.run(
      [str(REPO / "scripts" / "submit_pipeline.sh"), "--project=p", f"--image={IMAGE}",
       "--pipeline-root=gs://b/pipeline", "--serving-dir=gs://b/serving/dae",
       "--accelerator-type=NVIDIA_TESLA_T4", "--dry-run", "--", "--config.train.num_epochs=2"],
      cwd=REPO, env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True,
      timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  job = PipelineJob.wrap(json_format.ParseDict(json.loads(result.stdout), PipelineJob.pb()()))
  assert job.display_name.startswith("dae-trainer-")
  assert job.runtime_config.parameter_values["config"] == "configs/default.py"
  assert job.runtime_config.parameter_values["overrides"] == '{"train.num_epochs": 2}'


@pytest.mark.parametrize("changes, message", [
    ({"pipeline_root": "/tmp/r"}, "--pipeline_root='/tmp/r' is not a Cloud Storage path"),
    ({"serving_dir": "serving"}, "--serving_dir='serving' is not a Cloud Storage path"),
    ({"project": ""}, "--project is missing"),
    ({"max_psnr_drop_db": -1.0}, "--max_psnr_drop_db=-1.0 is negative"),
])
def test_submit_bad_values_name_the_value(changes, message):
  kwargs = {"config_path": "configs/test.py", "overrides": {}, "pipeline_root": "gs://b/r",
            "serving_dir": "gs://b/s", "project": "p", "max_psnr_drop_db": 0.0, "reach": False,
            **changes}
  with pytest.raises(ValueError, match=message):
    launch.check_cloud_inputs(**kwargs)


@pytest.mark.slow  # A process importing TensorFlow; the one-line format is main's, tested above.
def test_submit_bad_override_is_one_line():
  result = _pipeline("submit", "--config=configs/test.py", "--config.train.num_epoch=2",
                     "--project=p", f"--image={IMAGE}", "--pipeline_root=gs://b/r",
                     "--serving_dir=gs://b/s", "--dry_run", timeout=300)
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1].startswith(
      "dae-trainer: unknown config key in a --config.* override: num_epoch."), result.stderr
  assert "Traceback" not in result.stderr
