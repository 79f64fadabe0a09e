"""Classical baselines: output contract, tuning on held-out images, bias handling, errors.

Real MNIST training images (the bundled copy) with clipped gaussian noise 0.4,
made with numpy: tuned on one handful of images, scored on another.
"""

import json

import numpy as np
import pytest
import tensorflow_datasets as tfds

from input_pipeline import data_source
from trainer.evaluation import baselines
from trainer.evaluation import tuning

# The baselines' libraries come with the `eval` extra, which `make test` installs.
from scipy import ndimage  # pylint: disable=g-bad-import-order

NOISE_STD = 0.4
# Image slices of the loaded training images: tuning, held-out scoring, wiener fitting.
TUNE = slice(0, 40)
HELD_OUT = slice(40, 80)
FIT = slice(100, 400)


@pytest.fixture(scope="module")
def mnist():
  """(noisy, clean): 400 MNIST training images, [400, 28, 28, 1] float32, gaussian 0.4 clipped."""
  builder = data_source.get_builder("mnist", None)
  images = tfds.as_numpy(builder.as_dataset(split="train[:400]", batch_size=-1))["image"]
  clean = images.astype(np.float32) / 255.0
  rng = np.random.default_rng(seed=0)
  noisy = np.clip(clean + NOISE_STD * rng.standard_normal(clean.shape, dtype=np.float32),
                  0.0, 1.0)
  return noisy, clean


@pytest.fixture(scope="module")
def wiener(mnist):
  noisy, clean = mnist
  return tuning.tune_baseline("wiener", noisy[TUNE], clean[TUNE],
                                 fit_noisy=noisy[FIT], fit_clean=clean[FIT])


def _mean_psnr(clean, denoised):
  return float(np.mean(baselines.per_image_psnr_db(clean, denoised)))


def test_noisy_is_the_identity(mnist):
  noisy, clean = mnist
  baseline = tuning.tune_baseline("noisy", noisy[TUNE], clean[TUNE])
  assert baseline.params == {}
  assert baseline.tuning_psnr_db == pytest.approx(_mean_psnr(clean[TUNE], noisy[TUNE]))
  denoised = baseline.denoise(noisy[HELD_OUT])
  np.testing.assert_array_equal(denoised, noisy[HELD_OUT])
  assert denoised.dtype == np.float32


# Parameters from the grids, so that the output contract is checked without tuning.
_FIXED_PARAMS = {
    "median": {"size": 3, "black_level": 0.25, "white_level": 0.8},
    "gaussian_blur": {"sigma": 1.0, "black_level": 0.3, "white_level": 0.7},
    "total_variation": {"weight": 0.2, "black_level": 0.25, "white_level": 0.7},
    "nl_means": {"h": 0.3, "patch_size": 5, "patch_distance": 3, "black_level": 0.25,
                 "white_level": 0.6},
    "wavelet": {"sigma": 0.3, "wavelet": "db1", "wavelet_levels": 1, "cycle_shifts": 2,
                "black_level": 0.3, "white_level": 0.7},
    "bm3d": {"sigma_psd": 0.2, "black_level": 0.25, "white_level": 0.7},
    "noisy": {},
}


@pytest.mark.parametrize("name", baselines.BASELINE_NAMES)
def test_output_has_input_shape_dtype_and_range(name, mnist, wiener):
  noisy, _ = mnist
  if name == "wiener":
    baseline = wiener
    images = noisy[HELD_OUT][:3].astype(np.float64)
  else:
    baseline = baselines.TunedBaseline(name, _FIXED_PARAMS[name], tuning_psnr_db=0.0)
    # Two channels: every method must filter each channel of each image alone.
    images = np.concatenate([noisy[HELD_OUT][:3], noisy[HELD_OUT][3:6]], axis=-1)
    images = images.astype(np.float64)
  denoised = baseline.denoise(images)
  assert denoised.shape == images.shape
  assert denoised.dtype == np.float32
  assert np.all(denoised >= 0.0) and np.all(denoised <= 1.0)
  if name != "wiener":
    # Channel 1 is the same method on other images: channels do not mix.
    single = baseline.denoise(images[..., 1:2])
    np.testing.assert_allclose(denoised[..., 1:2], single, atol=1e-6)


@pytest.mark.parametrize("name", [name for name in baselines.BASELINE_NAMES
                                  if name not in ("noisy", "bm3d", "wiener")])
def test_tuned_baseline_beats_noisy_input_on_held_out_images(name, mnist):
  noisy, clean = mnist
  baseline = tuning.tune_baseline(name, noisy[TUNE], clean[TUNE])
  json.dumps(baseline.params)
  noisy_psnr = _mean_psnr(clean[HELD_OUT], noisy[HELD_OUT])
  denoised_psnr = _mean_psnr(clean[HELD_OUT], baseline.denoise(noisy[HELD_OUT]))
  # About 11 dB -> 17 to 19.5 dB; the margin leaves room for 40-image tuning.
  assert denoised_psnr > noisy_psnr + 4.0, (baseline.params, noisy_psnr, denoised_psnr)
  assert baseline.tuning_psnr_db > noisy_psnr + 4.0


