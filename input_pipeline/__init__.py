"""Input pipeline: TFDS data source, noise models and the tf.data pipelines that pair noisy and clean images."""
