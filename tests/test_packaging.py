"""Offline checks of the packaging: the wheel (its data, its extras, warnings) and the Dockerfile."""

import pathlib
import re
import shutil
import zipfile

import pytest

from tests import cloud_helpers as cloud


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
      assert archive.read(name) == (cloud.REPO / name).read_bytes(), name


def _checkout_whose_build_warns(tmp_path):
  """A copy of the builder's sources and scripts/ with include_package_data=True.

  setuptools then says each data folder "would be ignored" as a package.
  """
  copy = tmp_path / "repo"
  shutil.copytree(cloud.SCRIPTS, copy / "scripts")
  for name in cloud.builder_copy_sources():
    if (cloud.REPO / name).is_dir():
      shutil.copytree(cloud.REPO / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    else:
      shutil.copy(cloud.REPO / name, copy / name)
  setup = copy / "setup.py"
  setup.write_text(setup.read_text().replace("include_package_data=False",
                                             "include_package_data=True"))
  return copy


def test_build_wheel_fails_when_setuptools_warns_with_fail_on_warnings(tmp_path):
  copy = _checkout_whose_build_warns(tmp_path)
  result = cloud.build_wheel(copy, tmp_path / "dist", "--fail-on-warnings")
  assert result.returncode == 1
  assert "would be ignored" in result.stderr
  assert result.stderr.strip().endswith(
      "build_wheel: setuptools warned while building the wheel (lines above)")
  assert not list((tmp_path / "dist").glob("*.whl"))


@pytest.mark.slow  # Builds a wheel: CI runs it in make test-slow.
def test_a_setuptools_warning_never_fails_a_submission(tmp_path):
  """Without --fail-on-warnings (the submit path) a warning is shown and the wheel is built."""
  copy = _checkout_whose_build_warns(tmp_path)
  built = cloud.build_wheel(copy, tmp_path / "dist")
  assert built.returncode == 0, built.stderr
  assert "would be ignored" in built.stderr
  assert "the wheel is built anyway" in built.stderr
  assert pathlib.Path(built.stdout.strip()).is_file()
  # submit_tpu_vm.sh builds its wheel this way, so its dry run ends with every command.
  result = cloud.run([str(copy / "scripts" / "submit_tpu_vm.sh"), "--zone=us-west4-a",
                 "--workdir=gs://b/tpu1", "--dry-run"], env=cloud.OFFLINE_BUILD)
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
  commands = cloud.dockerfile_commands()
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
  assert cloud.LIBTPU_INDEX in install


def test_dockerfile_runs_the_trainer_as_a_non_root_user():
  commands = cloud.dockerfile_commands()
  assert commands[-1].cmd == "ENTRYPOINT" and commands[-1].json
  assert commands[-1].value == ("python", "-m", "trainer.main")
  users = [c.value[0] for c in commands if c.cmd == "USER"]
  assert users and users[-1] not in ("root", "0")
  workdirs = [c.value[0] for c in commands if c.cmd == "WORKDIR"]
  assert workdirs[-1] == "/app"
  assert any("configs" in c.value[0] and "ln -s" in c.value[0]
             for c in commands if c.cmd == "RUN")


def test_dockerfile_run_commands_are_valid_sh(tmp_path):
  for index, command in enumerate(c for c in cloud.dockerfile_commands() if c.cmd == "RUN"):
    script = tmp_path / f"run{index}.sh"
    script.write_text("#!/bin/sh\n" + command.value[0] + "\n")
    result = cloud.run(["shellcheck", "--shell=sh", str(script)])
    assert result.returncode == 0, result.stdout
    assert cloud.run(["sh", "-n", str(script)]).returncode == 0


def test_docker_context_has_what_the_builder_copies():
  sources = cloud.builder_copy_sources()
  assert sources == ["setup.py", "configs", "input_pipeline", "trainer"]
  ignored = [line.strip() for line in (cloud.REPO / ".dockerignore").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
  for source in sources:
    assert (cloud.REPO / source).exists(), source
    assert source not in ignored
  assert {".git", ".venv", "workdir*", "**/__pycache__"} <= set(ignored)
  # scripts/build_wheel.sh copies the same sources, and check_wheel_install.sh
  # makes the /app/configs link with the same command.
  build_script = (cloud.SCRIPTS / "build_wheel.sh").read_text()
  listed = re.search(r"^SOURCES=\((.*)\)$", build_script, re.MULTILINE).group(1).split()
  assert listed == sources
  check_script = (cloud.SCRIPTS / "check_wheel_install.sh").read_text()
  link = "-c 'import configs, os; print(os.path.dirname(configs.__file__))')\" configs"
  assert link in check_script
  assert any(link in c.value[0] for c in cloud.dockerfile_commands() if c.cmd == "RUN")