def test_tuned_bm3d_beats_noisy_input_on_held_out_images(mnist):
  noisy, clean = mnist
  # Few images: bm3d takes about 40 ms per image and grid point.
  tune, held_out = slice(0, 6), slice(40, 46)
  baseline = tuning.tune_baseline("bm3d", noisy[tune], clean[tune])
  noisy_psnr = _mean_psnr(clean[held_out], noisy[held_out])
  denoised_psnr = _mean_psnr(clean[held_out], baseline.denoise(noisy[held_out]))
  assert denoised_psnr > noisy_psnr + 4.0, (baseline.params, noisy_psnr, denoised_psnr)


def test_tuned_median_beats_untuned_3x3_median(mnist):
  # The untuned median keeps the clipping's grey background (NOTES: 15.5 dB); the
  # tuned one's levels map removes it (about 17.2 dB).
  noisy, clean = mnist
  baseline = tuning.tune_baseline("median", noisy[TUNE], clean[TUNE])
  untuned = ndimage.median_filter(noisy[HELD_OUT], size=(1, 3, 3, 1))
  untuned_psnr = _mean_psnr(clean[HELD_OUT], untuned)
  tuned_psnr = _mean_psnr(clean[HELD_OUT], baseline.denoise(noisy[HELD_OUT]))
  assert tuned_psnr > untuned_psnr + 1.0, (baseline.params, untuned_psnr, tuned_psnr)
  assert baseline.params["black_level"] > 0.0


def test_wiener_fitted_on_few_hundred_images_beats_noisy_input(mnist, wiener):
  noisy, clean = mnist
  json.dumps(wiener.params)
  assert set(wiener.params) == {"relative_ridge"}
  noisy_psnr = _mean_psnr(clean[HELD_OUT], noisy[HELD_OUT])
  denoised_psnr = _mean_psnr(clean[HELD_OUT], wiener.denoise(noisy[HELD_OUT]))
  # 300 fitting images (fewer than 784 pixels) give about 16 dB.
  assert denoised_psnr > noisy_psnr + 3.0, (wiener.params, noisy_psnr, denoised_psnr)


def test_wiener_without_fit_data_raises(mnist):
  noisy, clean = mnist
  with pytest.raises(ValueError, match="fit_noisy and fit_clean"):
    tuning.tune_baseline("wiener", noisy[TUNE], clean[TUNE])
  with pytest.raises(ValueError, match="fit_noisy and fit_clean"):
    tuning.tune_baseline("wiener", noisy[TUNE], clean[TUNE], fit_noisy=noisy[FIT])


def test_wiener_rejects_images_of_another_size(wiener):
  with pytest.raises(ValueError, match=r"\(2, 14, 14, 1\)"):
    wiener.denoise(np.zeros((2, 14, 14, 1), np.float32))


def test_unknown_name_raises_listing_valid_names(mnist):
  noisy, clean = mnist
  with pytest.raises(ValueError, match="'bilateral'.*noisy, median, .*wiener"):
    tuning.tune_baseline("bilateral", noisy[TUNE], clean[TUNE])


@pytest.mark.parametrize("shape", [(28, 28), (5, 28, 28), (2, 28, 28, 1, 1)])
def test_bad_shape_raises_naming_shape(shape):
  images = np.zeros(shape, np.float32)
  with pytest.raises(ValueError, match=r"\[N, H, W, C\]") as error:
    tuning.tune_baseline("median", images, images)
  assert str(shape) in str(error.value)
  baseline = baselines.TunedBaseline("gaussian_blur", _FIXED_PARAMS["gaussian_blur"], 0.0)
  with pytest.raises(ValueError, match=r"\[N, H, W, C\]"):
    baseline.denoise(images)


def test_mismatched_pair_and_integer_images_raise():
  images = np.zeros((4, 28, 28, 1), np.float32)
  with pytest.raises(ValueError, match="clean_tune has shape"):
    tuning.tune_baseline("median", images, images[:3])
  with pytest.raises(ValueError, match="uint8"):
    tuning.tune_baseline("median", images.astype(np.uint8), images)


