"""Classical denoising baselines, tuned fairly, for the evaluation report.

The report compares the trained autoencoders with classical denoisers on the
same noisy images. `tuning.tune_baseline` grid-searches one baseline's parameters on
a tuning pair (noisy, clean) of held-out TRAINING images, never the test set,
maximising the per-image mean PSNR (the project's convention: the mean over
images of 10*log10(1/MSE_i)); the returned `TunedBaseline` then denoises any
images, e.g. the test set, with those parameters.

Why tuning, and why a level correction. With default parameters classical
denoisers do badly on this project's noise (3x3 median 15.5 dB, BM3D 13.9 dB,
noisy input 11.0 dB at gaussian 0.4), mostly for one reason: the noisy images
are clipped to [0, 1]. Clipping zero-mean Gaussian noise of std s lifts the
expected value of a black pixel to s/sqrt(2*pi) (0.16 at s=0.4) and lowers a
white one by as much, so a denoiser that estimates local means returns a grey
background and grey strokes: an affine loss of contrast. Salt-and-pepper
noise (fraction p) does the same with p/2 on either side; masking (fraction p)
lowers strokes only, to 1-p. All three are affine in expectation, so every
baseline but `noisy` and `wiener` (see below) ends with the levels map of
image editors,

    clip((y - black_level) / (white_level - black_level), 0, 1),

which maps the lifted black back to 0 and the lowered white back to 1; its
clip at 0 also zeroes the residual background noise below the black level (a
soft threshold, which suits MNIST's mostly black images). black_level and
white_level are grid-searched jointly with the method's own parameters (the
grid contains the identity 0/1, and values for all three noise types); the
level grid costs only array arithmetic on an output computed once per method
setting. Correcting the input instead (the same map before denoising, with
the output map on top) was measured too, for median, gaussian blur, TV,
wavelet and NL-means at gaussian 0.4, and gained at most 0.02 dB: these
denoisers nearly commute with affine intensity maps, so only the output is
corrected. The methods' noise
parameters (BM3D's sigma_psd, NL-means' h, ...) are tuned too, because
clipping also shrinks the noise: its std on the background is 0.58*s, not s.

The baselines (`BASELINE_NAMES`):
  noisy: the identity (params {}), the noisy input's own PSNR.
  median: scipy.ndimage.median_filter, size.
  gaussian_blur: scipy.ndimage.gaussian_filter, sigma.
  total_variation: skimage.restoration.denoise_tv_chambolle's iterations, weight,
    run on all images at once (`_total_variation`: bit for bit skimage's output).
  nl_means: skimage.restoration.denoise_nl_means (fast mode), h, patch_size,
    patch_distance (small patches: the images are 28x28).
  wavelet: skimage.restoration.denoise_wavelet's BayesShrink soft thresholding
    (computed with PyWavelets on all images at once, bit for bit skimage's
    output), sigma, wavelet, wavelet_levels and cycle_shifts:
    averaging over cycle_shifts**2 circular shifts (cycle spinning, Coifman
    and Donoho 1995) removes the decimated transform's shift variance, which
    on 28x28 images costs about 2 dB.
  bm3d: the `bm3d` package, sigma_psd, single-threaded (deterministic) and with
    the profile's FFT domain for the exact noise variances set to 8 instead
    of 32, which exceeds a 28-pixel image: 14x faster, and no worse (measured).
  wiener: the best linear filter: a global affine map from all noisy pixels of
    an image to all its clean pixels (784x784 for MNIST, plus an offset)
    fitted by ridge least squares on `fit_noisy`/`fit_clean` (training images,
    several thousand, other than the tuning pair), ridge strength (relative to
    the mean eigenvalue of the centred Gram matrix) tuned on the tuning pair;
    its output is clipped to [0, 1]. Position-dependent weights let it learn
    where strokes occur. It gets no levels map: its least-squares offset and
    gains already undo the clipping bias, and it stays the reference "best
    linear filter" (NOTES: about 18.7 dB pooled at gaussian 0.4 with all of
    MNIST; 18.3 dB pooled from 5,000 images here). The levels map's clip
    would make it nonlinear (a soft threshold), worth about 1 dB more.

What each baseline costs and scores: docs/evaluation.md, "The baselines' cost and quality".

scipy, scikit-image, PyWavelets and bm3d are imported when a baseline needs
them, so this module imports without them.
"""

import dataclasses
import importlib
import itertools
from typing import Any, Callable, Mapping

import numpy as np

from trainer.evaluation import wiener


