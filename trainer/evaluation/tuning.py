"""Tuning the classical baselines: each one's parameter grid and the search over it.

`tune_baseline(name, noisy_tune, clean_tune)` searches a baseline's own
parameter grid and, for all but `noisy` and `wiener`, the levels map that undoes
the clipping bias (see `baselines`), maximising the per-image mean PSNR on
held-out TRAINING images; it returns a `baselines.TunedBaseline` that then
denoises any images, e.g. the test set, with those parameters.

Fewer evaluations for the same answer: along each baseline's noise-strength
parameter (`ORDERED_AXES`: total variation's weight, non-local means' h,
BM3D's sigma_psd) the tuning PSNR rises to one peak and falls again, so that
axis is hill-climbed rather than swept: from the grid value nearest the
tuning pair's noise RMS (the next patch setting of nl_means starts where the
previous one peaked), lower values first (BM3D's cost grows with sigma_psd),
until both neighbours of the best value are worse. On all 16 levels of the
default evaluate config it chose the very parameters of the full sweep
(`exhaustive=True`; measured 2026-12-03), with 2 to 5 of BM3D's 7 evaluations
(53 of 112 over the 16 levels, BM3D's tuning being most of the evaluation's
work), 3 to 5 of total variation's 8 (55 of 128) and 8 to 11 of non-local
means' 21 (152 of 336). The other grids are cheap (wavelet, since it is
batched, included) and are swept whole.
"""

import itertools
import time
from typing import Any, Sequence

from absl import logging
import numpy as np

from trainer.evaluation import baselines
from trainer.evaluation import wiener


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


# The parameter along which each hill-climbed grid is ordered (see the module docstring).
ORDERED_AXES = {"total_variation": "weight", "nl_means": "h", "bm3d": "sigma_psd"}


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
                  fit_clean: np.ndarray | None = None,
                  exhaustive: bool = False) -> baselines.TunedBaseline:
  """Searches `name`'s parameters and levels map for the best mean PSNR on the tuning pair.

  Args:
    name: one of baselines.BASELINE_NAMES.
    noisy_tune: [N, H, W, C] float noisy images in [0, 1]: held-out training
      images (about 100 to 200), never the test set.
    clean_tune: the same images, clean.
    fit_noisy: wiener only (ignored by the others): [M, H, W, C] noisy training
      images, other than the tuning ones, to fit the linear map on (several
      thousand; fewer than H*W*C works through the ridge, less well).
    fit_clean: wiener only: the same images, clean.
    exhaustive: evaluate every grid point, even along `ORDERED_AXES` (what the
      hill climb is checked against).

  Returns:
    The baseline with the best parameters of its grid and their tuning PSNR
    (ties go to the first in grid order, as in a full sweep).

  Raises:
    ValueError: unknown name, badly shaped images, or wiener without fit data.
  """
  baselines.check_name(name)
  noisy_tune, clean_tune = baselines.check_pair(noisy_tune, clean_tune, "noisy_tune", "clean_tune")
  start = time.monotonic()
  fitted: dict[str, np.ndarray] = {}
  evaluations = 1
  if name == "noisy":
    params: dict[str, Any] = {}
    psnr = float(np.mean(baselines.per_image_psnr_db(clean_tune, noisy_tune)))
  elif name == "wiener":
    params, psnr, fitted = _tune_wiener(noisy_tune, clean_tune, fit_noisy, fit_clean)
    evaluations = len(_PARAMETER_GRIDS["wiener"])
  else:
    params, psnr, evaluations = _tune_planar(name, noisy_tune, clean_tune, exhaustive)
  params = {key: _json_value(value) for key, value in params.items()}
  logging.debug("Tuned baseline %s on %d images in %.1f s (%d of %d grid points): %s, %.2f dB.",
                name, noisy_tune.shape[0], time.monotonic() - start, evaluations,
                len(_PARAMETER_GRIDS[name]), params, psnr)
  return baselines.TunedBaseline(name=name, params=params, tuning_psnr_db=psnr, fitted=fitted)


def _ordered_groups(name: str) -> list[list[int]]:
  """Grid indices grouped by the parameters other than ORDERED_AXES[name], each by that axis."""
  axis = ORDERED_AXES[name]
  groups: dict[tuple, list[int]] = {}
  for index, params in enumerate(_PARAMETER_GRIDS[name]):
    others = tuple(sorted((key, value) for key, value in params.items() if key != axis))
    groups.setdefault(others, []).append(index)
  return [sorted(indices, key=lambda index: _PARAMETER_GRIDS[name][index][axis])
          for indices in groups.values()]


def _climb(group: list[int], start: int, score) -> int:
  """The position in `group` of the peak of `score` (grid index -> PSNR), from position `start`.

  Lower positions first; a tie moves towards the lower grid index, so that the
  peak found is the one a full sweep picks (its first maximum).
  """
  best = start
  for step in (-1, 1):
    position, moved = best + step, False
    while 0 <= position < len(group):
      candidate, incumbent = score(group[position]), score(group[best])
      better = candidate > incumbent or (candidate == incumbent
                                         and group[position] < group[best])
      if not better:
        break
      best, position, moved = position, position + step, True
    if moved:
      break
  return best


def _tune_planar(name: str, noisy: np.ndarray, clean: np.ndarray,
                 exhaustive: bool) -> tuple[dict[str, Any], float, int]:
  """(best params with their levels map, their PSNR, grid points evaluated)."""
  grid = _PARAMETER_GRIDS[name]
  scores: dict[int, tuple[float, float, float]] = {}

  def score(index: int) -> float:
    if index not in scores:
      raw = baselines.planar_denoise(name, noisy, grid[index])
      scores[index] = _best_levels(raw, clean)
      logging.debug("%s %s: %.2f dB (levels %.2f..%.2f)", name, grid[index], *scores[index])
    return scores[index][0]

  if exhaustive or name not in ORDERED_AXES:
    for index in range(len(grid)):
      score(index)
  else:
    axis = ORDERED_AXES[name]
    noise_rms = float(np.sqrt(np.mean(np.square(noisy.astype(np.float64) - clean))))
    position = None
    for group in _ordered_groups(name):
      if position is None:
        values = [grid[index][axis] for index in group]
        position = int(np.argmin([abs(value - noise_rms) for value in values]))
      position = _climb(group, min(position, len(group) - 1), score)
  # The first maximum in grid order, as a full sweep finds it.
  best_index = max(scores, key=lambda index: (scores[index][0], -index))
  psnr, black, white = scores[best_index]
  return dict(grid[best_index], black_level=black, white_level=white), psnr, len(scores)


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
  equations = wiener.normal_equations(fit_noisy, fit_clean)
  best_psnr, best_params, best_fitted = -np.inf, {}, {}
  for method_params in _PARAMETER_GRIDS["wiener"]:
    fitted = wiener.fitted_arrays(equations, method_params["relative_ridge"])
    denoised = wiener.denoise(noisy, fitted)
    psnr = float(np.mean(baselines.per_image_psnr_db(clean, denoised)))
    logging.debug("wiener %s: %.2f dB", method_params, psnr)
    if psnr > best_psnr:
      best_psnr, best_params, best_fitted = psnr, dict(method_params), fitted
  return best_params, best_psnr, best_fitted
