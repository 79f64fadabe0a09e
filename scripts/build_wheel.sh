#!/usr/bin/env bash
# Builds the dae-trainer wheel the way the Docker image's builder stage does:
# `pip wheel . --no-deps` in a clean copy of the files that stage copies, so
# that nothing left in the checkout's build/ folder (files since deleted) can
# slip into the wheel. Prints the wheel's path. A setuptools warning is shown,
# and fails the build only with --fail-on-warnings (CI's check and the tests):
# a user submitting a job must not be stopped by a new setuptools' deprecation
# notice.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/build_wheel.sh [--fail-on-warnings] OUT_DIR

Builds dae_trainer-VERSION-py3-none-any.whl into OUT_DIR (created if missing) from a
clean copy of setup.py and the packages, and prints its path. Warnings of setuptools
during the build are printed to stderr; with --fail-on-warnings they fail the build
(scripts/check_wheel_install.sh and the tests use it). PYTHON (default python3) runs
pip; pip's own settings apply (e.g. PIP_NO_BUILD_ISOLATION=0 builds with the installed
setuptools, no index needed).
USAGE
}

# The builder stage's COPY sources, in the Dockerfile's order (tests/test_cloud.py
# checks that the two lists agree).
SOURCES=(setup.py configs input_pipeline trainer)

fail_on_warnings=false
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  --fail-on-warnings) fail_on_warnings=true; shift ;;
esac
case "${1:-}" in
  "" | -*) echo "build_wheel: expected OUT_DIR, got '${1:-}'; see --help" >&2; exit 2 ;;
esac
(($# == 1)) || { echo "build_wheel: one OUT_DIR only, got $# arguments; see --help" >&2; exit 2; }
mkdir -p "$1"
out_dir=$(cd "$1" && pwd)
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dae-build-wheel.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# pip runs inside the copy, so a relative PYTHON is made absolute first.
python=${PYTHON:-python3}
if [[ "$python" == */* && "$python" != /* ]]; then
  python="$PWD/$python"
fi

mkdir "$tmp/src"
(cd "$repo" && cp -R "${SOURCES[@]}" "$tmp/src/")
find "$tmp/src" -name __pycache__ -prune -exec rm -rf {} +
# Verbose: older pips (a new virtualenv's) show the build's warnings only then.
if ! (cd "$tmp/src" && "$python" -m pip wheel --verbose --no-deps --wheel-dir "$tmp/dist" .) \
    >"$tmp/build.log" 2>&1; then
  cat "$tmp/build.log" >&2
  echo "build_wheel: pip wheel failed (output above)" >&2
  exit 1
fi
if grep -E "would be ignored|is absent from the .packages. configuration|[A-Za-z_]Warning:" \
    "$tmp/build.log" >&2; then
  if [[ "$fail_on_warnings" == true ]]; then
    echo "build_wheel: setuptools warned while building the wheel (lines above)" >&2
    exit 1
  fi
  echo "build_wheel: setuptools warned while building the wheel (lines above); the wheel" \
    "is built anyway (scripts/check_wheel_install.sh fails on such warnings)" >&2
fi
wheels=("$tmp"/dist/dae_trainer-*.whl)
[[ -f "${wheels[0]}" ]] || { echo "build_wheel: pip wrote no dae_trainer wheel" >&2; exit 1; }
cp "${wheels[0]}" "$out_dir/"
echo "$out_dir/${wheels[0]##*/}"
