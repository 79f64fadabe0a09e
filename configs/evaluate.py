"""Configuration of `python -m trainer.evaluate`: which data, which noise, which baselines.

Every (noise type, level) below is applied once, with a fixed seed, to the test
images; every model and every baseline is then scored on those same noisy
images. Baselines are tuned, and the Wiener filter fitted, on the last
examples of the TRAINING split, so nothing is tuned on the test images.

The returned config is locked: a misspelled field in an override fails loudly.
Override any field on the command line, e.g.
`--config.num_examples=1000 --config.levels.gaussian=0.2,0.4 --config.baselines=noisy,median`.
Overriding one type's levels keeps the others' defaults: `--config.levels.masking='()'` skips one.
"""

import ml_collections

from trainer.evaluation import baselines


def get_config() -> ml_collections.ConfigDict:
  """Returns the default evaluation configuration."""
  config = ml_collections.ConfigDict()
  # TFDS dataset name; must be the dataset the models were trained on (28x28x1 images).
  config.dataset = "mnist"
  # TFDS data_dir; None uses TFDS's default (honours TFDS_DATA_DIR), then the bundled mnist.
  config.data_dir = ml_collections.FieldReference(None, field_type=str)
  # TFDS split (or slice, e.g. "test[:1000]") every method is scored on.
  config.split = "test"
  # Score only the first this many images of `split`; 0 scores the whole split.
  config.num_examples = 0
  # TFDS split (a plain split name, not a slice) whose LAST examples tune the baselines and
  # fit the Wiener filter, and whose first examples train the representation probes.
  config.train_split = "train"
  # Root seed of every noise draw (test, tuning and fit images) and of the probes.
  config.seed = 0

  # Noise levels per noise type (input_pipeline.noise.NOISE_TYPES): the Gaussian std, or
  # the fraction of pixels flipped (salt_and_pepper) or zeroed (masking). An empty
  # tuple skips that type.
  config.levels = ml_collections.ConfigDict({
      "gaussian": (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8),
      "salt_and_pepper": (0.05, 0.1, 0.2, 0.3, 0.5),
      "masking": (0.1, 0.25, 0.5, 0.75),
  })

  config.reference = ml_collections.ConfigDict()
  # Noise type of the headline table (the noise the tutorial trains and tests with).
  config.reference.type = "gaussian"
  # Its level; evaluated even when missing from `levels`.
  config.reference.level = 0.4

  # Classical denoisers compared with the models (trainer/evaluation/baselines.py), e.g.
  # --config.baselines=noisy,median. "noisy" is the noisy input itself.
  config.baselines = tuple(baselines.BASELINE_NAMES)
  # Baselines in baselines.SLOW_BASELINES (bm3d) denoise only the first this many test
  # images; the report marks their rows and compares the models on the same subset.
  config.slow_baseline_max_images = 500
  # Training-split examples (its last ones) on which each baseline's parameters are tuned
  # for each noise type and level: held out from the test set.
  config.tuning_examples = 200
  # Training-split examples just before the tuning ones that fit the Wiener filter.
  config.wiener_fit_examples = 5000

  config.representation = ml_collections.ConfigDict()
  # Training-split examples (its first ones) whose encoder features train the linear
  # probe; 0 skips the representation evaluation.
  config.representation.train_examples = 10_000

  # Worker processes for the baselines' tuning and denoising; 0 uses every core, 1 runs them
  # serially in the evaluating process. The numbers are the same either way.
  config.num_workers = 0
  # Where each baseline's result per noise type and level (and the raw-pixel representation
  # scores) is kept for the next evaluation with the same data, noise and code;
  # "" is $XDG_CACHE_HOME/dae-trainer/evaluation, else ~/.cache/dae-trainer/evaluation.
  config.cache_dir = ""
  # False: compute every baseline afresh and neither read nor write the cache.
  config.use_cache = True

  # Images per call to a SavedModel and per metric computation.
  config.batch_size = 1000
  # Test images shown per noise type in examples_<type>.png and in TensorBoard.
  config.num_images_to_show = 10

  config.lock()
  return config
