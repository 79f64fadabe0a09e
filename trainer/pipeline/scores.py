"""Scores of a SavedModel on the fixed noisy test set: the evaluation suite's own numbers.

The noisy images are `trainer.evaluation.scoring`'s fixed noise of the test
stream (the seed of configs/evaluate.py), so a model's score here equals its
`psnr_mean_db` in `python -m trainer.evaluate` on the same split and level.
Models run through their `serving_default` signature: what is scored is what
a server would serve. Every call into the evaluation suite is in `_psnr_db`.
"""

import numpy as np
import tensorflow as tf

from input_pipeline import data_source
from input_pipeline import noise
from input_pipeline import pipeline
from trainer import export
from trainer.evaluation import plan
from trainer.evaluation import scoring

# configs/evaluate.py's `seed`: the root of every noise draw of the evaluation.
EVALUATION_SEED = 0
# Images per call of the serving signature.
BATCH_SIZE = 1000


def read_test_images(config) -> np.ndarray:
  """The clean images (float32 [N, 28, 28, 1] in [0, 1]) of the config's eval split."""
  builder = data_source.get_builder(config.dataset, config.data_dir)
  dataset = builder.as_dataset(split=config.eval_split, shuffle_files=False,
                               read_config=pipeline.READ_CONFIG)
  batches = [pipeline.scale_images(batch["image"]).numpy()
             for batch in dataset.batch(10_000).as_numpy_iterator()]
  return np.concatenate(batches)


def denoise(loaded, images: np.ndarray) -> np.ndarray:
  """The loaded SavedModel's serving_default output on `images`, in batches."""
  signature = loaded.signatures[export.SERVING_ENDPOINT]
  return np.concatenate([
      signature(images=tf.constant(images[start:start + BATCH_SIZE]))["denoised"].numpy()
      for start in range(0, len(images), BATCH_SIZE)])


def _psnr_db(loaded, clean: np.ndarray, noise_type: str, level: float) -> float:
  """The evaluation suite's psnr_mean_db of `loaded` at one (noise type, level)."""
  seed = plan.noise_seed(EVALUATION_SEED, noise_type, level, plan.TEST_STREAM)
  noisy = scoring.add_fixed_noise(clean, noise.NoiseSpec(noise_type, level), seed)
  per_example = scoring.per_example_metrics(clean, denoise(loaded, noisy))
  return scoring.summarize(per_example)["psnr_mean_db"]


def score(saved_model_path: str, clean: np.ndarray, noise_type: str,
          levels) -> dict[str, float]:
  """{level as text: PSNR dB} of the SavedModel at `saved_model_path`, at each level."""
  loaded = tf.saved_model.load(saved_model_path)
  return {repr(float(level)): _psnr_db(loaded, clean, noise_type, float(level))
          for level in levels}
