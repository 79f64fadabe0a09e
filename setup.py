"""Packaging for dae-trainer: a distributed denoising-autoencoder training job."""

import setuptools

setuptools.setup(
    name="dae-trainer",
    version="0.1.0",
    description=(
        "Denoising autoencoder training on MNIST-like TFDS datasets with "
        "tf.distribute, TensorBoard and SavedModel export."
    ),
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["trainer", "trainer.*", "input_pipeline", "input_pipeline.*", "configs", "configs.*"]),
    include_package_data=True,
    package_data={"input_pipeline": ["data/**/*"]},
    install_requires=[
        "tensorflow>=2.21,<2.22",
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
        "test": ["pytest>=8", "pytest-xdist>=3.5"],
    },
)
