#!/usr/bin/env bash
# Replays the Dockerfile's install and entry commands without Docker: builds the
# wheel as the image's builder stage does (scripts/build_wheel.sh), installs it with
# [cpu] into a fresh virtualenv, links configs/ to the installed configs package
# in a directory outside the repository (the image's /app), and trains
# configs/test.py for one epoch there, reading the MNIST bundled in the wheel.
# Fails unless the run wrote its SavedModel and metrics.json.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/check_wheel_install.sh [--keep]

Builds, installs and runs the dae-trainer wheel as the Docker image does, in a
temporary directory. --keep leaves that directory in place and prints its path.
PYTHON (default python3) creates the virtualenv.
USAGE
}

keep=false
case "${1:-}" in
  "") ;;
  --keep) keep=true ;;
  -h | --help) usage; exit 0 ;;
  *) echo "check_wheel_install: unknown argument '$1'; see --help" >&2; exit 2 ;;
esac

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dae-wheel-check.XXXXXX")
if [[ "$keep" == true ]]; then
  echo "check_wheel_install: keeping $tmp" >&2
else
  trap 'rm -rf "$tmp"' EXIT
fi

start=$SECONDS
"${PYTHON:-python3}" -m venv "$tmp/venv"
venv_python="$tmp/venv/bin/python"
# Unlike the submit scripts, CI's check fails on a setuptools warning: it is
# where a packaging change that setuptools frowns on is caught.
wheel=$(PYTHON="$venv_python" "$repo/scripts/build_wheel.sh" --fail-on-warnings "$tmp/wheels")
"$venv_python" -m pip install --quiet --disable-pip-version-check "${wheel}[cpu]"
echo "check_wheel_install: built and installed ${wheel##*/} in $((SECONDS - start)) s" >&2

# The image's WORKDIR /app and its configs link, with the Dockerfile's command.
mkdir "$tmp/app"
cd "$tmp/app"
ln -s "$("$venv_python" -c 'import configs, os; print(os.path.dirname(configs.__file__))')" configs
# The package must come from the virtualenv, not from the checkout, and an
# empty TFDS data_dir makes the trainer read the MNIST bundled in the wheel, as
# it does in the image.
"$venv_python" - "$tmp/venv" <<'PY'
import os, sys
import input_pipeline.data_source as data_source
import configs
import trainer
for module in (configs, trainer, data_source):
  if not os.path.realpath(module.__file__).startswith(os.path.realpath(sys.argv[1])):
    sys.exit(f"check_wheel_install: {module.__name__} was imported from {module.__file__}, "
             "not from the virtualenv")
if not os.path.isdir(os.path.join(data_source.BUNDLED_DATA_DIR, "mnist", "3.0.1")):
  sys.exit(f"check_wheel_install: the wheel has no bundled mnist in {data_source.BUNDLED_DATA_DIR}")
PY
TFDS_DATA_DIR="$tmp/empty_tfds" "$venv_python" -m trainer.main \
  --config=configs/test.py --workdir="$tmp/run"

for file in saved_model/saved_model.pb metrics.json; do
  [[ -f "$tmp/run/$file" ]] || { echo "check_wheel_install: the run wrote no $file in $tmp/run" >&2; exit 1; }
done
echo "check_wheel_install: OK in $((SECONDS - start)) s: the installed wheel trained and wrote saved_model/ and metrics.json" >&2
