"""What the offline checks of the cloud files share: paths, the image name, running a script,
parsing a Vertex AI spec, a fake gcloud and the wheel's offline build."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import textwrap

import dockerfile
from google.cloud.aiplatform_v1.types import CustomJobSpec
from google.protobuf import json_format

REPO = pathlib.Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
SHELL_SCRIPTS = ["submit_vertex.sh", "submit_tpu_vm.sh", "build_wheel.sh", "check_wheel_install.sh",
                 "submit_pipeline.sh"]
IMAGE = "us-central1-docker.pkg.dev/proj/dae-trainer/dae-trainer:v1"
LIBTPU_INDEX = "https://storage.googleapis.com/libtpu-releases/index.html"


def load_vertex_job():
  spec = importlib.util.spec_from_file_location("vertex_job", SCRIPTS / "vertex_job.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


vertex_job = load_vertex_job()


def run(args, env=None, cwd=REPO):
  """Runs a command with the test's python as PYTHON; returns the CompletedProcess."""
  full_env = {**os.environ, "PYTHON": sys.executable, **(env or {})}
  return subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True,
                        timeout=120, check=False)


def one_line_error(result, *fragments):
  assert result.returncode != 0, result.stdout
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr
  for fragment in fragments:
    assert fragment in lines[0], lines[0]


def dockerfile_commands():
  return dockerfile.parse_file(str(REPO / "Dockerfile"))


def builder_copy_sources():
  """The builder stage's COPY sources, in order."""
  sources, stage = [], 0
  for command in dockerfile_commands():
    if command.cmd == "FROM":
      stage += 1
    elif command.cmd == "COPY" and stage == 1 and not command.flags:
      sources.extend(command.value[:-1])
  return sources


# Without build isolation (the test extra's setuptools builds) and without an
# index: the tests reach no network. CI's scripts/check_wheel_install.sh builds
# with pip's isolated build, as the Dockerfile does.
OFFLINE_BUILD = {"PIP_NO_BUILD_ISOLATION": "0", "PIP_NO_INDEX": "1"}


def build_wheel(repo, out_dir, *flags):
  return run([str(repo / "scripts" / "build_wheel.sh"), *flags, str(out_dir)],
              env=OFFLINE_BUILD)


def fake_gcloud(tmp_path, tpu_exists=False):
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


def parse_spec(spec):
  """Parses camelCase JSON as Vertex AI does; unknown fields and enum values raise ParseError."""
  return CustomJobSpec.wrap(json_format.ParseDict(spec, CustomJobSpec.pb()()))