BASELINE_NAMES = ("noisy", "median", "gaussian_blur", "total_variation", "nl_means", "wavelet",
                  "bm3d", "wiener")
# The evaluator runs these on a configurable subset of images: about 40 ms per image.
SLOW_BASELINES = ("bm3d",)

# The levels map's grid (see the module docstring). The best black level is
# above the lift (0.16 at gaussian 0.4: 0.25-0.3 is chosen, the extra being the
# soft threshold); 0.5 covers gaussian noise up to std 0.6 and salt-and-pepper
# up to 0.5. Low white levels cover masking half the pixels: strokes at 0.5 on
# average, lower once smoothed (nl_means chose 0.3 there when 0.2 was not offered).
# The whole grid costs only array arithmetic, so it is finer than the methods'.
_BLACK_LEVELS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
_WHITE_LEVELS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
# Level pairs closer than this binarise the image; they are left out of the grid.
_MIN_LEVEL_RANGE = 0.1
# PSNR is computed with MSE at least this (100 dB), so that one perfectly restored
# image (e.g. an all-black one) cannot make the mean infinite.
_MSE_FLOOR = 1e-10
# bm3d profile: FFT domain size for its exact transform-domain noise variances
# (white noise has the same variance at any size). The default, 32, exceeds a
# 28x28 image and makes every call take 0.2 s or more; 8, the smallest that holds
# a block, is 14 times faster and was no worse (19.9 vs 19.4 dB, best levels,
# 100 images at gaussian 0.4).
_BM3D_VARIANCE_DOMAIN = 8


def _import_optional(module_name: str, pip_name: str):
  """Imports a library only some baselines need; the error names the package to install."""
  try:
    return importlib.import_module(module_name)
  except ImportError as error:
    raise ImportError(f"This baseline needs {module_name}: pip install {pip_name}") from error


def check_images(images: np.ndarray, argument_name: str) -> np.ndarray:
  """Returns `images` as float32 after checking it is a [N, H, W, C] float array.

  Raises:
    ValueError: naming the argument, its shape or dtype and what is expected.
  """
  images = np.asarray(images)
  if images.ndim != 4 or 0 in images.shape:
    raise ValueError(f"{argument_name} has shape {images.shape}; expected a non-empty "
                     "[N, H, W, C] image batch, e.g. [N, 28, 28, 1].")
  if images.dtype.kind != "f":
    raise ValueError(f"{argument_name} has dtype {images.dtype}; expected float images in "
                     "[0, 1] (divide uint8 images by 255).")
  return images.astype(np.float32, copy=False)


def check_pair(noisy: np.ndarray, clean: np.ndarray, noisy_name: str,
                clean_name: str) -> tuple[np.ndarray, np.ndarray]:
  noisy = check_images(noisy, noisy_name)
  clean = check_images(clean, clean_name)
  if noisy.shape != clean.shape:
    raise ValueError(f"{noisy_name} has shape {noisy.shape} but {clean_name} has shape "
                     f"{clean.shape}; they must be the same images, [N, H, W, C].")
  return noisy, clean


def per_image_psnr_db(clean: np.ndarray, denoised: np.ndarray) -> np.ndarray:
  """10*log10(1/MSE) of each image ([N, ...] arrays in [0, 1]), MSE floored at 1e-10.

  The project's PSNR (`trainer.metrics.per_example_psnr`), in numpy.
  """
  clean = np.asarray(clean, dtype=np.float32)
  denoised = np.asarray(denoised, dtype=np.float32)
  axes = tuple(range(1, clean.ndim))
  mse = np.mean(np.square(clean - denoised), axis=axes)
  return 10.0 * np.log10(1.0 / np.maximum(mse, _MSE_FLOOR))


def apply_levels(images: np.ndarray, black_level: float, white_level: float) -> np.ndarray:
  """The levels map: black_level -> 0, white_level -> 1, clipped to [0, 1]."""
  scale = np.float32(1.0 / (white_level - black_level))
  return np.clip((images - np.float32(black_level)) * scale, 0.0, 1.0).astype(np.float32)


def level_pairs() -> list[tuple[float, float]]:
  return [(black, white) for black in _BLACK_LEVELS for white in _WHITE_LEVELS
          if white - black >= _MIN_LEVEL_RANGE - 1e-9]


# Planar methods: [M, H, W] float32 planes (one per image and channel) in, same out.


def _median(planes: np.ndarray, size: int) -> np.ndarray:
  ndimage = _import_optional("scipy.ndimage", "scipy")
  return ndimage.median_filter(planes, size=(1, size, size))


