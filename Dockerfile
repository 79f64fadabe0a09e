# dae-trainer training image: `docker run IMAGE --config=configs/default.py --workdir=...`.
#
#   docker build -t dae-trainer .                           # CPU (default)
#   docker build --build-arg ACCELERATOR=gpu -t dae-trainer:gpu .
#   docker build --build-arg ACCELERATOR=tpu -t dae-trainer:tpu .
#
# The package is installed from a wheel, not editable, so the image holds only
# what the wheel holds: the trainer, the configs and the bundled MNIST.
# scripts/check_wheel_install.sh replays these install and entry commands
# outside Docker in CI.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
WORKDIR /src
COPY setup.py ./
COPY configs ./configs
COPY input_pipeline ./input_pipeline
COPY trainer ./trainer
RUN pip wheel . --no-deps --no-cache-dir --wheel-dir /wheels

FROM ${PYTHON_IMAGE}
# cpu: tensorflow; gpu: tensorflow[and-cuda] (the CUDA libraries come from pip,
# the driver from the host); tpu: tensorflow-tpu with libtpu from Google's index.
ARG ACCELERATOR=cpu
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
COPY --from=builder /wheels /tmp/wheels
RUN set -eu; \
    case "$ACCELERATOR" in \
      cpu | gpu) find_links="" ;; \
      tpu) find_links="https://storage.googleapis.com/libtpu-releases/index.html" ;; \
      *) echo "ACCELERATOR must be cpu, gpu or tpu, not '$ACCELERATOR'" >&2; exit 1 ;; \
    esac; \
    wheel=$(ls /tmp/wheels/dae_trainer-*.whl); \
    pip install "${wheel}[${ACCELERATOR},pipeline]" ${find_links:+-f "$find_links"}; \
    rm -rf /tmp/wheels
# Config paths are relative to /app, as they are to the repository root
# (--config=configs/default.py, or /app/configs/default.py): /app/configs is
# the installed configs package itself, not a second copy.
WORKDIR /app
RUN ln -s "$(python -c 'import configs, os; print(os.path.dirname(configs.__file__))')" configs \
    && useradd --create-home --uid 1000 trainer
USER trainer
ENTRYPOINT ["python", "-m", "trainer.main"]