@pytest.mark.slow
@pytest.mark.parametrize("name", baselines.BASELINE_NAMES)
def test_tuned_baselines_on_200_images(name, mnist):
  """Tuned on 100 images, scored on 100 others: every baseline well above the noisy input."""
  noisy, clean = mnist
  tune, held_out = slice(0, 100), slice(100, 200)
  baseline = tuning.tune_baseline(name, noisy[tune], clean[tune], fit_noisy=noisy[200:],
                                     fit_clean=clean[200:])
  psnr = _mean_psnr(clean[held_out], baseline.denoise(noisy[held_out]))
  noisy_psnr = _mean_psnr(clean[held_out], noisy[held_out])
  if name == "noisy":
    assert psnr == pytest.approx(noisy_psnr)
  else:
    assert psnr > noisy_psnr + 4.0, (baseline.params, noisy_psnr, psnr)


def _skimage_total_variation(planes, weight):
  from skimage import restoration  # pylint: disable=g-import-not-at-top
  stacked = np.moveaxis(planes, 0, -1)
  return np.moveaxis(restoration.denoise_tv_chambolle(stacked, weight=weight, channel_axis=-1),
                     -1, 0)


def _skimage_wavelet(planes, sigma, wavelet, wavelet_levels, cycle_shifts):
  """The wavelet baseline as it was, one skimage call per shift (each image a channel)."""
  import itertools  # pylint: disable=g-import-not-at-top
  import pywt  # pylint: disable=g-import-not-at-top
  from skimage import restoration  # pylint: disable=g-import-not-at-top
  levels = max(1, min(wavelet_levels, pywt.dwt_max_level(min(planes.shape[1:]), wavelet)))
  total = np.zeros_like(planes)
  for shift in itertools.product(range(cycle_shifts), repeat=2):
    shifted = np.moveaxis(np.roll(planes, shift, axis=(1, 2)), 0, -1)
    denoised = restoration.denoise_wavelet(
        shifted, sigma=sigma, wavelet=wavelet, mode="soft", wavelet_levels=levels,
        method="BayesShrink", rescale_sigma=True, channel_axis=-1)
    total += np.roll(np.moveaxis(denoised, -1, 0), tuple(-s for s in shift), axis=(1, 2))
  return total / np.float32(cycle_shifts * cycle_shifts)


@pytest.mark.parametrize("weight", [0.02, 0.15, 0.8])
def test_batched_total_variation_is_skimage_bit_for_bit(mnist, weight):
  noisy, _ = mnist
  planes = noisy[:60, ..., 0]
  expected = _skimage_total_variation(planes, weight)
  np.testing.assert_array_equal(baselines._total_variation(planes, weight), expected)
  # Each plane stops at its own iteration: a plane alone gives the same.
  np.testing.assert_array_equal(baselines._total_variation(planes[7:8], weight), expected[7:8])


@pytest.mark.parametrize("params", [
    {"sigma": 0.45, "wavelet": "db1", "wavelet_levels": 1, "cycle_shifts": 2},
    {"sigma": 0.1, "wavelet": "sym4", "wavelet_levels": 2, "cycle_shifts": 2},
    {"sigma": 0.3, "wavelet": "db1", "wavelet_levels": 2, "cycle_shifts": 1},
], ids=["db1_1", "sym4_2", "db1_2_unshifted"])
def test_batched_wavelet_is_skimage_bit_for_bit(mnist, params):
  noisy, _ = mnist
  planes = noisy[:60, ..., 0]
  np.testing.assert_array_equal(baselines._wavelet(planes, **params),
                                _skimage_wavelet(planes, **params))


def test_hill_climb_finds_the_first_maximum_of_a_full_sweep():
  def climb(values, start):
    evaluated = []

    def score(index):
      evaluated.append(index)
      return values[index]

    return tuning._climb(list(range(len(values))), start, score), len(set(evaluated))

  assert climb([1, 2, 5, 3, 1], 0) == (2, 4)
  assert climb([1, 2, 5, 3, 1], 4) == (2, 4)
  assert climb([1, 2, 5, 3, 1], 2) == (2, 3)
  assert climb([9, 2, 1], 1) == (0, 2)  # Lower first: the upper one is never needed.
  assert climb([1, 2, 9], 0) == (2, 3)
  # A tie goes to the lower index, the one a sweep (strict >, in order) keeps.
  assert climb([1, 4, 4, 2], 2) == (1, 3)
  assert climb([1, 4, 4, 2], 1) == (1, 3)


@pytest.mark.parametrize("name", sorted(tuning.ORDERED_AXES))
def test_hill_climbed_tuning_chooses_what_the_full_sweep_chooses(name, mnist):
  noisy, clean = mnist
  # Clean, lightly and heavily noisy tuning images: the peak moves along the axis.
  size = 6 if name == "bm3d" else 30
  for noisy_tune in (noisy[:size], np.clip(clean[:size] + (noisy[:size] - clean[:size]) / 4, 0, 1)):
    climbed = tuning.tune_baseline(name, noisy_tune, clean[:size])
    swept = tuning.tune_baseline(name, noisy_tune, clean[:size], exhaustive=True)
    assert climbed.params == swept.params
    assert climbed.tuning_psnr_db == swept.tuning_psnr_db