def _gaussian_blur(planes: np.ndarray, sigma: float) -> np.ndarray:
  ndimage = _import_optional("scipy.ndimage", "scipy")
  return ndimage.gaussian_filter(planes, sigma=(0.0, sigma, sigma))


def _total_variation(planes: np.ndarray, weight: float, eps: float = 2.0e-4,
                     max_num_iter: int = 200) -> np.ndarray:
  """skimage's `denoise_tv_chambolle(plane, weight)` of each plane, all planes at once.

  The same Chambolle iterations, float32 operations and stopping rule as
  skimage.restoration's `_denoise_tv_chambolle_nd` on one 2-D plane (what
  `denoise_tv_chambolle(stack, channel_axis=-1)` runs per channel), with the
  planes as one [M, H, W] array: each plane stops at its own iteration and then
  leaves the batch. Bit for bit skimage's output (tests/test_baselines.py), and
  2 to 3 times faster, the per-plane Python loop being most of skimage's time.
  """
  planes = np.asarray(planes, np.float32)
  result = np.empty_like(planes)
  active = np.arange(len(planes))  # Indices (into planes) of the planes still iterating.
  image = planes
  p = np.zeros((2, *planes.shape), np.float32)
  g = np.zeros_like(p)
  d = np.zeros_like(planes)
  size = float(planes.shape[1] * planes.shape[2])
  tau = 1.0 / 4.0  # 1 / (2 * ndim) for 2-D planes.
  energy_init = energy_previous = None
  for iteration in range(max_num_iter):
    if iteration:
      # d: the (negative) divergence of p.
      d = -p.sum(0)
      d[:, 1:, :] += p[0, :, :-1, :]
      d[:, :, 1:] += p[1, :, :, :-1]
      out = image + d
    else:
      out = image
    energy = (d ** 2).sum(axis=(1, 2))
    g[0, :, :-1, :] = np.diff(out, axis=1)
    g[1, :, :, :-1] = np.diff(out, axis=2)
    norm = np.sqrt((g ** 2).sum(axis=0))[np.newaxis, ...]
    energy += weight * norm.sum(axis=(2, 3))[0]
    norm *= tau / weight
    norm += 1.0
    p -= tau * g
    p /= norm
    energy /= size
    if not iteration:
      energy_init = energy_previous = energy
      continue
    done = np.abs(energy_previous - energy) < eps * energy_init
    if done.any():
      result[active[done]] = out[done]
      keep = ~done
      active, image, p, g, d = active[keep], image[keep], p[:, keep], g[:, keep], d[keep]
      energy_init, energy = energy_init[keep], energy[keep]
      if not len(active):
        return result
    energy_previous = energy
  result[active] = out
  return result


def _nl_means(planes: np.ndarray, h: float, patch_size: int, patch_distance: int) -> np.ndarray:
  restoration = _import_optional("skimage.restoration", "scikit-image")
  # skimage would compare patches across channels, so one call per image.
  return np.stack([
      restoration.denoise_nl_means(plane, h=h, patch_size=patch_size,
                                   patch_distance=patch_distance, fast_mode=True)
      for plane in planes])


def _bayes_shrink(coefficients: np.ndarray, variance: float) -> np.ndarray:
  """Soft thresholding of [M, h, w] detail coefficients at each plane's BayesShrink threshold.

  skimage's `_bayes_thresh` of each plane's coefficients (the same float32
  arithmetic), then PyWavelets' soft threshold.
  """
  pywt = _import_optional("pywt", "PyWavelets")
  detail_variance = np.mean(coefficients * coefficients, axis=(1, 2))
  eps = np.finfo(coefficients.dtype).eps
  threshold = variance / np.sqrt(np.maximum(detail_variance - variance, eps))
  return pywt.threshold(coefficients, value=threshold[:, None, None], mode="soft")


