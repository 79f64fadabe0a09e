"""The seed tutorial's way of training, timed: (a) of scripts/benchmark.py.

`keras.Model.fit` on numpy arrays whose noise was drawn once (the tutorial's
code in substance, same model and batch). `TutorialFit` times it a few epochs
at a time so that it can alternate with the trainer's loop in one process;
every timing excludes the first epoch, which traces functions.
"""

import time

import keras
import numpy as np
import tensorflow as tf

from trainer import metrics
from trainer import models


def tutorial_arrays(data, split: str, noise_factor: float,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(noisy, clean) float32 arrays of a split, as the tutorial makes them.

  Images scaled to [0, 1]; Gaussian noise drawn once with numpy, clipped to [0, 1].
  """
  images = data.builder.as_dataset(split=split, batch_size=-1)["image"]
  clean = images.numpy().astype(np.float32) / 255.0
  noise = np.random.default_rng(seed).normal(0.0, noise_factor, clean.shape).astype(np.float32)
  return np.clip(clean + noise, 0.0, 1.0), clean


def tutorial_model(model_config, image_shape, seed: int) -> keras.Model:
  """The same autoencoder, compiled as the tutorial does: Adam, binary cross-entropy."""
  model = models.create_model(model_config, image_shape, seed)
  model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
  return model


class _EpochTimes(keras.callbacks.Callback):

  def __init__(self):
    super().__init__()
    self.seconds = []
    self._start = 0.0

  def on_epoch_begin(self, epoch, logs=None):
    self._start = time.perf_counter()

  def on_epoch_end(self, epoch, logs=None):
    self.seconds.append(time.perf_counter() - self._start)


def _fit_epochs(model: keras.Model, noisy: np.ndarray, clean: np.ndarray, batch_size: int,
                num_epochs: int) -> list[float]:
  """`Model.fit` as the tutorial calls it, for `num_epochs` epochs; each epoch's seconds."""
  times = _EpochTimes()
  model.fit(noisy, clean, batch_size=batch_size, epochs=num_epochs, shuffle=True, verbose=0,
            callbacks=[times])
  return times.seconds


def _full_batch_examples(num_examples: int, batch_size: int) -> int:
  # fit also runs the last partial batch, but at a full batch's cost: count
  # full batches only, as the trainer does.
  return (num_examples // batch_size) * batch_size


def time_tutorial_fit(model: keras.Model, noisy: np.ndarray, clean: np.ndarray,
                      batch_size: int, num_epochs: int) -> tuple[float, float]:
  """Fits `num_epochs + 1` epochs; returns (examples/s after the first epoch, total seconds)."""
  start = time.perf_counter()
  seconds = _fit_epochs(model, noisy, clean, batch_size, num_epochs + 1)
  total = time.perf_counter() - start
  return _full_batch_examples(len(noisy), batch_size) * num_epochs / sum(seconds[1:]), total


class TutorialFit:
  """(a), timed a few epochs at a time: `Model.fit` on the same arrays, epochs after the first.

  Built (and its first epoch, which traces, run) once, so that its timings
  can alternate with the trainer's in one process.
  """

  def __init__(self, model: keras.Model, noisy: np.ndarray, clean: np.ndarray,
               batch_size: int):
    self._model, self._noisy, self._clean, self._batch_size = model, noisy, clean, batch_size
    self._fit(1)

  def _fit(self, num_epochs: int) -> list[float]:
    return _fit_epochs(self._model, self._noisy, self._clean, self._batch_size, num_epochs)

  def examples_per_second(self, num_epochs: int) -> float:
    """Fits `num_epochs` more epochs; their examples per second (each epoch timed alone)."""
    seconds = sum(self._fit(num_epochs))
    return _full_batch_examples(len(self._noisy), self._batch_size) * num_epochs / seconds


def mean_psnr(clean: np.ndarray, denoised: np.ndarray) -> float:
  """Mean over images of 10 log10(1 / MSE): the tutorial's and the trainer's PSNR."""
  return float(tf.reduce_mean(metrics.per_example_psnr(clean, denoised)))
