#!/usr/bin/env bash
# Trains dae-trainer on a Cloud TPU VM: creates the TPU VM unless it exists,
# installs this checkout's wheel with tensorflow-tpu on every host, then runs
# the trainer with TPUStrategy on all hosts at once.
set -euo pipefail

# Google's index of libtpu builds, which tensorflow-tpu needs (see setup.py).
LIBTPU_INDEX="https://storage.googleapis.com/libtpu-releases/index.html"

usage() {
  cat <<'EOF'
Usage: scripts/submit_tpu_vm.sh --zone=ZONE --workdir=gs://BUCKET/PATH [options] [-- TRAINER_FLAGS...]

Creates the TPU VM NAME unless it exists, builds this checkout's wheel (or takes
--wheel), copies it to every host and installs it with tensorflow-tpu, then runs
`python3 -m trainer.main --config=CONFIG --workdir=WORKDIR --config.runtime.strategy=tpu`
on all hosts.

  --zone=ZONE              TPU zone with v5e capacity, e.g. us-west4-a (required)
  --workdir=gs://...       trainer workdir; TPU hosts write only to Cloud Storage (required)
  --name=NAME              TPU VM name (default dae-trainer-tpu)
  --project=ID             Google Cloud project (default: gcloud's configured one)
  --accelerator-type=TYPE  TPU type when creating (default v5litepod-8)
  --version=VERSION        TPU software version when creating (default v2-alpha-tpuv5-lite,
                           the v5e base image; tensorflow-tpu comes from pip)
  --config=PATH            config path inside the installed package (default configs/tpu.py)
  --wheel=FILE             install this wheel instead of building one from the checkout
  --dry-run                print the commands; create, copy and run nothing
  -h, --help               this text
  -- TRAINER_FLAGS         passed to the trainer, e.g. -- --config.train.num_epochs=5

Values may also be given as `--flag VALUE`. PYTHON (default python3) builds the wheel.
EOF
}

die() {
  echo "submit_tpu_vm: $*" >&2
  exit 2
}

repo_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
name="dae-trainer-tpu"
zone=""
project=""
accelerator_type="v5litepod-8"
version="v2-alpha-tpuv5-lite"
workdir=""
config="configs/tpu.py"
wheel=""
dry_run=false
trainer_args=()

while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --dry-run) dry_run=true ;;
    --) shift; trainer_args=("$@"); break ;;
    --name | --zone | --project | --accelerator-type | --version | --workdir | --config | --wheel)
      if (($# < 2)) || [[ "$2" == --* ]]; then
        die "$1 needs a value, e.g. $1=VALUE"
      fi
      # Rewritten as --flag=VALUE and parsed again.
      set -- "$1=$2" "${@:3}"
      continue ;;
    --name=*) name=${1#*=} ;;
    --zone=*) zone=${1#*=} ;;
    --project=*) project=${1#*=} ;;
    --accelerator-type=*) accelerator_type=${1#*=} ;;
    --version=*) version=${1#*=} ;;
    --workdir=*) workdir=${1#*=} ;;
    --config=*) config=${1#*=} ;;
    --wheel=*) wheel=${1#*=} ;;
    *) die "unknown flag '$1'; see --help for the flags (trainer flags go after --)" ;;
  esac
  shift
done

[[ -n "$zone" ]] || die "--zone is missing; pass a zone with TPU v5e, e.g. --zone=us-west4-a"
[[ -n "$workdir" ]] || die "--workdir is missing; pass one like gs://BUCKET/dae-trainer/tpu1"
[[ "$workdir" == gs://* ]] ||
  die "--workdir '$workdir' is not a Cloud Storage path; pass one like gs://BUCKET/dae-trainer/tpu1"
[[ -z "$wheel" || -f "$wheel" ]] || die "--wheel '$wheel' does not exist; build one with: pip wheel . --no-deps"
# Only a real run needs gcloud (--dry-run prints the commands without it):
# checked before the wheel is built.
if [[ "$dry_run" != true ]] && ! command -v gcloud >/dev/null 2>&1; then
  die "gcloud (the Google Cloud CLI) is not on PATH; install it (https://cloud.google.com/sdk/docs/install), run gcloud auth login, or pass --dry-run to only print the commands"
fi

gcloud_tpu=(gcloud compute tpus tpu-vm)
target=("$name" "--zone=$zone")
if [[ -n "$project" ]]; then
  target+=("--project=$project")
fi

# One shell word for $1: as it is when that is safe, else in single quotes.
quote() {
  if [[ "$1" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

# Prints a command in a form that can be pasted into a shell.
show() {
  local words=() word
  for word in "$@"; do
    words+=("$(quote "$word")")
  done
  printf '%s\n' "${words[*]}"
}

# Runs a command, or only prints it under --dry-run.
run() {
  if [[ "$dry_run" == true ]]; then
    show "$@"
  else
    "$@"
  fi
}

if [[ -z "$wheel" ]]; then
  wheel_dir=$(mktemp -d "${TMPDIR:-/tmp}/dae-trainer-wheel.XXXXXX")
  trap 'rm -rf "$wheel_dir"' EXIT
  # Building the wheel touches nothing in the cloud, so --dry-run builds it too
  # and the commands below name the real file.
  build=("$repo_dir/scripts/build_wheel.sh" "$wheel_dir")
  if [[ "$dry_run" == true ]]; then
    printf '# built with (removed on exit): %s\n' "$(show "${build[@]}")"
  fi
  wheel=$("${build[@]}")
fi
wheel_name=$(basename "$wheel")

# Reuse the TPU VM if it exists: creating one takes minutes and quota.
if [[ "$dry_run" == true ]]; then
  show "${gcloud_tpu[@]}" describe "${target[@]}"
  printf '# only if it does not exist:\n'
  show "${gcloud_tpu[@]}" create "${target[@]}" "--accelerator-type=$accelerator_type" "--version=$version"
elif "${gcloud_tpu[@]}" describe "${target[@]}" --format='value(state)' >/dev/null 2>&1; then
  echo "submit_tpu_vm: reusing TPU VM $name in $zone" >&2
else
  "${gcloud_tpu[@]}" create "${target[@]}" "--accelerator-type=$accelerator_type" "--version=$version"
fi

# Every host of a slice runs the same program, so every host needs the package.
run "${gcloud_tpu[@]}" scp "$wheel" "$name:$wheel_name" "--zone=$zone" --worker=all ${project:+"--project=$project"}
# The remote shell parses this line: every value in it is quoted with %q, so a
# wheel named e.g. x$(cmd).whl installs that file instead of running cmd.
install="python3 -m pip install --user --upgrade $(printf %q "./${wheel_name}[tpu]") -f $(printf %q "$LIBTPU_INDEX")"
# Config paths are relative to the installed package's root (where configs/
# sits), as they are to the repository root and to the image's /app. The
# command substitution is meant for the remote shell, hence single quotes.
# shellcheck disable=SC2016
package_root='$(python3 -c "import configs, os; print(os.path.dirname(os.path.dirname(os.path.abspath(configs.__file__))))")'
train="cd \"$package_root\" && python3 -m trainer.main"
for flag in "--config=$config" "--workdir=$workdir" "--config.runtime.strategy=tpu" "${trainer_args[@]}"; do
  train+=" $(quote "$flag")"
done
run "${gcloud_tpu[@]}" ssh "${target[@]}" --worker=all "--command=$install"
run "${gcloud_tpu[@]}" ssh "${target[@]}" --worker=all "--command=$train"