def _wavelet(planes: np.ndarray, sigma: float, wavelet: str, wavelet_levels: int,
             cycle_shifts: int) -> np.ndarray:
  """Cycle-spun BayesShrink wavelet denoising of each plane, all planes at once.

  Each shift is skimage.restoration's `denoise_wavelet(sigma=sigma,
  wavelet=wavelet, mode="soft", wavelet_levels=levels, method="BayesShrink",
  rescale_sigma=True)` of each plane (what it runs per channel of a stack; a
  float image is neither rescaled nor clipped there), computed by PyWavelets on
  the whole [M, H, W] batch along axes (1, 2) with a threshold per plane:
  bit for bit skimage's output (tests/test_baselines.py), 10 to 20 times faster.
  """
  pywt = _import_optional("pywt", "PyWavelets")
  # Beyond PyWavelets' maximum level every coefficient is a boundary effect (and it warns).
  maximum_levels = pywt.dwt_max_level(min(planes.shape[1:]), wavelet)
  levels = max(1, min(wavelet_levels, maximum_levels))
  variance = sigma ** 2
  height, width = planes.shape[1:]
  total = np.zeros_like(planes)
  for shift in itertools.product(range(cycle_shifts), repeat=2):
    shifted = np.roll(planes, shift, axis=(1, 2))
    coefficients = pywt.wavedecn(shifted, wavelet=wavelet, level=levels, axes=(1, 2))
    thresholded = [coefficients[0]] + [
        {key: _bayes_shrink(detail, variance) for key, detail in level.items()}
        for level in coefficients[1:]]
    # waverecn of an odd size returns one sample more (PyWavelets issue #80).
    denoised = pywt.waverecn(thresholded, wavelet, axes=(1, 2))[:, :height, :width]
    total += np.roll(denoised.astype(planes.dtype), tuple(-s for s in shift), axis=(1, 2))
  return total / np.float32(cycle_shifts * cycle_shifts)


def _bm3d(planes: np.ndarray, sigma_psd: float) -> np.ndarray:
  bm3d = _import_optional("bm3d", "bm3d")
  profile = bm3d.BM3DProfile()
  profile.nf = _BM3D_VARIANCE_DOMAIN
  # More threads make the output vary slightly from call to call (bm3d's docs).
  profile.num_threads = 1
  return np.stack([
      np.reshape(bm3d.bm3d(plane, sigma_psd=sigma_psd, profile=profile), plane.shape)
      for plane in planes]).astype(np.float32)


_PLANAR_METHODS: Mapping[str, Callable[..., np.ndarray]] = {
    "median": _median,
    "gaussian_blur": _gaussian_blur,
    "total_variation": _total_variation,
    "nl_means": _nl_means,
    "wavelet": _wavelet,
    "bm3d": _bm3d,
}


def _to_planes(images: np.ndarray) -> np.ndarray:
  """[N, H, W, C] -> [N*C, H, W]: every method filters each channel of each image alone."""
  return np.ascontiguousarray(np.moveaxis(images, -1, 1)).reshape((-1,) + images.shape[1:3])


def _from_planes(planes: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
  batch, height, width, channels = shape
  return np.moveaxis(planes.reshape(batch, channels, height, width), 1, -1)


def planar_denoise(name: str, images: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
  """The method's own output, before the levels map: [N, H, W, C] float32."""
  planes = _PLANAR_METHODS[name](_to_planes(images), **params)
  return _from_planes(np.asarray(planes, dtype=np.float32), images.shape)


@dataclasses.dataclass(frozen=True)
class TunedBaseline:
  """A baseline with its tuned parameters, ready to denoise any images.

  Attributes:
    name: one of BASELINE_NAMES.
    params: the chosen parameters, JSON-serialisable: the method's own and, for
      all but `noisy` and `wiener`, the levels map's `black_level` and
      `white_level`.
    tuning_psnr_db: per-image mean PSNR on the tuning images with those params.
    fitted: arrays fitted on training images (wiener: mean_noisy, mean_clean,
      weights); empty for the other baselines.
  """
  name: str
  params: dict
  tuning_psnr_db: float
  fitted: Mapping[str, np.ndarray] = dataclasses.field(
      default_factory=dict, repr=False, compare=False)

  def denoise(self, noisy: np.ndarray) -> np.ndarray:
    """Denoises [N, H, W, C] float images in [0, 1]; returns the same shape, float32, in [0, 1]."""
    check_name(self.name)
    images = check_images(noisy, "noisy")
    if self.name == "noisy":
      return images.copy()
    if self.name == "wiener":
      if "weights" not in self.fitted:
        raise ValueError("This wiener baseline has no fitted weights; create it with "
                         "tune_baseline('wiener', ..., fit_noisy=..., fit_clean=...).")
      return wiener.denoise(images, self.fitted)
    method_params = {key: value for key, value in self.params.items()
                     if key not in ("black_level", "white_level")}
    raw = planar_denoise(self.name, images, method_params)
    return apply_levels(raw, self.params["black_level"], self.params["white_level"])


def check_name(name: str) -> None:
  if name not in BASELINE_NAMES:
    raise ValueError(f"Unknown baseline {name!r}; valid baselines are {', '.join(BASELINE_NAMES)}.")


