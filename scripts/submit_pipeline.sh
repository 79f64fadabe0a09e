#!/usr/bin/env bash
# Submits the dae-trainer pipeline (trainer/pipeline/) to Vertex AI Pipelines:
# data -> train (on an accelerator) -> evaluate and bless -> push to the serving
# directory. `python -m trainer.pipeline submit` compiles the pipeline with every
# step on --image and creates the PipelineJob; --dry-run prints it instead.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: scripts/submit_pipeline.sh --project=PROJECT --image=IMAGE
                                  --pipeline-root=gs://BUCKET/PATH --serving-dir=gs://BUCKET/PATH
                                  [options] [-- --config.FIELD=VALUE ...]

  --project=ID             Google Cloud project (required)
  --region=REGION          Vertex AI region (default us-central1)
  --image=URI              the image cloudbuild.yaml builds, e.g.
                           us-central1-docker.pkg.dev/PROJECT/dae-trainer/dae-trainer:latest (required)
  --pipeline-root=gs://... the steps' artifacts and the training workdirs (required)
  --serving-dir=gs://...   the model's base directory; pushes go to <dir>/<version>/ (required)
  --config=PATH            config inside the image (default configs/default.py)
  --accelerator-type=TYPE  the train step's accelerator (default NVIDIA_TESLA_T4)
  --accelerator-count=N    accelerators of the train step (default 1; 0 for CPUs only)
  --min-psnr-db=DB         blessing threshold (default: python -m trainer.pipeline --helpfull)
  --max-psnr-drop-db=DB    blessing tolerance against the model in service
  --display-name=NAME      the PipelineJob's name (default dae-trainer-UTCTIME)
  --dry-run                print the PipelineJob; submit nothing
  -h, --help               this text
  -- --config.A.B=V ...    config overrides, as for trainer.main

PYTHON (default python3) runs python -m trainer.pipeline; it needs the
[pipeline] extra.
USAGE
}

die() {
  echo "submit_pipeline: $*" >&2
  exit 2
}

config="configs/default.py"
args=()
while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --dry-run) args+=("--dry_run") ;;
    --config=*) config=${1#*=} ;;
    --project=* | --region=* | --image=* | --pipeline-root=* | --serving-dir=* | \
      --accelerator-type=* | --accelerator-count=* | --min-psnr-db=* | --max-psnr-drop-db=* | \
      --display-name=*)
      name=${1%%=*}
      name=${name#--}
      # The Python flags spell words with underscores.
      args+=("--${name//-/_}=${1#*=}") ;;
    --) shift; args+=("$@"); break ;;
    *) die "unknown argument '$1'; see --help" ;;
  esac
  shift
done

exec "${PYTHON:-python3}" -m trainer.pipeline submit "--config=$config" "${args[@]}"
