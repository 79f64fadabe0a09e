"""Tuning the classical baselines: each one's parameter grid and the search over it.

`tune_baseline(name, noisy_tune, clean_tune)` grid-searches a baseline's own
parameters and, for all but `noisy` and `wiener`, the levels map that undoes
the clipping bias (see `baselines`), maximising the per-image mean PSNR on
held-out TRAINING images; it returns a `baselines.TunedBaseline` that then
denoises any images, e.g. the test set, with those parameters.
"""

import itertools
import time
from typing import Any, Sequence

from absl import logging
import numpy as np

from trainer.evaluation import baselines


def _grid(**values: Sequence[Any]) -> tuple[dict[str, Any], ...]:
  """Every combination of the given parameter values, as a tuple of dicts."""
  names = list(values)
  return tuple(dict(zip(names, combination))
               for combination in itertools.product(*(values[name] for name in names)))


# Each method's own parameter grid, without the levels map's (searched on every
# output). Values cover gaussian noise std 0.1 to 0.6, salt-and-pepper and masking
# fractions 0.1 to 0.5: the tuning picks whichever suits the tuning images.
_PARAMETER_GRIDS = {
    "noisy": ({},),
    "median": _grid(size=(3, 5, 7)),
    "gaussian_blur": _grid(sigma=(0.5, 0.75, 1.0, 1.25, 1.5, 2.0)),
    "total_variation": _grid(weight=(0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.8)),
    "nl_means": tuple(
        dict(h=h, patch_size=patch_size, patch_distance=patch_distance)
        for h in (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6)
        for patch_size, patch_distance in ((3, 3), (5, 3), (5, 6))),
    # Without cycle spinning (cycle_shifts=1) it was 0.7-4 dB worse at every setting
    # tried (2.1 dB between the best of each, gaussian 0.4); 3 or 4 (9 or 16 shifts)
    # were no better than 2, at 2-4 times the cost.
    "wavelet": _grid(sigma=(0.05, 0.1, 0.2, 0.3, 0.45), wavelet=("db1", "sym4"),
                     wavelet_levels=(1, 2), cycle_shifts=(2,)),
    # Finer around 0.25, the best at gaussian 0.4: 0.2 and 0.3 were 0.5 dB worse.
    "bm3d": _grid(sigma_psd=(0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.6)),
    # Ridge strength as a fraction of the mean eigenvalue of the Gram matrix, so that
    # the grid does not depend on the number of fitting images.
    # From a few hundred fitting images (fewer than pixels) to several thousand, the
    # best value moves from about 1 to about 0.1.
    "wiener": _grid(relative_ridge=(1e-3, 1e-2, 0.1, 0.3, 1.0, 3.0)),
}


def _best_levels(raw: np.ndarray, clean: np.ndarray) -> tuple[float, float, float]:
  """(psnr, black_level, white_level) of the levels map that maximises the mean PSNR."""
  best = (-np.inf, 0.0, 1.0)
  for black, white in baselines.level_pairs():
    denoised = baselines.apply_levels(raw, black, white)
    psnr = float(np.mean(baselines.per_image_psnr_db(clean, denoised)))
    if psnr > best[0]:
      best = (psnr, black, white)
  return best


def _json_value(value: Any) -> Any:
  """numpy scalars -> Python ones, so that params serialise to JSON."""
  return value.item() if isinstance(value, np.generic) else value


def tune_baseline(name: str, noisy_tune: np.ndarray, clean_tune: np.ndarray,
                  fit_noisy: np.ndarray | None = None,
                  fit_clean: np.ndarray | None = None) -> baselines.TunedBaseline:
  """Grid-searches `name`'s parameters and levels map for the best mean PSNR on the tuning pair.

  Args:
    name: one of baselines.BASELINE_NAMES.
    noisy_tune: [N, H, W, C] float noisy images in [0, 1]: held-out training
      images (about 100 to 200), never the test set.
    clean_tune: the same images, clean.
    fit_noisy: wiener only (ignored by the others): [M, H, W, C] noisy training
      images, other than the tuning ones, to fit the linear map on (several
      thousand; fewer than H*W*C works through the ridge, less well).
    fit_clean: wiener only: the same images, clean.

  Returns:
    The baseline with the best parameters of its grid and their tuning PSNR.

  Raises:
    ValueError: unknown name, badly shaped images, or wiener without fit data.
  """
  baselines.check_name(name)
  noisy_tune, clean_tune = baselines.check_pair(noisy_tune, clean_tune, "noisy_tune", "clean_tune")
  start = time.monotonic()
  fitted: dict[str, np.ndarray] = {}
  if name == "noisy":
    params: dict[str, Any] = {}
    psnr = float(np.mean(baselines.per_image_psnr_db(clean_tune, noisy_tune)))
  elif name == "wiener":
    params, psnr, fitted = _tune_wiener(noisy_tune, clean_tune, fit_noisy, fit_clean)
  else:
    params, psnr = _tune_planar(name, noisy_tune, clean_tune)
  params = {key: _json_value(value) for key, value in params.items()}
  logging.info("Tuned baseline %s on %d images in %.1f s: %s, %.2f dB.", name,
               noisy_tune.shape[0], time.monotonic() - start, params, psnr)
  return baselines.TunedBaseline(name=name, params=params, tuning_psnr_db=psnr, fitted=fitted)


def _tune_planar(name: str, noisy: np.ndarray,
                 clean: np.ndarray) -> tuple[dict[str, Any], float]:
  best_psnr, best_params = -np.inf, {}
  for method_params in _PARAMETER_GRIDS[name]:
    raw = baselines.planar_denoise(name, noisy, method_params)
    psnr, black, white = _best_levels(raw, clean)
    logging.debug("%s %s: %.2f dB (levels %.2f..%.2f)", name, method_params, psnr, black, white)
    if psnr > best_psnr:
      best_psnr = psnr
      best_params = dict(method_params, black_level=black, white_level=white)
  return best_params, best_psnr


def _tune_wiener(noisy: np.ndarray, clean: np.ndarray, fit_noisy: np.ndarray | None,
                 fit_clean: np.ndarray | None
                 ) -> tuple[dict[str, Any], float, dict[str, np.ndarray]]:
  if fit_noisy is None or fit_clean is None:
    raise ValueError("The wiener baseline needs fit_noisy and fit_clean: noisy and clean "
                     "training images (several thousand, not the tuning ones) to fit it on.")
  fit_noisy, fit_clean = baselines.check_pair(fit_noisy, fit_clean, "fit_noisy", "fit_clean")
  if fit_noisy.shape[1:] != noisy.shape[1:]:
    raise ValueError(f"fit_noisy has shape {fit_noisy.shape} but noisy_tune has shape "
                     f"{noisy.shape}; both must be [N, H, W, C] with the same H, W, C.")
  equations = baselines.wiener_normal_equations(fit_noisy, fit_clean)
  best_psnr, best_params, best_fitted = -np.inf, {}, {}
  for method_params in _PARAMETER_GRIDS["wiener"]:
    fitted = baselines.wiener_fitted(equations, method_params["relative_ridge"])
    denoised = baselines.wiener_denoise(noisy, fitted)
    psnr = float(np.mean(baselines.per_image_psnr_db(clean, denoised)))
    logging.debug("wiener %s: %.2f dB", method_params, psnr)
    if psnr > best_psnr:
      best_psnr, best_params, best_fitted = psnr, dict(method_params), fitted
  return best_params, best_psnr, best_fitted
