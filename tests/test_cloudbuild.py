"""Offline checks of cloudbuild.yaml and the Vertex AI job specs, parsed into the real Cloud Build
and Vertex AI message types."""

import re

from google.cloud import aiplatform
from google.cloud.aiplatform_v1.types import CustomJobSpec
from google.cloud.devtools import cloudbuild_v1
import google.auth.credentials
from google.protobuf import json_format
import pytest
import yaml

from tests import cloud_helpers as cloud


# --- cloudbuild.yaml -----------------------------------------------------------

_USER_VAR = re.compile(r"(?<!\$)\$(?:\{(_[A-Z0-9_]+)\}|(_[A-Z0-9_]+))")
_BUILTIN_VAR = re.compile(r"(?<!\$)\$(?:\{([A-Z][A-Z0-9_]*)\}|([A-Z][A-Z0-9_]*))")
# Set in every build; $SHORT_SHA, $COMMIT_SHA, $BRANCH_NAME only in trigger builds.
_ALWAYS_SET = {"PROJECT_ID", "BUILD_ID", "PROJECT_NUMBER", "LOCATION"}


@pytest.fixture(scope="module")
def cloudbuild():
  return yaml.safe_load((cloud.REPO / "cloudbuild.yaml").read_text())


def _strings(value):
  """Every string inside a YAML value, keys included."""
  if isinstance(value, dict):
    for key, item in value.items():
      yield str(key)
      yield from _strings(item)
  elif isinstance(value, list):
    for item in value:
      yield from _strings(item)
  elif isinstance(value, str):
    yield value


def _substitute(text, values):
  """Cloud Build's substitution: $VAR and ${VAR} take their values, $$ is a literal $."""

  def replace(match):
    if match.group(0) == "$$":
      return "$"
    return values[match.group(1) or match.group(2)]

  return re.sub(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", replace, text)


def test_cloudbuild_parses_into_the_build_message(cloudbuild):
  build = json_format.ParseDict(cloudbuild, cloudbuild_v1.Build.pb()())
  assert [step.id for step in build.steps] == ["test", "build", "push", "submit"]
  assert build.timeout.seconds >= 1800
  # The same parse rejects what Cloud Build would reject.
  with pytest.raises(json_format.ParseError, match="stepz"):
    json_format.ParseDict({**cloudbuild, "stepz": []}, cloudbuild_v1.Build.pb()())


def test_cloudbuild_substitutions_are_declared_used_and_always_set(cloudbuild):
  declared = set(cloudbuild["substitutions"])
  text = [s for s in _strings({k: v for k, v in cloudbuild.items() if k != "substitutions"})]
  used = {a or b for s in text for a, b in _USER_VAR.findall(s)}
  assert used == declared, (sorted(used - declared), sorted(declared - used))
  builtins = {a or b for s in text for a, b in _BUILTIN_VAR.findall(s)}
  assert builtins <= _ALWAYS_SET, builtins - _ALWAYS_SET
  for name, default in cloudbuild["substitutions"].items():
    assert isinstance(default, str), name
    assert "$" not in default, f"{name}: a default may not use other substitutions"


def test_cloudbuild_names_only_files_that_exist(cloudbuild):
  steps_text = "\n".join(_strings(cloudbuild["steps"])) + "\n".join(
      cloudbuild["substitutions"].values())
  paths = set(re.findall(r"(?:\.ci|scripts|configs)/[\w./-]*\w", steps_text))
  assert {".ci/run", "scripts/submit_vertex.sh", "configs/default.py"} <= paths
  for path in paths:
    assert (cloud.REPO / path).is_file(), path
  assert (cloud.REPO / "Dockerfile").is_file()


def test_cloudbuild_pushes_and_submits_the_image_it_builds(cloudbuild):
  steps = {step["id"]: step for step in cloudbuild["steps"]}
  tags = [a.split("=", 1)[1] for a in steps["build"]["args"] if a.startswith("--tag=")]
  assert len(tags) == 1
  image = tags[0]
  assert image == "${_REGION}-docker.pkg.dev/${PROJECT_ID}/${_REPOSITORY}/${_IMAGE}:${_TAG}"
  assert steps["push"]["args"] == ["push", image]
  assert cloudbuild["images"] == [image]
  assert f'--image="{image}"' in steps["submit"]["args"][-1]
  assert "--build-arg=ACCELERATOR=${_ACCELERATOR}" in steps["build"]["args"]


@pytest.mark.parametrize("submit", ["true", "false"])
def test_cloudbuild_submit_step_runs_submit_vertex(cloudbuild, tmp_path, submit):
  step = next(step for step in cloudbuild["steps"] if step["id"] == "submit")
  assert step["entrypoint"] == "bash" and step["args"][0] == "-c"
  values = {**cloudbuild["substitutions"], "_SUBMIT": submit, "PROJECT_ID": "proj",
            "BUILD_ID": "b123"}
  env, calls = cloud.fake_gcloud(tmp_path)
  result = cloud.run(["bash", "-c", _substitute(step["args"][1], values)], env=env)
  assert result.returncode == 0, result.stderr
  if submit == "false":
    assert calls() == []
    return
  [call] = calls()
  assert call["args"][:3] == ["ai", "custom-jobs", "create"]
  assert "--project=proj" in call["args"] and "--region=us-central1" in call["args"]
  assert "--display-name=dae-trainer-b123" in call["args"]
  spec = yaml.safe_load(call["config"])
  # An empty _OUTPUT_DIR means the per-build folder in the project's Cloud Build bucket.
  assert spec["baseOutputDirectory"]["outputUriPrefix"] == "gs://proj_cloudbuild/dae-trainer/b123"
  container = spec["workerPoolSpecs"][0]["containerSpec"]
  assert container["imageUri"] == "us-central1-docker.pkg.dev/proj/dae-trainer/dae-trainer:latest"
  assert container["args"][:2] == ["--config=configs/default.py",
                                   "--workdir=gs://proj_cloudbuild/dae-trainer/b123/workdir"]


# --- Vertex AI job specs --------------------------------------------------------


def _custom_job(spec, monkeypatch):
  """An aiplatform.CustomJob built offline from the spec (project and credentials given)."""
  monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
  monkeypatch.delenv("CLOUD_ML_PROJECT_ID", raising=False)
  pools = json_format.MessageToDict(CustomJobSpec.pb(cloud.parse_spec(spec)),
                                    preserving_proto_field_name=True)
  return aiplatform.CustomJob(
      display_name="dae-trainer-test", worker_pool_specs=pools["worker_pool_specs"],
      base_output_dir=spec["baseOutputDirectory"]["outputUriPrefix"], project="p",
      location="us-central1", credentials=google.auth.credentials.AnonymousCredentials(),
      staging_bucket="gs://b")


def test_vertex_spec_one_gpu_replica(monkeypatch):
  spec = cloud.vertex_job.build_job_spec(image=cloud.IMAGE, output_dir="gs://b/run1",
                                   trainer_args=["--config.train.num_epochs=5"])
  parsed = cloud.parse_spec(spec)
  [pool] = parsed.worker_pool_specs
  assert pool.machine_spec.machine_type == "n1-standard-8"
  assert pool.machine_spec.accelerator_type.name == "NVIDIA_TESLA_T4"
  assert pool.machine_spec.accelerator_count == 1
  assert pool.replica_count == 1
  assert pool.container_spec.image_uri == cloud.IMAGE
  assert list(pool.container_spec.args) == [
      "--config=configs/default.py", "--workdir=gs://b/run1/workdir",
      "--config.train.num_epochs=5"]
  assert parsed.base_output_directory.output_uri_prefix == "gs://b/run1"
  job = _custom_job(spec, monkeypatch)
  assert job.job_spec.worker_pool_specs[0].machine_spec.accelerator_count == 1
  assert job.job_spec.base_output_directory.output_uri_prefix == "gs://b/run1"


def test_vertex_spec_three_replicas_multi_worker(monkeypatch):
  spec = cloud.vertex_job.build_job_spec(image=cloud.IMAGE, output_dir="gs://b/mw", replicas=3,
                                   machine_type="n1-standard-4",
                                   accelerator_type="NVIDIA_L4", accelerator_count=2)
  chief, workers = cloud.parse_spec(spec).worker_pool_specs
  assert (chief.replica_count, workers.replica_count) == (1, 2)
  for pool in (chief, workers):
    assert pool.machine_spec.machine_type == "n1-standard-4"
    assert pool.machine_spec.accelerator_type.name == "NVIDIA_L4"
    assert pool.machine_spec.accelerator_count == 2
    assert pool.container_spec.image_uri == cloud.IMAGE
    assert "--config.runtime.strategy=multi_worker_mirrored" in pool.container_spec.args
  job = _custom_job(spec, monkeypatch)
  assert [p.replica_count for p in job.job_spec.worker_pool_specs] == [1, 2]


def test_vertex_spec_tpu_v5e(monkeypatch):
  spec = cloud.vertex_job.build_job_spec(image=cloud.IMAGE, output_dir="gs://b/tpu", tpu=True)
  [pool] = cloud.parse_spec(spec).worker_pool_specs
  assert pool.machine_spec.machine_type == "ct5lp-hightpu-4t"
  assert pool.machine_spec.tpu_topology == "2x2"
  assert pool.machine_spec.accelerator_type.name == "ACCELERATOR_TYPE_UNSPECIFIED"
  assert pool.machine_spec.accelerator_count == 0
  assert pool.replica_count == 1
  assert list(pool.container_spec.args) == [
      "--config=configs/tpu.py", "--workdir=gs://b/tpu/workdir", "--config.runtime.strategy=tpu"]
  job = _custom_job(spec, monkeypatch)
  assert job.job_spec.worker_pool_specs[0].machine_spec.tpu_topology == "2x2"


def test_vertex_spec_cpu_only_has_no_accelerator():
  spec = cloud.vertex_job.build_job_spec(image=cloud.IMAGE, output_dir="gs://b/cpu", accelerator_count=0)
  assert spec["workerPoolSpecs"][0]["machineSpec"] == {"machineType": "n1-standard-8"}
  cloud.parse_spec(spec)


def test_vertex_spec_bad_accelerator_is_rejected(monkeypatch):
  spec = cloud.vertex_job.build_job_spec(image=cloud.IMAGE, output_dir="gs://b/x",
                                   accelerator_type="NVIDIA_TESLA_X")
  with pytest.raises(json_format.ParseError, match="NVIDIA_TESLA_X"):
    cloud.parse_spec(spec)
  monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
  with pytest.raises(KeyError, match="NVIDIA_TESLA_X"):
    aiplatform.CustomJob(
        display_name="x", project="p", location="us-central1", staging_bucket="gs://b",
        credentials=google.auth.credentials.AnonymousCredentials(),
        worker_pool_specs=[{"machine_spec": {"machine_type": "n1-standard-8",
                                             "accelerator_type": "NVIDIA_TESLA_X",
                                             "accelerator_count": 1},
                            "replica_count": 1, "container_spec": {"image_uri": cloud.IMAGE}}])


@pytest.mark.parametrize("kwargs, message", [
    ({"output_dir": "/tmp/run"}, "'/tmp/run' is not a Cloud Storage path"),
    ({"replicas": 0}, "--replicas 0 is below 1"),
    ({"replicas": 2, "tpu": True}, "--replicas 2 with --tpu"),
    ({"tpu": True, "accelerator_type": "NVIDIA_TESLA_T4"}, "do not apply to --tpu"),
    ({"accelerator_count": -1}, "--accelerator-count -1 is negative"),
    ({"tpu_topology": "4x4"}, "--tpu-topology 4x4 needs --tpu"),
    ({"tpu": True, "tpu_topology": "9x9"}, "--tpu-topology '9x9' is not a TPU v5e slice; pass "
                                           "one of 2x2, 2x4"),
    ({"replicas": 100000}, "--replicas 100000 is above 64; pass at most 64"),
    ({"accelerator_count": 99}, "--accelerator-count 99 is more GPUs than a Vertex AI machine"),
])
def test_vertex_spec_bad_values_name_the_value(kwargs, message):
  with pytest.raises(ValueError, match=re.escape(message)):
    cloud.vertex_job.build_job_spec(**{"image": cloud.IMAGE, "output_dir": "gs://b/x", **kwargs})


def test_vertex_yaml_round_trips():
  spec = cloud.vertex_job.build_job_spec(image=cloud.IMAGE, output_dir="gs://b/x", replicas=2,
                                   trainer_args=["--config.noise.type=salt_and_pepper",
                                                 "--x=a: b #c", "--y=true", "--z=1"])
  assert yaml.safe_load(cloud.vertex_job.to_yaml(spec)) == spec
